package org.hearth

import org.junit.After
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.util.Collections
import kotlin.concurrent.thread
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue

/**
 * The whole public API of libhearth, through the generated Kotlin, on the JVM
 * (the same code an Android app runs; only the loading of the library differs).
 */
class HearthTest {
    @get:Rule val tmp = TemporaryFolder()

    private val dir: File by lazy { File(tmp.root, "store") }

    @After fun quietLogger() {
        // The logger is process-wide: leave a harmless one for the next test.
        setLogger(QuietLogger, LogLevel.ERROR)
    }

    private fun invalidField(block: () -> Unit): String = assertFailsWith<HearthException.InvalidInput>(block = block).field

    @Test fun recordsCatalogAndProfile() {
        openStore(dir).use { h ->
            val catalog = listOf(
                item("m1", "The Silent Harbor", "drama"),
                item("m2", "Goal Rush", "sports", "live"),
                item("m3", "Night Shift", "drama", "crime"),
            )
            h.upsertCatalog(catalog)
            assertEquals(3uL, h.catalogSize())
            assertEquals(catalog[1], h.catalogItem("m2"))
            assertNull(h.catalogItem("unknown"))

            assertEquals(RecordOutcome.Stored(1u), h.record(event("m1", EventKind.PLAY, NOW - 3_600_000)))
            val batch = listOf(
                event("m1", EventKind.COMPLETE, NOW - 3_000_000),
                event("m2", EventKind.SKIP, NOW - 2_000_000, hour = 8u, device = DeviceClass.PHONE),
                event("m3", EventKind.LIKE, NOW - 1_000_000),
            )
            assertEquals(RecordOutcome.Stored(3u), h.recordBatch(batch))
            assertEquals(RecordOutcome.Stored(0u), h.recordBatch(emptyList()))
            assertEquals(4uL, h.eventCount())

            val recent = h.recentEvents(2u)
            assertEquals(listOf(batch[2], batch[1]), recent) // newest first, every field back
            assertEquals(4, h.recentEvents(100u).size)

            val p = h.profile()
            assertEquals(4uL, p.eventCount)
            assertEquals(3uL, p.itemsSeen)
            assertEquals("drama", p.topCategories.first().category)
            assertTrue(p.topCategories.all { it.affinity > 0.0 })
            assertEquals(1.0, p.completionRate, 1e-9) // one completion per play
            assertEquals(0.5, p.skipRate, 1e-9) // one skip in a play and a skip
            assertEquals(DeviceClass.entries.toList(), p.deviceMix.map { it.device })
            assertEquals(0.75, p.deviceMix.first { it.device == DeviceClass.TV }.share, 1e-3)
            assertEquals(24, p.hourMix.size)
            assertEquals(1.0, p.hourMix.sum(), 1e-9)
            assertEquals(0.25, p.hourMix[8], 1e-3)
            assertEquals(NOW - 3_600_000, p.firstEventMs)
            assertEquals(NOW - 1_000_000, p.lastEventMs)
        }
    }

    @Test fun settingsAndEveryToggle() {
        openStore(dir).use { h ->
            assertEquals(
                PrivacySettings(
                    personalizationEnabled = true,
                    historyPaused = false,
                    federatedOptIn = false,
                    blockedCategories = emptyList(),
                    retentionDays = null,
                ),
                h.settings(),
            )
            h.setPersonalization(false)
            h.setFederatedOptIn(true)
            h.setBlockedCategories(listOf("horror", "reality"))
            h.setRetentionDays(90u)
            val changed = PrivacySettings(false, false, true, listOf("horror", "reality"), 90u)
            assertEquals(changed, h.settings())

            h.setHistoryPaused(true)
            assertTrue(h.settings().historyPaused)
            assertEquals(RecordOutcome.Paused, h.record(event("m1")))
            assertEquals(RecordOutcome.Paused, h.recordBatch(listOf(event("m1"), event("m2"))))
            assertEquals(0uL, h.eventCount())
            h.setHistoryPaused(false)
            assertEquals(RecordOutcome.Stored(1u), h.record(event("m1")))

            val replaced = PrivacySettings(true, false, false, listOf("news"), null)
            h.setSettings(replaced)
            assertEquals(replaced, h.settings())
            h.closeStore()
        }
        openStore(dir).use { h -> assertEquals(PrivacySettings(true, false, false, listOf("news"), null), h.settings()) }
    }

    @Test fun retentionDeletesOldEvents() {
        openStore(dir).use { h ->
            h.recordBatch(listOf(event("old", at = NOW - 100 * DAY_MS), event("recent", at = NOW - DAY_MS)))
            h.setRetentionDays(30u) // applies now
            assertEquals(listOf("recent"), h.recentEvents(10u).map { it.itemId })
            // record() purges at most hourly; purgeExpired() does it now.
            assertEquals(RecordOutcome.Stored(1u), h.record(event("late", at = NOW - 40 * DAY_MS)))
            assertEquals(2uL, h.eventCount())
            assertEquals(1uL, h.purgeExpired())
            assertEquals(0uL, h.purgeExpired())
            h.setRetentionDays(null)
            assertNull(h.settings().retentionDays)
        }
    }

    @Test fun exportIsDocumentedJsonAndImportsElsewhere() {
        val json = openStore(dir).use { h ->
            h.upsertCatalog(listOf(item("m2", "Goal Rush", "sports"), item("m1", "The Silent Harbor", "drama")))
            h.recordBatch(
                listOf(
                    event("m1", EventKind.PLAY, NOW - 3_000),
                    event("m1", EventKind.COMPLETE, NOW - 2_000),
                    event("m2", EventKind.SKIP, NOW - 1_000, device = DeviceClass.PHONE, hour = 7u),
                ),
            )
            h.setBlockedCategories(listOf("horror"))
            h.exportJson()
        }
        val doc = Json.parse(json)
        assertEquals("hearth.export", doc.field("format"))
        assertEquals(1L, doc.field("format_version"))
        assertTrue((doc.field("exported_at_ms") as Long) >= NOW)
        val settings = doc.obj("settings")
        assertEquals(listOf("horror"), settings.arr("blocked_categories"))
        assertEquals(false, settings.field("federated_opt_in"))
        assertNull(settings.field("retention_days"))
        val events = doc.arr("events")
        assertEquals(3, events.size)
        assertEquals(listOf(1L, 2L, 3L), events.map { it.field("id") })
        assertEquals(listOf("m1", "m1", "m2"), events.map { it.field("item_id") })
        assertEquals(listOf("play", "complete", "skip"), events.map { it.field("kind") })
        assertEquals(NOW - 3_000, events[0].field("timestamp_ms"))
        assertEquals(60_000L, events[0].field("position_ms"))
        assertEquals("phone", events[2].obj("context").field("device"))
        assertEquals(7L, events[2].obj("context").field("local_hour"))
        assertEquals("en-GB", events[2].obj("context").field("locale"))
        val catalog = doc.arr("catalog")
        assertEquals(listOf("m1", "m2"), catalog.map { it.field("id") })
        assertEquals("The Silent Harbor", catalog[0].field("title"))
        assertEquals(listOf("drama"), catalog[0].arr("categories"))
        val profile = doc.obj("profile")
        assertEquals(3L, profile.field("event_count"))
        assertEquals(2L, profile.field("items_seen"))
        assertEquals("drama", profile.arr("top_categories")[0].field("category"))

        // The user's next device: another store, another key.
        openStore(File(tmp.root, "next-device"), KEY_B).use { h ->
            assertEquals(ImportSummary(events = 3uL, catalogItems = 2uL), h.importJson(json))
            assertEquals(3uL, h.eventCount())
            assertEquals(2uL, h.catalogSize())
            assertEquals(listOf("horror"), h.settings().blockedCategories)
            assertEquals(listOf("m2", "m1", "m1"), h.recentEvents(10u).map { it.itemId })
            assertEquals("document", invalidField { h.importJson("{ not json") })
            assertEquals("format", invalidField { h.importJson(json.replace("\"hearth.export\"", "\"other\"")) })
            assertEquals(3uL, h.eventCount())
        }
    }

    @Test fun forgetItemAndDeleteAll() {
        openStore(dir).use { h ->
            h.upsertCatalog(listOf(item("m1", "A", "drama"), item("m2", "B", "sports")))
            h.recordBatch(listOf(event("m1"), event("m1", EventKind.COMPLETE), event("m2")))
            assertEquals(2uL, h.forgetItem("m1"))
            assertEquals(listOf("m2"), h.recentEvents(10u).map { it.itemId })
            assertEquals(1uL, h.profile().itemsSeen)
            assertEquals(listOf("sports"), h.profile().topCategories.map { it.category })
            assertEquals(0uL, h.forgetItem("m1"))
            assertEquals("item_id", invalidField { h.forgetItem("") })

            h.setFederatedOptIn(true)
            h.deleteAll()
            assertEquals(0uL, h.eventCount())
            assertEquals(0uL, h.catalogSize())
            assertEquals(0uL, h.profile().eventCount)
            assertFalse(h.settings().federatedOptIn)
            assertEquals(RecordOutcome.Stored(1u), h.record(event("m3"))) // a fresh store, in use
        }
    }

    @Test fun rekeyThenTheOldKeyIsWrong() {
        openStore(dir, KEY_A).use { h ->
            h.recordBatch(listOf(event("m1"), event("m2")))
            h.rekey(FixedKeys(KEY_B))
            assertEquals(2uL, h.eventCount())
            assertEquals("ok", h.integrityCheck())
            h.closeStore()
        }
        assertFailsWith<HearthException.WrongKey> { openStore(dir, KEY_A) }
        openStore(dir, KEY_B).use { h ->
            assertEquals(listOf("m2", "m1"), h.recentEvents(10u).map { it.itemId })
            assertEquals("ok", h.integrityCheck())
        }
    }

    @Test fun closeStoreThenCallsFailWithClosed() {
        val h = openStore(dir)
        h.record(event("m1"))
        h.flush() // what an app does when it goes to the background
        h.closeStore()
        assertFailsWith<HearthException.Closed> { h.eventCount() }
        assertFailsWith<HearthException.Closed> { h.flush() }
        assertFailsWith<HearthException.Closed> { h.record(event("m2")) }
        assertFailsWith<HearthException.Closed> { h.deleteAll() }
        h.close() // Kotlin's AutoCloseable: frees the native object
        openStore(dir).use { assertEquals(1uL, it.eventCount()) }
    }

    @Test fun destroyStoreAfterTheKeyIsLost() {
        openStore(dir, KEY_A).use { it.record(event("m1")) }
        assertFailsWith<HearthException.WrongKey> { openStore(dir, KEY_B) }
        destroyStore(dir.path)
        assertFalse(File(dir, "hearth.db").exists())
        openStore(dir, KEY_B).use { assertEquals(0uL, it.eventCount()) }
        assertEquals("data_dir", invalidField { destroyStore("") })
    }

    @Test fun keyProviderFailures() {
        val locked = assertFailsWith<HearthException.KeyUnavailable> {
            Hearth.open(config(dir), FailingKeys(KeyException.Unavailable("device locked")))
        }
        assertEquals("device locked", locked.reason)
        assertFailsWith<HearthException.KeyInvalidated> {
            Hearth.open(config(dir), FailingKeys(KeyException.Invalidated()))
        }
        // Any other exception from the provider is reported as unavailable.
        val broken = assertFailsWith<HearthException.KeyUnavailable> {
            Hearth.open(config(dir), FailingKeys(IllegalStateException("keystore exploded")))
        }
        assertTrue(broken.reason.startsWith("key provider failed"), broken.reason)
        assertEquals("root_key", invalidField { Hearth.open(config(dir), FixedKeys(ByteArray(16))) })

        openStore(dir).use { h ->
            h.record(event("m1"))
            assertFailsWith<HearthException.KeyUnavailable> {
                h.rekey(FailingKeys(KeyException.Unavailable("locked")))
            }
            assertEquals(1uL, h.eventCount())
        }
        openStore(dir, KEY_A).use { assertEquals(1uL, it.eventCount()) } // still under the first key
    }

    @Test fun invalidInputNamesTheFieldAndStoresNothing() {
        openStore(dir).use { h ->
            assertEquals("item_id", invalidField { h.record(event("")) })
            assertEquals("timestamp_ms", invalidField { h.record(event("m1", at = 5)) })
            assertEquals("timestamp_ms", invalidField { h.record(event("m1", at = NOW + 2 * DAY_MS)) })
            assertEquals("context.local_hour", invalidField { h.record(event("m1", hour = 24u)) })
            assertEquals("position_ms", invalidField { h.record(event("m1").copy(positionMs = 4_000_000uL)) })
            assertEquals("item_id", invalidField { h.recordBatch(listOf(event("m1"), event(""))) }) // all or none
            assertEquals("popularity", invalidField { h.upsertCatalog(listOf(item("m1", "A").copy(popularity = Double.NaN))) })
            assertEquals("title", invalidField { h.upsertCatalog(listOf(item("m1", ""))) })
            assertEquals("retention_days", invalidField { h.setRetentionDays(0u) })
            assertEquals("blocked_categories", invalidField { h.setBlockedCategories(listOf("")) })
            assertEquals(0uL, h.eventCount())
            assertEquals(0uL, h.catalogSize())
        }
        assertEquals("data_dir", invalidField { Hearth.open(HearthConfig("", Durability.FULL), FixedKeys(KEY_A)) })
        assertEquals(
            "profile_half_life_days",
            invalidField { Hearth.open(config(dir).copy(profileHalfLifeDays = 0.0), FixedKeys(KEY_A)) },
        )
    }

    @Test fun storageFullStoresNothingOfTheFailedCall() {
        Hearth.open(config(dir, maxStoreBytes = 64uL * 1024uL), FixedKeys(KEY_A)).use { h ->
            var stored = 0uL
            var full: HearthException.StorageFull? = null
            for (round in 0 until 100) {
                try {
                    h.recordBatch((0 until 50).map { event("item-$round-$it") })
                    stored += 50uL
                } catch (e: HearthException.StorageFull) {
                    full = e
                    break
                }
            }
            assertNotNull(full, "64 KiB never filled up")
            assertTrue(stored > 0uL)
            assertEquals(stored, h.eventCount())
            assertEquals(stored.toInt(), h.recentEvents(10_000u).size)
        }
    }

    @Test fun junkFileIsACorruptStore() {
        dir.mkdirs()
        File(dir, "hearth.db").writeBytes(ByteArray(8192) { 'x'.code.toByte() })
        assertFailsWith<HearthException.CorruptStore> { openStore(dir) }
        destroyStore(dir.path)
        openStore(dir).use { assertEquals(0uL, it.eventCount()) }
    }

    @Test fun newerSchemaIsStoreTooNew() {
        openStore(dir).use { it.record(event("m1")) }
        assertFalse(File(dir, "hearth.db-wal").let { it.exists() && it.length() > 0 }, "WAL not checkpointed")
        setSchemaVersion(dir, 99)
        val e = assertFailsWith<HearthException.StoreTooNew> { openStore(dir) }
        assertEquals(99u, e.found)
        assertTrue(e.supported in 1u..98u)
    }

    @Test fun tamperedRecordFailsItsIntegrityCheck() {
        openStore(dir).use { h -> h.recordBatch((1..5).map { event("m$it") }) }
        tamperFirstEvent(dir)
        openStore(dir).use { h ->
            assertEquals(5uL, h.eventCount())
            assertEquals("events", assertFailsWith<HearthException.Integrity> { h.recentEvents(10u) }.what)
            assertFailsWith<HearthException.Integrity> { h.exportJson() }
            assertEquals("ok", h.integrityCheck()) // the file itself is sound
            // The rest of the store is still usable.
            assertEquals(RecordOutcome.Stored(1u), h.record(event("m6")))
            assertEquals(listOf("m6"), h.recentEvents(1u).map { it.itemId })
        }
    }

    @Test fun unusableDirectoryIsIo() {
        val file = File(tmp.root, "a-file").apply { writeText("not a directory") }
        assertFailsWith<HearthException.Io> { openStore(File(file, "store")) }
    }

    /**
     * A store whose schema version says v1 although the v2 tables are there:
     * the upgrade cannot run, and SQLite's error surfaces as Internal (the
     * one Internal an app can provoke without a logger that throws). The
     * store is untouched: with the version put back it opens.
     */
    @Test fun inconsistentSchemaIsInternalAndChangesNothing() {
        openStore(dir).use { it.record(event("m1")) }
        val version = java.io.RandomAccessFile(File(dir, "hearth.db"), "r").use { it.seek(60); it.readInt() }
        setSchemaVersion(dir, 1)
        assertFailsWith<HearthException.Internal> { openStore(dir) }
        setSchemaVersion(dir, version)
        openStore(dir).use { assertEquals(1uL, it.eventCount()) }
    }

    @Test fun nothingPersonalOnDiskInClear() {
        val secretId = "item-7f3a9c-private"
        val title = "The Quiet Lighthouse Keeper"
        val category = "noir-mystery-kt"
        val timestamp = NOW - 4_321
        val needles = listOf(secretId, title, category, "blocked-genre-xyz", timestamp.toString())
        fun scan(when_: String) {
            val files = filesUnder(dir)
            assertTrue(files.getValue(File(dir, "hearth.db").path).isNotEmpty())
            for ((path, bytes) in files) {
                for (n in needles) assertFalse(bytes.contains(n.toByteArray()), "'$n' in clear in $path ($when_)")
            }
        }
        openStore(dir).use { h ->
            h.upsertCatalog(listOf(item(secretId, title, category)))
            h.recordBatch((0 until 20).map { event(secretId, EventKind.PROGRESS, timestamp - it) })
            h.setBlockedCategories(listOf("blocked-genre-xyz"))
            assertTrue(File(dir, "hearth.db-wal").length() > 0) // the WAL is scanned too
            scan("open")
            h.closeStore()
        }
        scan("closed")
        // And the bytes are the app's data: they come back under the key.
        openStore(dir).use { h ->
            assertEquals(title, h.catalogItem(secretId)?.title)
            assertContentEquals(List(20) { timestamp - it }, h.recentEvents(20u).map { it.timestampMs }.reversed())
        }
    }

    @Test fun loggerReceivesLinesAndCanBeSwapped() {
        val info = ListLogger()
        setLogger(info, LogLevel.INFO)
        openStore(dir).use { h ->
            h.record(event("item-logged-42"))
            h.forgetItem("item-logged-42")
        }
        assertTrue("INFO hearth_core::hearth store opened" in info.lines, info.lines.toString())
        assertTrue(info.lines.any { it.endsWith("deleted 1 events") }, info.lines.toString())
        assertTrue(info.lines.none { it.startsWith("DEBUG") || it.startsWith("TRACE") })
        assertTrue(info.lines.none { "item-logged-42" in it }, "an item id in a log line")

        val debug = ListLogger()
        setLogger(debug, LogLevel.DEBUG)
        val before = info.lines.size
        openStore(dir).use { }
        assertTrue(debug.lines.any { it.startsWith("DEBUG") }, debug.lines.toString())
        assertEquals(before, info.lines.size) // the old logger is out
    }

    @Test fun aLoggerMayReplaceItselfFromInsideLog() {
        val next = ListLogger()
        setLogger(SelfReplacingLogger(next), LogLevel.INFO)
        openStore(dir).use { h ->
            h.record(event("m1"))
            assertEquals(1uL, h.forgetItem("m1"))
        }
        assertTrue(next.lines.any { it.endsWith("deleted 1 events") }, next.lines.toString())
    }

    /** No panic crosses the boundary: a logger that throws makes Rust panic, which comes back as Internal. */
    @Test fun aThrowingLoggerIsInternalAndHearthKeepsWorking() {
        val logger = ThrowingOnceLogger()
        setLogger(logger, LogLevel.INFO)
        // Opening a new store logs at info: the logger throws there.
        assertFailsWith<HearthException.Internal> { openStore(dir) }
        assertTrue(logger.calls >= 1)
        openStore(dir).use { h ->
            h.recordBatch(listOf(event("m1"), event("m2")))
            // Inside a call on an open store: forgetItem logs once it has deleted.
            logger.armed = true
            assertFailsWith<HearthException.Internal> { h.forgetItem("m1") }
            // The same object goes on (the store is reopened from disk).
            assertEquals(listOf("m2"), h.recentEvents(10u).map { it.itemId })
            assertEquals(RecordOutcome.Stored(1u), h.record(event("m3")))
            assertEquals("ok", h.integrityCheck())
        }
    }

    @Test fun callsFromManyThreads() {
        val errors = Collections.synchronizedList(mutableListOf<Throwable>())
        openStore(dir).use { h ->
            val workers = (0 until 4).map { t ->
                thread {
                    try {
                        repeat(25) { h.record(event("t$t-$it")) }
                        h.profile()
                    } catch (e: Throwable) {
                        errors.add(e)
                    }
                }
            }
            workers.forEach { it.join() }
            assertEquals(emptyList(), errors)
            assertEquals(100uL, h.eventCount())
        }
    }
}

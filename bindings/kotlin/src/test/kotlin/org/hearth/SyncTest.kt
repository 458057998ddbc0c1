package org.hearth

import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.io.IOException
import java.util.TreeMap
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue

/**
 * The person's own backend, in memory, as an app implements SyncTransport
 * over its HTTP stack. [failWith] makes every call throw (or only the calls
 * named in [failOnly]), as a backend that is down or an OkHttp call that
 * throws does.
 */
class MemoryBackend : SyncTransport {
    val blobs: MutableMap<String, ByteArray> = TreeMap()
    @Volatile var failWith: Exception? = null
    @Volatile var failOnly: Set<String>? = null

    private fun call(op: String) {
        val failure = failWith ?: return
        if (failOnly?.contains(op) != false) throw failure
    }

    @Synchronized override fun put(name: String, blob: ByteArray) {
        call("put")
        blobs[name] = blob.copyOf()
    }

    @Synchronized override fun list(): List<SyncBlob> {
        call("list")
        return blobs.map { (name, blob) -> SyncBlob(name = name, size = blob.size.toULong()) }
    }

    @Synchronized override fun get(name: String): ByteArray? {
        call("get")
        return blobs[name]?.copyOf()
    }

    @Synchronized override fun delete(name: String) {
        call("delete")
        blobs.remove(name)
    }
}

/**
 * Sync through the generated Kotlin: pairing (createSyncGroup, inviteDevice,
 * joinDevice, inviteAnswer, joinReveal, inviteConfirm, joinFinish), sync over
 * an app's SyncTransport (each SyncTransportException), syncStatus,
 * syncDevices, removeSyncDevice, deleteEverywhere and leaveSyncGroup; and
 * the backend's bytes read as the backend's owner would.
 */
class SyncTest {
    @get:Rule val tmp = TemporaryFolder()

    private val catalog = (0 until 12).map { item("private-item-$it", "Private Title $it", "horror-films") }

    private fun device(name: String, key: ByteArray): Hearth =
        openStore(File(tmp.root, name), key).also { it.upsertCatalog(catalog) }

    /** Pairs [joiner] into [inviter]'s group, the person confirming the digits on both screens. */
    private fun pair(inviter: Hearth, joiner: Hearth): SyncGroupInfo {
        val answer = joiner.joinDevice(inviter.inviteDevice())
        val reply = inviter.inviteAnswer(answer)
        val onJoiner = joiner.joinReveal(reply.message)
        assertEquals(reply.digits, onJoiner, "both screens show the same digits")
        assertTrue(Regex("[0-9]{6}").matches(onJoiner), onJoiner)
        val welcome = assertNotNull(inviter.inviteConfirm(true))
        return joiner.joinFinish(welcome, true)
    }

    private fun syncOk(h: Hearth, backend: SyncTransport): SyncReport {
        val report = h.sync(backend, SyncOptions())
        assertTrue(report.complete && report.refused.isEmpty() && report.transportError == null, "$report")
        return report
    }

    private fun items(h: Hearth): Set<String> = h.recentEvents(1000u).map { it.itemId }.toSet()

    @Test fun aPairedTvTakesThePhonesHistorySettingsAndForgets() {
        val phone = device("phone", KEY_A)
        val tv = device("tv", KEY_B)
        assertNull(phone.syncGroup())
        assertEquals(SyncStatus(group = null, keyEpoch = 0u, devices = 0u, recordsWaiting = 0u, lastSyncMs = null, lastSyncComplete = false), phone.syncStatus())
        val group = phone.createSyncGroup()
        assertEquals(group, phone.syncGroup())
        val joined = pair(phone, tv)
        assertEquals(group.groupId, joined.groupId)
        assertTrue(joined.deviceId != group.deviceId)

        phone.recordBatch((0 until 8).map { event("private-item-$it", EventKind.COMPLETE, at = NOW - 3_600_000 + it) })
        phone.setBlockedCategories(listOf("horror-films"))
        val backend = MemoryBackend()
        val sent = syncOk(phone, backend)
        assertEquals(8uL, sent.eventsSent)
        assertTrue(sent.recordsSent >= 1u)
        val received = syncOk(tv, backend)
        assertEquals(8uL, received.eventsReceived)
        assertEquals(8uL, tv.eventCount())
        assertEquals(listOf("horror-films"), tv.settings().blockedCategories)

        // Forgetting on the TV forgets on the phone too.
        assertEquals(1uL, tv.forgetItem("private-item-0"))
        syncOk(tv, backend)
        assertEquals(1uL, syncOk(phone, backend).eventsRemoved)
        assertFalse("private-item-0" in items(phone))
        assertEquals(items(phone), items(tv))

        val status = tv.syncStatus()
        assertEquals(joined, status.group)
        assertEquals(2u, status.devices)
        assertEquals(1u, status.keyEpoch)
        assertEquals(0u, status.recordsWaiting)
        assertTrue(status.lastSyncComplete && status.lastSyncMs != null)
        val devices = tv.syncDevices()
        assertEquals(setOf(group.deviceId, joined.deviceId), devices.map { it.deviceId }.toSet())
        assertEquals(listOf(joined.deviceId), devices.filter { it.thisDevice }.map { it.deviceId })
        assertTrue(devices.none { it.removed })

        // What the backend's owner holds: names that say nothing, sizes
        // from the padding buckets only, and none of the history's or
        // the settings' words.
        val sizes = listOf(1, 4, 16, 64, 256).map { 17 + it * 1024 + 16 }
        val name = Regex("[0-9a-f]{16}-[0-9]{10}")
        assertTrue(backend.blobs.isNotEmpty())
        for ((n, blob) in backend.blobs) {
            assertTrue(name.matches(n), n)
            assertTrue(blob.size in sizes, "$n: ${blob.size} bytes")
            for (word in listOf("private-item", "Private Title", "horror-films", "COMPLETE", "blocked")) {
                assertFalse(blob.contains(word.toByteArray()), "$n holds \"$word\"")
            }
            assertFalse(blob.contains(phone.syncGroup()!!.groupId.toByteArray()), "$n names the group")
        }
        phone.close()
        tv.close()
    }

    @Test fun aBackendThatFailsStopsTheSyncAndNothingIsLost() {
        val phone = device("phone", KEY_A)
        val tv = device("tv", KEY_B)
        phone.createSyncGroup()
        pair(phone, tv)
        val backend = MemoryBackend()
        syncOk(phone, backend)
        phone.recordBatch((0 until 5).map { event("private-item-$it", at = NOW - 600_000 + it) })
        val failures = listOf(
            SyncTransportException.Unavailable("no network"),
            SyncTransportException.Refused("quota exceeded"),
            IOException("connection reset"),
        )
        for (failure in failures) {
            backend.failWith = failure
            val report = phone.sync(backend, SyncOptions(timeBudgetMs = 5_000uL))
            assertFalse(report.complete)
            val got = assertNotNull(report.transportError)
            when (failure) {
                // The app's own error, as it threw it.
                is SyncTransportException -> assertEquals(failure.message, got.message)
                // Anything else the app's stack throws: unavailable, named.
                else -> assertTrue(got is SyncTransportException.Unavailable && "connection reset" in got.reason, "$got")
            }
        }
        assertEquals(0u, phone.syncStatus().recordsWaiting, "nothing is written before the backend answered")
        // A backend that lists but takes nothing: the records written wait,
        // sealed in the store, and go out once the backend is back.
        backend.failOnly = setOf("put")
        assertFalse(phone.sync(backend, SyncOptions()).complete)
        assertTrue(phone.syncStatus().recordsWaiting >= 1u)
        assertFalse(phone.syncStatus().lastSyncComplete)
        backend.failWith = null
        backend.failOnly = null
        assertEquals(5uL, syncOk(phone, backend).eventsSent)
        assertEquals(0u, phone.syncStatus().recordsWaiting)
        assertEquals(5uL, syncOk(tv, backend).eventsReceived)

        // Deleting everywhere on a backend that is down deletes nothing.
        backend.failWith = SyncTransportException.Unavailable("no network")
        assertFailsWith<HearthException.Io> { tv.deleteEverywhere(backend) }
        assertEquals(5uL, tv.eventCount())
        phone.close()
        tv.close()
    }

    @Test fun aTamperedRecordIsRefusedAndChangesNothing() {
        val phone = device("phone", KEY_A)
        val tv = device("tv", KEY_B)
        phone.createSyncGroup()
        pair(phone, tv)
        val backend = MemoryBackend()
        phone.record(event("private-item-3"))
        syncOk(phone, backend)
        val (name, blob) = backend.blobs.entries.first()
        blob[blob.size - 20] = (blob[blob.size - 20].toInt() xor 1).toByte()
        val report = tv.sync(backend, SyncOptions())
        assertEquals(listOf(name), report.refused.map { it.name })
        assertEquals(RefusalKind.DOES_NOT_OPEN, report.refused[0].kind)
        assertEquals(0uL, tv.eventCount())
        // A store of another person, paired with no one, cannot use them.
        val stranger = device("stranger", KEY_B)
        assertFailsWith<HearthException.InvalidInput> { stranger.sync(backend, SyncOptions()) }
        stranger.createSyncGroup()
        assertTrue(stranger.sync(backend, SyncOptions()).refused.all { it.kind == RefusalKind.DOES_NOT_OPEN })
        assertEquals(0uL, stranger.eventCount())
        listOf(phone, tv, stranger).forEach { it.close() }
    }

    @Test fun removingADeviceShutsItOutAndDeleteEverywhereReachesEveryDevice() {
        val phone = device("phone", KEY_A)
        val tv = device("tv", KEY_B)
        val tablet = device("tablet", KEY_B)
        phone.createSyncGroup()
        pair(phone, tv)
        val lost = pair(phone, tablet)
        val backend = MemoryBackend()
        phone.record(event("private-item-1"))
        for (d in listOf(phone, tv, tablet, phone)) syncOk(d, backend)
        assertEquals(1uL, tablet.eventCount())
        assertEquals(3, phone.syncDevices().size)
        assertFailsWith<HearthException.InvalidInput> { phone.removeSyncDevice(backend, "0000000000000000") }
        val removal = phone.removeSyncDevice(backend, lost.deviceId)
        assertTrue(removal.complete, "$removal")
        assertEquals(2u, phone.syncStatus().keyEpoch)
        assertTrue(phone.syncDevices().single { it.deviceId == lost.deviceId }.removed)
        // The tablet learns it was removed and leaves; what is written
        // afterwards reaches the TV only.
        assertTrue(tablet.sync(backend, SyncOptions()).removedFromGroup)
        assertNull(tablet.syncGroup())
        phone.record(event("private-item-7"))
        syncOk(phone, backend)
        assertEquals(1uL, syncOk(tv, backend).eventsReceived)
        assertEquals(2uL, tv.eventCount())
        assertEquals(1uL, tablet.eventCount())

        // Deleting everywhere from the TV: the phone deletes on its next sync.
        tv.deleteEverywhere(backend)
        assertEquals(0uL, tv.eventCount())
        assertNull(tv.syncGroup())
        assertTrue(phone.sync(backend, SyncOptions()).wiped)
        assertEquals(0uL, phone.eventCount())
        assertNull(phone.syncGroup())
        assertTrue(backend.blobs.keys.none { Regex("[0-9a-f]{16}-[0-9]{10}").matches(it) }, "${backend.blobs.keys}")
        listOf(phone, tv, tablet).forEach { it.close() }
    }

    @Test fun pairingEndsWithoutThePersonsConfirmationAndLeavingForgetsTheGroup() {
        val phone = device("phone", KEY_A)
        val tv = device("tv", KEY_B)
        assertFailsWith<HearthException.InvalidInput> { phone.inviteDevice() }
        phone.createSyncGroup()
        assertFailsWith<HearthException.InvalidInput> { phone.createSyncGroup() }
        // The digits differ on the two screens: no welcome.
        val reply = phone.inviteAnswer(tv.joinDevice(phone.inviteDevice()))
        tv.joinReveal(reply.message)
        assertNull(phone.inviteConfirm(false))
        assertFailsWith<HearthException.InvalidInput> { tv.joinFinish(ByteArray(40), true) }
        assertNull(tv.syncGroup())
        // Garbage where an invitation should be.
        assertFailsWith<HearthException.InvalidInput> { tv.joinDevice("not an invitation".toByteArray()) }
        pair(phone, tv)
        assertFailsWith<HearthException.InvalidInput> { tv.joinDevice(phone.inviteDevice()) }
        assertTrue(tv.leaveSyncGroup())
        assertFalse(tv.leaveSyncGroup())
        assertNull(tv.syncGroup())
        phone.close()
        tv.close()
    }
}

// The Android demo's flow as a JVM console program: the same Hearth calls the
// Compose app makes (home row with reasons, privacy screen, export, forget,
// delete), printed instead of drawn. tests/bindings/run.sh (suite
// kotlin-console) compiles it with kotlinc -Werror against the generated
// bindings and runs it against libhearth.so; any failed check exits non-zero.
package org.hearth.console

import org.hearth.CatalogItem
import org.hearth.DeviceClass
import org.hearth.DeviceConditions
import org.hearth.Diversity
import org.hearth.Durability
import org.hearth.Eligibility
import org.hearth.Event
import org.hearth.EventContext
import org.hearth.EventKind
import org.hearth.FallbackReason
import org.hearth.Hearth
import org.hearth.HearthConfig
import org.hearth.IneligibleReason
import org.hearth.KeyProvider
import org.hearth.RankContext
import org.hearth.RankOptions
import org.hearth.RankResult
import org.hearth.Ranker
import org.hearth.RecordOutcome
import java.io.File
import java.nio.file.Files
import java.time.Year
import java.time.ZoneOffset
import kotlin.system.exitProcess

/**
 * The root key. On Android the app gets it from the Android Keystore: it keeps
 * a Keystore-bound AES key (setUserAuthenticationRequired as the app needs)
 * that wraps 32 random bytes stored in the app's no-backup files, and unwraps
 * them here; KeyPermanentlyInvalidatedException becomes KeyException.Invalidated,
 * a locked device KeyException.Unavailable. Here: a fixed key.
 */
class DemoKeys : KeyProvider {
    override fun rootKey(): ByteArray = ByteArray(32) { (0x40 + it).toByte() }
}

class CheckFailed(message: String) : Exception(message)

fun verify(condition: Boolean, what: () -> String) {
    if (!condition) throw CheckFailed(what())
}

val THIS_YEAR: UShort = Year.now(ZoneOffset.UTC).value.toUShort()

fun media(id: String, title: String, language: String, year: UShort, popularity: Double, vararg categories: String) =
    CatalogItem(
        id = id,
        title = title,
        categories = categories.toList(),
        language = language,
        durationMs = 5_400_000uL,
        releaseYear = year,
        popularity = popularity,
        contentRating = "PG",
    )

/** What the app's backend would send down: twenty items, eight categories, three languages. */
val CATALOG = listOf(
    media("d1", "Harbor Lights", "en", 2019u, 40.0, "drama"),
    media("d2", "Quiet Rooms", "en", 2021u, 30.0, "drama"),
    media("d3", "Long Winter", "fr", 2018u, 20.0, "drama"),
    media("d4", "The Glass Orchard", "en", THIS_YEAR, 31.0, "drama"),
    media("d5", "Mar de Fondo", "es", 2016u, 21.0, "drama"),
    media("m1", "Night Shift", "en", 2020u, 33.0, "drama", "crime"),
    media("m2", "Cold Case Files", "en", 2022u, 26.0, "crime"),
    media("c1", "Laugh Track", "en", 2019u, 35.0, "comedy"),
    media("c2", "Office Hours", "fr", 2017u, 25.0, "comedy"),
    media("c3", "Second Helpings", "en", THIS_YEAR, 12.0, "comedy"),
    media("s1", "Goal Rush", "en", 2023u, 50.0, "sports"),
    media("s2", "Final Lap", "en", 2021u, 15.0, "sports"),
    media("n1", "Evening Brief", "en", 2024u, 10.0, "news"),
    media("n2", "Le Journal", "fr", 2024u, 12.0, "news"),
    media("h1", "Night Terror", "en", 2019u, 60.0, "horror"),
    media("h2", "The Cellar", "en", 2016u, 45.0, "horror", "crime"),
    media("k1", "Tiny Dragons", "en", 2020u, 22.0, "kids"),
    media("k2", "Paper Boats", "fr", 2015u, 18.0, "kids"),
    media("o1", "Deep Blue", "en", 2018u, 28.0, "documentary"),
    media("o2", "Stone Age", "fr", 2014u, 16.0, "documentary"),
)
val BY_ID = CATALOG.associateBy { it.id }

/** The TV in the living room, 9 pm, British English. */
val TV_EVENING = EventContext(device = DeviceClass.TV, localHour = 21u, locale = "en-GB")
val HOME = RankOptions(
    context = RankContext(device = DeviceClass.TV, localHour = 21u, locale = "en-GB"),
    diversity = Diversity.Mmr(lambda = 0.7),
    limit = 8u,
    explorationShare = 0.125, // one slot of eight
    seed = 7uL, // fixed, so the printed row is the same on every run
)

fun event(itemId: String, kind: EventKind, minutesAgo: Long, now: Long) = Event(
    itemId = itemId,
    kind = kind,
    timestampMs = now - minutesAgo * 60_000,
    positionMs = if (kind == EventKind.COMPLETE) 5_400_000uL else 600_000uL,
    durationMs = 5_400_000uL,
    context = TV_EVENING,
)

fun title(id: String): String = BY_ID[id]?.title ?: id

fun rankerLabel(r: RankResult): String = when (val ranker = r.ranker) {
    is Ranker.Model -> "model v${ranker.version} (${ranker.digest.take(12)}), personalized=${r.personalized}"
    is Ranker.Fallback -> "fallback (${ranker.why.name.lowercase()}), personalized=${r.personalized}"
}

fun printRow(heading: String, r: RankResult) {
    println(heading)
    r.items.forEachIndexed { i, item -> println("${i + 1}. ${title(item.itemId)}  \u2014 ${item.reasonText}") }
    println("ranker: ${rankerLabel(r)}; filtered out: ${r.filtered}")
}

fun onOff(b: Boolean) = if (b) "on" else "off"

/** What the privacy screen says about the next federated round. */
fun describe(e: Eligibility): String = when (e) {
    is Eligibility.Eligible -> "can take part when the app schedules it"
    is Eligibility.NotEligible -> e.reasons.joinToString("; ") { r ->
        when (r) {
            is IneligibleReason.NotOptedIn -> "you have not opted in"
            is IneligibleReason.NotCharging -> "waits for the charger"
            is IneligibleReason.MeteredNetwork -> "waits for Wi-Fi"
            is IneligibleReason.NotIdle -> "waits until the device is idle"
            is IneligibleReason.TooFewNewExamples -> "waits for more viewing (${r.have} of ${r.need})"
            is IneligibleReason.TooSoon -> "took part recently"
            is IneligibleReason.BudgetSpent -> "privacy budget spent"
        }
    }
}

fun printPrivacy(h: Hearth) {
    val s = h.settings()
    println("Privacy screen")
    println("  personalization:   ${onOff(s.personalizationEnabled)}")
    println("  history paused:    ${onOff(s.historyPaused)}")
    println("  federated opt-in:  ${onOff(s.federatedOptIn)}")
    println("  blocked categories: ${s.blockedCategories.joinToString().ifEmpty { "none" }}")
    println("  events held:       ${h.eventCount()}")
    val ledger = h.privacyLedger()
    println(
        "  federated uploads: ${ledger.entries.size}, epsilon spent %.2f of %.2f (delta %.0e)"
            .format(ledger.epsilonSpent, ledger.epsilonBudget, ledger.delta),
    )
    // On Android the conditions come from the WorkManager constraints that started the worker.
    val onTheSofa = DeviceConditions(charging = false, unmeteredNetwork = true, idle = false)
    val next = h.federatedEligibility(onTheSofa)
    println("  next round:        ${describe(next)}")
    verify(next is Eligibility.NotEligible && IneligibleReason.NotCharging in next.reasons) { "eligible while not charging" }
    verify(ledger.entries.isEmpty() && ledger.epsilonSpent == 0.0) { "an upload nobody made is in the ledger" }
}

fun run(dir: File) {
    val now = System.currentTimeMillis()
    // On Android: HearthConfig(dataDir = File(context.noBackupFilesDir, "hearth").path, ...),
    // and every call below from Dispatchers.IO, never the main thread.
    Hearth.open(HearthConfig(dataDir = dir.path, durability = Durability.NORMAL), DemoKeys()).use { h ->
        val model = h.modelInfo()
        println("Hearth console twin (Kotlin/JVM) \u2014 store in ${dir.path}")
        println("model: ${model?.let { "${it.name} v${it.version}${if (it.builtin) ", built in" else ""}" } ?: "none"}")
        verify(model != null) { "no model package verified" }

        h.upsertCatalog(CATALOG)
        verify(h.catalogSize() == CATALOG.size.toULong()) { "catalog holds ${h.catalogSize()} items" }
        val history = listOf(
            event("d1", EventKind.PLAY, 3 * 24 * 60, now),
            event("d1", EventKind.COMPLETE, 3 * 24 * 60 - 90, now),
            event("m1", EventKind.PLAY, 2 * 24 * 60, now),
            event("c1", EventKind.PLAY, 26 * 60, now),
            event("c1", EventKind.LIKE, 25 * 60, now),
            event("o1", EventKind.PLAY, 5 * 60, now),
            event("o1", EventKind.COMPLETE, 4 * 60, now),
            event("s1", EventKind.PLAY, 90, now),
            event("s2", EventKind.DISLIKE, 30, now),
        )
        for (e in history) {
            val outcome = h.record(e)
            verify(outcome is RecordOutcome.Stored) { "record returned $outcome" }
        }
        verify(h.eventCount() == history.size.toULong()) { "${h.eventCount()} events held, ${history.size} recorded" }
        println("catalog: ${h.catalogSize()} items; history: ${h.eventCount()} events (plays, completes, a like, a dislike)")
        println()

        // ---- the home row
        val home = h.rankCatalog(HOME)
        printRow("Home row \u2014 for you", home)
        val ids = home.items.map { it.itemId }
        verify(home.ranker is Ranker.Model && home.personalized) { "home row not personalized: ${home.ranker}" }
        verify(home.items.size == 8) { "home row has ${home.items.size} items" }
        verify(ids.distinct() == ids) { "an item twice in $ids" }
        verify(home.items.all { it.reasonText.isNotBlank() }) { "an item without a reason" }
        verify(home.items.count { it.explored } == 1) { "${home.items.count { it.explored }} exploration slots" }
        verify(!home.items.first().explored) { "the first slot is an exploration slot" }
        verify("s2" !in ids) { "the disliked item is in the row" }
        verify("d1" !in ids && "o1" !in ids) { "a completed item is in the row" }
        verify(h.rankCatalog(HOME) == home) { "same seed, another row" }
        println()

        // ---- the privacy screen
        printPrivacy(h)
        val defaults = h.settings()
        verify(defaults.personalizationEnabled && !defaults.historyPaused && !defaults.federatedOptIn) {
            "unexpected defaults: $defaults"
        }
        verify(defaults.blockedCategories.isEmpty()) { "categories blocked by default" }
        println()

        // ---- personalization off: the labelled fallback
        h.setPersonalization(false)
        verify(!h.settings().personalizationEnabled) { "personalization still on" }
        val fallback = h.rankCatalog(HOME)
        printRow("Home row \u2014 NOT PERSONALIZED (personalization is off: popular items)", fallback)
        verify(fallback.ranker == Ranker.Fallback(FallbackReason.PERSONALIZATION_OFF)) { "ranker ${fallback.ranker}" }
        verify(!fallback.personalized) { "fallback row says personalized" }
        verify(fallback.items.isNotEmpty() && fallback.items.all { it.reasonText.isNotBlank() }) { "empty fallback row" }
        verify(fallback.items.none { it.itemId == "s2" }) { "the disliked item is in the fallback row" }
        h.setPersonalization(true)
        verify(h.settings().personalizationEnabled) { "personalization still off" }
        println()

        // ---- block a category of the top item
        val blocked = BY_ID.getValue(ids.first()).categories.first()
        verify(home.items.any { blocked in BY_ID.getValue(it.itemId).categories }) { "nothing to block" }
        h.setBlockedCategories(listOf(blocked))
        verify(h.settings().blockedCategories == listOf(blocked)) { "blocked: ${h.settings().blockedCategories}" }
        val without = h.rankCatalog(HOME)
        val gone = home.items.map { it.itemId }.filter { blocked in BY_ID.getValue(it).categories }
        printRow("Home row \u2014 with \"$blocked\" blocked (gone: ${gone.joinToString { title(it) }})", without)
        verify(without.ranker is Ranker.Model) { "ranker ${without.ranker}" }
        verify(without.items.isNotEmpty()) { "empty row after blocking" }
        verify(without.items.none { blocked in BY_ID.getValue(it.itemId).categories }) { "a $blocked item is still ranked" }
        println()
        printPrivacy(h)
        println()

        // ---- export, forget one item, delete all
        val json = h.exportJson()
        val exportedEvents = Regex("\"kind\"\\s*:").findAll(json).count()
        println("export: ${json.toByteArray(Charsets.UTF_8).size} bytes of JSON, $exportedEvents events")
        verify(json.contains("\"hearth.export\"")) { "not an export document" }
        verify(exportedEvents.toULong() == h.eventCount()) { "export has $exportedEvents events, store ${h.eventCount()}" }

        val before = h.eventCount()
        val forgotten = h.forgetItem("d1")
        println("forget \"${title("d1")}\": $forgotten events deleted, $before -> ${h.eventCount()}")
        verify(forgotten == 2uL) { "forgot $forgotten events" }
        verify(h.eventCount() == before - forgotten) { "${h.eventCount()} events after forgetting" }
        verify(h.recentEvents(100u).none { it.itemId == "d1" }) { "an event of the forgotten item is left" }

        val beforeDelete = h.eventCount()
        h.deleteAll()
        println("delete all: events $beforeDelete -> ${h.eventCount()}, catalog ${h.catalogSize()} items")
        verify(h.eventCount() == 0uL) { "${h.eventCount()} events after delete all" }
        verify(h.catalogSize() == 0uL) { "${h.catalogSize()} catalog items after delete all" }
        verify(h.settings().blockedCategories.isEmpty()) { "settings survived delete all" }
        verify(h.integrityCheck() == "ok") { "integrity check after delete all" }
    }
}

fun main() {
    val dir = Files.createTempDirectory("hearth-console").toFile()
    val status = try {
        run(File(dir, "store"))
        println("kotlin console: all checks passed")
        0
    } catch (e: CheckFailed) {
        System.out.flush() // what was printed so far comes before the failure
        System.err.println("kotlin console: check failed: ${e.message}")
        1
    } catch (e: Exception) {
        System.out.flush()
        System.err.println("kotlin console: ${e::class.qualifiedName}: ${e.message}")
        1
    } finally {
        dir.deleteRecursively()
    }
    exitProcess(status)
}

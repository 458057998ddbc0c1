// The Android demo's flow as a JVM console program: the same Hearth calls the
// Compose app makes (home row with reasons, privacy screen, export, forget,
// delete, a federated round over the app's HttpURLConnection transport, and
// the person's phone and TV pairing and syncing through the app's backend),
// printed instead of drawn. It drives the app's own plain-Kotlin files
// (android-demo/app/src/main/kotlin/org/hearth/demo/model: DemoModel,
// DEMO_CATALOG; .../net: HttpFleetTransport), which tests/bindings/run.sh
// (suite kotlin-console) compiles with this file, with kotlinc -Werror,
// against the generated bindings, and runs against libhearth.so; any failed
// check exits non-zero.
package org.hearth.console

import com.sun.net.httpserver.HttpExchange
import com.sun.net.httpserver.HttpServer
import org.hearth.Aggregation
import org.hearth.NoiseMode
import org.hearth.RoundTask
import org.hearth.DeviceClass
import org.hearth.DeviceConditions
import org.hearth.Durability
import org.hearth.Eligibility
import org.hearth.Event
import org.hearth.EventContext
import org.hearth.EventKind
import org.hearth.FallbackReason
import org.hearth.FederatedFailure
import org.hearth.FleetTransport
import org.hearth.HearthConfig
import org.hearth.HearthException
import org.hearth.HttpHeader
import org.hearth.IneligibleReason
import org.hearth.KeyProvider
import org.hearth.LedgerEntry
import org.hearth.OutcomeLogged
import org.hearth.ParticipationOutcome
import org.hearth.Ranker
import org.hearth.RecordOutcome
import org.hearth.TransportFailure
import org.hearth.UploadStatus
import org.hearth.demo.model.DEMO_CATALOG
import org.hearth.demo.model.DemoModel
import org.hearth.demo.model.HomeRow
import org.hearth.demo.model.PrivacyState
import org.hearth.demo.net.HttpFleetTransport
import org.hearth.demo.net.HttpSyncTransport
import java.io.File
import java.net.InetAddress
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.nio.file.Files
import java.util.Collections
import java.util.concurrent.Executors
import kotlin.system.exitProcess

/**
 * The root key. On Android the app gets it from the Android Keystore
 * (android-demo/app: KeystoreKeys, 32 random bytes wrapped by a non-exportable
 * AES-GCM Keystore key); KeyPermanentlyInvalidatedException becomes
 * KeyException.Invalidated. Here: a fixed key.
 */
class DemoKeys(private val first: Int = 0x40) : KeyProvider {
    override fun rootKey(): ByteArray = ByteArray(32) { (first + it).toByte() }
}

class CheckFailed(message: String) : Exception(message)

fun verify(condition: Boolean, what: () -> String) {
    if (!condition) throw CheckFailed(what())
}

/** The TV in the living room, 9 pm, British English. */
val TV_EVENING = EventContext(device = DeviceClass.TV, localHour = 21u, locale = "en-GB")
val HOME = DemoModel.homeOptions(DeviceClass.TV, localHour = 21u, locale = "en-GB", limit = 8u, seed = 7uL)

/** What the worker reports when WorkManager starts it: charging, on Wi-Fi, idle. */
val READY = DeviceConditions(charging = true, unmeteredNetwork = true, idle = true)

/** On Android the conditions come from the WorkManager constraints that started the worker. */
val ON_THE_SOFA = DeviceConditions(charging = false, unmeteredNetwork = true, idle = false)

fun event(itemId: String, kind: EventKind, minutesAgo: Long, now: Long) = Event(
    itemId = itemId,
    kind = kind,
    timestampMs = now - minutesAgo * 60_000,
    positionMs = if (kind == EventKind.COMPLETE) 5_400_000uL else 600_000uL,
    durationMs = 5_400_000uL,
    context = TV_EVENING,
)

fun printRow(heading: String, row: HomeRow) {
    println(heading)
    row.tiles.forEachIndexed { i, t -> println("${i + 1}. ${t.title}  \u2014 ${t.reason}") }
    println("ranker: ${row.rankerLabel}; filtered out: ${row.filtered}")
}

fun onOff(b: Boolean) = if (b) "on" else "off"

fun printPrivacy(p: PrivacyState) {
    val s = p.settings
    println("Privacy screen")
    println("  personalization:   ${onOff(s.personalizationEnabled)}")
    println("  history paused:    ${onOff(s.historyPaused)}")
    println("  federated opt-in:  ${onOff(s.federatedOptIn)}")
    println("  blocked categories: ${s.blockedCategories.joinToString().ifEmpty { "none" }}")
    println("  events held:       ${p.eventsHeld}")
    println(
        "  federated uploads: ${p.ledger.entries.size}, epsilon spent %.2f of %.2f (delta %.0e)"
            .format(p.ledger.epsilonSpent, p.ledger.epsilonBudget, p.ledger.delta),
    )
    println("  next round:        ${p.nextRoundText}")
    for (x in p.experiments) {
        println("  experiment ${x.experimentId}: arm \"${x.arm}\", ${x.exposures} rows and ${x.outcomes} plays logged here, nothing sent")
    }
}

fun checkPrivacyOnTheSofa(p: PrivacyState) {
    val next = p.nextRound
    verify(next is Eligibility.NotEligible && IneligibleReason.NotCharging in next.reasons) { "eligible while not charging" }
    verify(p.ledger.entries.isEmpty() && p.ledger.epsilonSpent == 0.0) { "an upload nobody made is in the ledger" }
}

/**
 * A stand-in coordinator on 127.0.0.1 for the HttpURLConnection transport:
 * /echo returns the body, /status answers 503, /big 4 KiB, /slow answers
 * after 1.5 s; /v1/fleet/... (Hearth's Fleet API calls) answers 403, as a
 * SuperLink refusing an unknown node would.
 */
class LocalServer : AutoCloseable {
    private val server = HttpServer.create(InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0)
    private val pool = Executors.newCachedThreadPool()
    val fleetRequests: MutableList<Pair<String, Map<String, String>>> = Collections.synchronizedList(mutableListOf())
    val url: String get() = "http://127.0.0.1:${server.address.port}"

    init {
        fun reply(x: HttpExchange, code: Int, body: ByteArray) {
            x.sendResponseHeaders(code, if (body.isEmpty()) -1 else body.size.toLong())
            if (body.isNotEmpty()) x.responseBody.use { it.write(body) }
            x.close()
        }
        server.createContext("/echo") { x ->
            val body = x.requestBody.use { it.readBytes() }
            val ok = x.requestMethod == "POST" &&
                x.requestHeaders.getFirst("content-type") == "application/protobuf" &&
                x.requestHeaders.getFirst("x-demo") == "1"
            reply(x, if (ok) 200 else 400, body)
        }
        server.createContext("/status") { x -> reply(x, 503, "busy".toByteArray()) }
        server.createContext("/big") { x -> reply(x, 200, ByteArray(4096)) }
        server.createContext("/slow") { x ->
            Thread.sleep(1500)
            reply(x, 200, ByteArray(1))
        }
        server.createContext("/v1/fleet/") { x ->
            x.requestBody.use { it.readBytes() }
            fleetRequests.add(x.requestURI.path to x.requestHeaders.mapValues { it.value.joinToString() }.mapKeys { it.key.lowercase() })
            reply(x, 403, ByteArray(0))
        }
        server.executor = pool
        server.start()
    }

    override fun close() {
        server.stop(0)
        pool.shutdownNow()
    }
}

/** Hearth's calls through [inner], with the headers Hearth asked for. */
class Recording(private val inner: FleetTransport) : FleetTransport {
    val headerNames: MutableSet<String> = Collections.synchronizedSet(mutableSetOf())
    override fun post(path: String, headers: List<HttpHeader>, body: ByteArray, timeoutMs: ULong): ByteArray {
        headers.forEach { headerNames.add(it.name.lowercase()) }
        return inner.post(path, headers, body, timeoutMs)
    }
}

inline fun <reified T : Throwable> failure(block: () -> Unit): T? =
    try {
        block()
        null
    } catch (e: Throwable) {
        e as? T ?: throw e
    }

fun checkTransport(server: LocalServer) {
    val transport = HttpFleetTransport(server.url, maxReplyBytes = 1024, allowCleartext = true)
    val body = byteArrayOf(8, 1, 18, 3, 0x61, 0x62, 0x63)
    val echoed = transport.post("/echo", listOf(HttpHeader("x-demo", "1")), body, 5_000uL)
    val status = failure<TransportFailure.Status> { transport.post("/status", emptyList(), body, 5_000uL) }
    val tooLarge = failure<TransportFailure.TooLarge> { transport.post("/big", emptyList(), body, 5_000uL) }
    val timeout = failure<TransportFailure.Timeout> { transport.post("/slow", emptyList(), body, 300uL) }
    val closedPort = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { it.localPort }
    val io = failure<TransportFailure.Io> {
        HttpFleetTransport("http://127.0.0.1:$closedPort", allowCleartext = true).post("/echo", emptyList(), body, 5_000uL)
    }
    val cleartext = failure<IllegalArgumentException> { HttpFleetTransport(server.url) }
    println(
        "transport (HttpURLConnection, local server): echo ${if (echoed.contentEquals(body)) "ok" else "WRONG"}, " +
            "503 -> Status(${status?.code}), 4 KiB reply -> ${if (tooLarge != null) "TooLarge" else "accepted"}, " +
            "slow reply -> ${if (timeout != null) "Timeout" else "waited"}, closed port -> ${if (io != null) "Io" else "connected"}, " +
            "http:// -> ${if (cleartext != null) "refused" else "accepted"}",
    )
    verify(echoed.contentEquals(body)) { "the echo came back different" }
    verify(status?.code == 503.toUShort()) { "503 was not Status(503)" }
    verify(tooLarge != null) { "a 4 KiB reply passed a 1 KiB bound" }
    verify(timeout != null) { "a reply after 1.5 s passed a 300 ms timeout" }
    verify(io != null) { "a closed port was not an Io failure" }
    verify(cleartext != null) { "an http:// coordinator was accepted without allowCleartext" }
}

fun run(dir: File) {
    val now = System.currentTimeMillis()
    // On Android: HearthConfig(dataDir = File(context.noBackupFilesDir, "hearth").path, ...),
    // and every call below from Dispatchers.IO, never the main thread.
    val config = HearthConfig(dataDir = dir.path, durability = Durability.NORMAL)
    val opened = DemoModel.openOrReset(config, DemoKeys())
    verify(!opened.wasReset) { "a new store was reset" }
    opened.hearth.use { h ->
        val m = DemoModel(h)
        val model = h.modelInfo()
        println("Hearth console twin (Kotlin/JVM) \u2014 store in ${dir.path}")
        println("model: ${model?.let { "${it.name} v${it.version}${if (it.builtin) ", built in" else ""}" } ?: "none"}")
        verify(model != null) { "no model package verified" }

        verify(m.seedCatalogIfEmpty()) { "the new store's catalog was not empty" }
        verify(!m.seedCatalogIfEmpty()) { "the catalog was seeded twice" }
        verify(h.catalogSize() == DEMO_CATALOG.size.toULong()) { "catalog holds ${h.catalogSize()} items" }
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
        val row = m.homeRow(home)
        printRow("Home row \u2014 ${row.notPersonalizedLabel ?: "for you"}", row)
        val ids = home.items.map { it.itemId }
        verify(home.ranker is Ranker.Model && home.personalized && row.notPersonalizedLabel == null) {
            "home row not personalized: ${home.ranker}"
        }
        verify(home.items.size == 8) { "home row has ${home.items.size} items" }
        verify(ids.distinct() == ids) { "an item twice in $ids" }
        verify(home.items.all { it.reasonText.isNotBlank() }) { "an item without a reason" }
        verify(home.items.count { it.explored } == 1) { "${home.items.count { it.explored }} exploration slots" }
        verify(!home.items.first().explored) { "the first slot is an exploration slot" }
        verify("s2" !in ids) { "the disliked item is in the row" }
        verify("d1" !in ids && "o1" !in ids) { "a completed item is in the row" }
        verify(m.home(HOME) == row) { "same seed, another row" }
        println()

        // ---- the privacy screen
        val privacy = m.privacy(ON_THE_SOFA)
        printPrivacy(privacy)
        checkPrivacyOnTheSofa(privacy)
        val defaults = privacy.settings
        verify(defaults.personalizationEnabled && !defaults.historyPaused && !defaults.federatedOptIn) {
            "unexpected defaults: $defaults"
        }
        verify(defaults.blockedCategories.isEmpty()) { "categories blocked by default" }
        verify(privacy.categories.size == 8) { "${privacy.categories.size} categories to block" }
        verify(privacy.watched.map { it.itemId }.toSet() == history.map { it.itemId }.toSet()) { "watched: ${privacy.watched}" }
        verify(privacy.experiments.isEmpty()) { "an experiment nobody defined: ${privacy.experiments}" }

        // ---- an experiment: the arm is drawn on the device and the row follows it
        val arm = m.joinExperiment()
        val inArm = m.homeRow(h.rankCatalog(HOME.copy(experiment = DemoModel.HOME_ROW_EXPERIMENT.id)))
        printRow("Home row in the experiment's \"$arm\" arm \u2014 ${inArm.notPersonalizedLabel ?: "for you"}", inArm)
        verify(inArm.experimentArm == arm) { "row in arm ${inArm.experimentArm}, device in $arm" }
        verify(inArm.personalized == (arm == "model")) { "arm $arm, personalized=${inArm.personalized}" }
        verify(m.played(DemoModel.HOME_ROW_EXPERIMENT.id, inArm.tiles.first().itemId) == OutcomeLogged.Logged(0u)) {
            "the first tile's play not logged at position 0"
        }
        val status = m.privacy(ON_THE_SOFA).experiments.single()
        verify(status.arm == arm && status.exposures == 1uL && status.outcomes == 1uL) { "experiment status $status" }
        verify(m.joinExperiment() == arm) { "the arm changed" }
        println()
        // Each upload's row says what protected it on its way.
        val modes = listOf(
            Aggregation.SECURE to NoiseMode.DISTRIBUTED,
            Aggregation.SECURE to NoiseMode.CENTRAL,
            Aggregation.PLAIN to NoiseMode.CENTRAL,
        )
        for ((aggregation, noiseMode) in modes) {
            val distributed = noiseMode == NoiseMode.DISTRIBUTED
            val entry = LedgerEntry(
                runId = 1uL, round = 2uL, atMs = 0L, status = UploadStatus.SENT, bytesSent = 370_000uL,
                normBeforeClip = 2.0, normAfterClip = 1.0, clipNorm = 1.0, noiseMultiplier = 1.0,
                samplingRate = if (distributed) 1.0 else 0.01, epsilonTotal = 0.5, segmentReportEpsilon = 0.0,
                aggregation = aggregation, noiseMode = noiseMode, noiseShare = if (distributed) 0.122 else 0.0,
                cohort = if (distributed) 100u else 0u, honestFraction = if (distributed) 2.0 / 3.0 else 0.0,
                scale = if (distributed) 4828.0 else 0.0, dimension = if (distributed) 144_935uL else 0uL,
                nodeKey = "3f2a9c0b51d7e864", task = RoundTask.TRAINING,
            )
            val row = DemoModel.uploadText(entry, "today")
            println("  ledger row:        $row")
            val says = if (aggregation == Aggregation.SECURE) "only the round's sum" else "saw this update"
            verify(says in row) { "the ledger row does not say how the upload was protected: $row" }
            val noise = if (distributed) "added on this device" else "added by the coordinator"
            verify(noise in row) { "the ledger row does not say where the noise was added: $row" }
            verify("coin" !in row) { "a round without a coin mentions one: $row" }
        }
        // A round whose coin left the update out says so.
        val coined = LedgerEntry(
            runId = 1uL, round = 3uL, atMs = 0L, status = UploadStatus.SENT, bytesSent = 370_000uL,
            normBeforeClip = 2.0, normAfterClip = 1.0, clipNorm = 1.0, noiseMultiplier = 1.0, samplingRate = 0.7,
            epsilonTotal = 0.4, segmentReportEpsilon = 0.0, aggregation = Aggregation.SECURE,
            noiseMode = NoiseMode.DISTRIBUTED, included = false, noiseShare = 0.122, cohort = 100u,
            honestFraction = 2.0 / 3.0, scale = 4828.0, dimension = 144_935uL, nodeKey = "3f2a9c0b51d7e864",
            task = RoundTask.TRAINING,
        )
        val coinRow = DemoModel.uploadText(coined, "today")
        println("  ledger row:        $coinRow")
        verify("coin (p 0.70) left the update out" in coinRow) { "the ledger row does not show the coin: $coinRow" }
        // A model-evaluation round (the release gate) is listed as one.
        val evaluated = DemoModel.uploadText(coined.copy(task = RoundTask.EVALUATION, dimension = 6uL), "today")
        println("  ledger row:        $evaluated")
        verify(evaluated.startsWith("Evaluation of a candidate model, round 3")) { "not an evaluation: $evaluated" }
        println()

        // ---- personalization off: the labelled fallback
        m.setPersonalization(false)
        verify(!h.settings().personalizationEnabled) { "personalization still on" }
        val fallback = m.home(HOME)
        printRow("Home row \u2014 ${fallback.notPersonalizedLabel}", fallback)
        verify(fallback.notPersonalizedLabel == "NOT PERSONALIZED (personalization is off: popular items)") {
            "label ${fallback.notPersonalizedLabel}"
        }
        verify(h.rankCatalog(HOME).ranker == Ranker.Fallback(FallbackReason.PERSONALIZATION_OFF)) { "ranker ${fallback.rankerLabel}" }
        verify(!fallback.personalized) { "fallback row says personalized" }
        verify(fallback.tiles.isNotEmpty() && fallback.tiles.all { it.reason.isNotBlank() }) { "empty fallback row" }
        verify(fallback.tiles.none { it.itemId == "s2" }) { "the disliked item is in the fallback row" }
        m.setPersonalization(true)
        verify(h.settings().personalizationEnabled) { "personalization still off" }
        println()

        // ---- block a category of the top item
        val blocked = m.categoriesOf(ids.first()).first()
        verify(home.items.any { blocked in m.categoriesOf(it.itemId) }) { "nothing to block" }
        m.setBlocked(blocked, true)
        m.setBlocked(blocked, true)
        verify(h.settings().blockedCategories == listOf(blocked)) { "blocked: ${h.settings().blockedCategories}" }
        val without = m.home(HOME)
        val gone = ids.filter { blocked in m.categoriesOf(it) }
        printRow("Home row \u2014 with \"$blocked\" blocked (gone: ${gone.joinToString { m.title(it) }})", without)
        verify(without.personalized) { "ranker ${without.rankerLabel}" }
        verify(without.tiles.isNotEmpty()) { "empty row after blocking" }
        verify(without.tiles.none { blocked in m.categoriesOf(it.itemId) }) { "a $blocked item is still ranked" }
        println()
        val privacyBlocked = m.privacy(ON_THE_SOFA)
        printPrivacy(privacyBlocked)
        checkPrivacyOnTheSofa(privacyBlocked)
        println()

        // ---- history paused: a tap on a tile stores nothing
        m.setHistoryPaused(true)
        val paused = m.watch("d2", TV_EVENING, now)
        m.setHistoryPaused(false)
        verify(paused is RecordOutcome.Paused) { "recorded while paused: $paused" }
        verify(h.eventCount() == history.size.toULong()) { "an event was stored while history was paused" }

        // ---- export, forget one item, delete all
        val json = m.exportJson()
        // Every event has a timestamp_ms (the experiment log's records have at_ms).
        val exportedEvents = Regex("\"timestamp_ms\"\\s*:").findAll(json).count()
        println("export: ${json.toByteArray(Charsets.UTF_8).size} bytes of JSON, $exportedEvents events")
        verify(json.contains("\"hearth.export\"")) { "not an export document" }
        verify(exportedEvents.toULong() == h.eventCount()) { "export has $exportedEvents events, store ${h.eventCount()}" }

        val before = h.eventCount()
        val forgotten = m.forget("d1")
        println("forget \"${m.title("d1")}\": $forgotten events deleted, $before -> ${h.eventCount()}")
        verify(forgotten == 2uL) { "forgot $forgotten events" }
        verify(h.eventCount() == before - forgotten) { "${h.eventCount()} events after forgetting" }
        verify(h.recentEvents(100u).none { it.itemId == "d1" }) { "an event of the forgotten item is left" }
        verify(m.privacy(ON_THE_SOFA).watched.none { it.itemId == "d1" }) { "the forgotten item is still listed" }

        val beforeDelete = h.eventCount()
        m.deleteAll()
        println("delete all: events $beforeDelete -> ${h.eventCount()}, catalog ${h.catalogSize()} items")
        verify(h.eventCount() == 0uL) { "${h.eventCount()} events after delete all" }
        verify(h.catalogSize() == 0uL) { "${h.catalogSize()} catalog items after delete all" }
        verify(h.settings().blockedCategories.isEmpty()) { "settings survived delete all" }
        verify(h.integrityCheck() == "ok") { "integrity check after delete all" }
        println()

        // ---- the federated worker's call, over the app's HttpURLConnection transport
        LocalServer().use { server ->
            checkTransport(server)
            verify(m.seedCatalogIfEmpty()) { "the catalog was not seeded again after delete all" }
            val transport = Recording(HttpFleetTransport(server.url, allowCleartext = true))
            val notOptedIn = m.participate(transport, READY)
            println("participate, not opted in: ${DemoModel.describe(notOptedIn)}")
            verify(notOptedIn == ParticipationOutcome.NotEligible(listOf(IneligibleReason.NotOptedIn, IneligibleReason.TooFewNewExamples(0u, 10u)))) {
                "outcome $notOptedIn"
            }
            verify(server.fleetRequests.isEmpty()) { "the coordinator was contacted without consent" }

            m.setFederatedOptIn(true)
            val plays = DEMO_CATALOG.take(12).mapIndexed { i, item -> event(item.id, EventKind.PLAY, 60L - i, now) }
            verify(h.recordBatch(plays) == RecordOutcome.Stored(plays.size.toUInt())) { "recordBatch did not store ${plays.size}" }
            val ready = m.privacy(READY)
            println("opted in, ${ready.eventsHeld} plays, charging on Wi-Fi: next round ${ready.nextRoundText}")
            verify(ready.nextRound == Eligibility.Eligible) { "not eligible: ${ready.nextRoundText}" }

            val refused = failure<HearthException.Federated> { m.participate(transport, READY) }
            val paths = server.fleetRequests.map { it.first }.distinct()
            val headersArrived = server.fleetRequests.all { (_, got) -> transport.headerNames.all { it in got } }
            val ledger = m.privacy(READY).ledger
            println(
                "participate via HttpURLConnection, coordinator answers 403: ${refused?.kind ?: "no error"} " +
                    "after ${server.fleetRequests.size} request(s) to ${paths.joinToString()}; uploads in the ledger: ${ledger.entries.size}",
            )
            verify(refused?.kind == FederatedFailure.REJECTED) { "outcome ${refused?.message}" }
            verify(paths.isNotEmpty() && paths.all { it.startsWith("/v1/fleet/") }) { "requests to $paths" }
            verify(server.fleetRequests.all { it.second["content-type"] == "application/protobuf" }) { "a request without content-type" }
            verify(transport.headerNames.isNotEmpty() && headersArrived) { "Hearth's headers ${transport.headerNames} did not all arrive" }
            verify(ledger.entries.isEmpty() && ledger.epsilonSpent == 0.0) { "an upload is in the ledger after a refusal" }
        }
    }

    // ---- the key is lost (Keystore invalidated it): the store is reset, not left unopenable
    val reopened = DemoModel.openOrReset(config, DemoKeys(first = 0x10))
    reopened.hearth.use { h ->
        println("opened with another key: ${if (reopened.wasReset) "old store destroyed, new one opened" else "opened"}; events ${h.eventCount()}")
        verify(reopened.wasReset) { "a store opened with the wrong key" }
        verify(h.eventCount() == 0uL && h.catalogSize() == 0uL) { "the reset store is not empty" }
    }
}

/**
 * A stand-in for the app's backend on 127.0.0.1: one blob store for the
 * signed-in person (whose session token it checks), as HttpSyncTransport
 * expects it. It keeps what it is sent, so the console reads it as the
 * backend's owner would.
 */
class LocalBackend(private val token: String) : AutoCloseable {
    private val server = HttpServer.create(InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0)
    private val pool = Executors.newCachedThreadPool()
    val blobs: MutableMap<String, ByteArray> = Collections.synchronizedMap(sortedMapOf())
    val url: String get() = "http://127.0.0.1:${server.address.port}/sync"

    init {
        server.createContext("/sync") { x ->
            val name = x.requestURI.path.removePrefix("/sync").trimStart('/')
            val body = x.requestBody.use { it.readBytes() }
            val empty = ByteArray(0)
            val (code, reply) = when {
                x.requestHeaders.getFirst("authorization") != "Bearer $token" -> 401 to empty
                name.isEmpty() && x.requestMethod == "GET" ->
                    200 to synchronized(blobs) { blobs.entries.joinToString("") { "${it.key} ${it.value.size}\n" } }.toByteArray()
                name.isEmpty() || "/" in name -> 400 to empty
                x.requestMethod == "PUT" -> 200 to empty.also { blobs[name] = body }
                x.requestMethod == "GET" -> blobs[name]?.let { 200 to it } ?: (404 to empty)
                x.requestMethod == "DELETE" -> 200 to empty.also { blobs.remove(name) }
                else -> 405 to empty
            }
            x.sendResponseHeaders(code, if (reply.isEmpty()) -1 else reply.size.toLong())
            if (reply.isNotEmpty()) x.responseBody.use { it.write(reply) }
            x.close()
        }
        server.executor = pool
        server.start()
    }

    override fun close() {
        server.stop(0)
        pool.shutdownNow()
    }
}

/** The phone on the commute, 8 am. */
val PHONE_MORNING = EventContext(device = DeviceClass.PHONE, localHour = 8u, locale = "en-GB")

/**
 * Your screens: the person's phone and TV, two stores, pair (the phone shows
 * a QR code, both show six digits) and sync through the app's backend; the
 * TV's home row then comes from what was watched on the phone. What the
 * backend holds is read as its owner would.
 */
fun runScreens(root: File, now: Long) {
    val token = "session-of-the-signed-in-person"
    fun open(name: String, key: Int) =
        DemoModel.openOrReset(HearthConfig(dataDir = File(root, name).path, durability = Durability.NORMAL), DemoKeys(key)).hearth
    LocalBackend(token).use { backend ->
        val transport = HttpSyncTransport(backend.url, token, allowCleartext = true)
        open("phone", 0x20).use { phoneStore ->
            open("tv", 0x60).use { tvStore ->
                val phone = DemoModel(phoneStore)
                val tv = DemoModel(tvStore)
                phone.seedCatalogIfEmpty()
                tv.seedCatalogIfEmpty()
                val watched = listOf("d1" to EventKind.COMPLETE, "m1" to EventKind.PLAY, "m2" to EventKind.COMPLETE, "h2" to EventKind.PLAY)
                val history = watched.mapIndexed { i, (id, kind) ->
                    event(id, kind, 2 * 24 * 60 - 60L * i, now).copy(context = PHONE_MORNING)
                }
                verify(phoneStore.recordBatch(history) == RecordOutcome.Stored(history.size.toUInt())) { "the phone's history was not stored" }
                println("Your screens: a phone with ${history.size} events (${watched.joinToString { phone.title(it.first) }}), a new TV with none")
                val before = tv.home(HOME)
                printRow("TV home row before pairing \u2014 no history on the TV yet", before)
                verify(before.tiles.none { it.reason.startsWith("Because you watched") }) { "a TV with no history explains a tile by it" }
                verify(tv.screens().group == null) { "the TV is in a group before pairing" }

                // Pairing: the phone shows a QR code, the TV scans it; both show six digits.
                val group = phone.startGroupIfNone()
                val qr = DemoModel.qrText(phone.invite())
                val answer = tv.answerInvitation(DemoModel.fromQrText(qr) ?: error("not a QR text"))
                val reply = phone.invitationAnswered(answer)
                val onTv = tv.digitsFor(reply.message)
                println("pairing: the phone shows a QR code (${qr.length} characters); phone shows ${reply.digits}, TV shows $onTv")
                verify(reply.digits == onTv && onTv.length == 6) { "the screens show ${reply.digits} and $onTv" }
                val welcome = phone.confirmInvitation(digitsMatch = true) ?: error("no welcome")
                val joined = tv.finishJoining(welcome, digitsMatch = true)
                verify(joined.groupId == group.groupId) { "the TV joined another group" }

                val sent = phone.syncNow(transport)
                println("phone sync: ${DemoModel.describe(sent)}")
                val got = tv.syncNow(transport)
                println("TV sync: ${DemoModel.describe(got)}")
                verify(sent.complete && sent.eventsSent == history.size.toULong()) { "phone sync $sent" }
                verify(got.complete && got.eventsReceived == history.size.toULong()) { "TV sync $got" }
                val after = tv.home(HOME)
                printRow("TV home row after sync \u2014 for you, from what was watched on the phone", after)
                verify(after.personalized && after != before) { "the TV's row did not change with the phone's history" }
                verify(after.tiles.any { t -> watched.any { t.reason == "Because you watched ${tv.title(it.first)}" } }) {
                    "no tile on the TV is explained by what was watched on the phone"
                }
                verify(after.tiles.none { it.itemId == "d1" || it.itemId == "m2" }) { "an item completed on the phone is on the TV's row" }
                verify(after == phone.home(HOME)) { "the TV ranks the same history differently from the phone" }

                // The backend's owner: names that say nothing, sizes from the padding
                // buckets, no item id, field name, locale or setting in any blob.
                val held = synchronized(backend.blobs) { backend.blobs.toMap() }
                val sizes = listOf(1, 4, 16, 64, 256).map { 17 + it * 1024 + 16 }
                val words = watched.map { "\"${it.first}\"" } + listOf("item_id", "timestamp_ms", "en-GB", "blocked")
                println(
                    "the backend holds ${held.size} blobs, ${held.values.sumOf { it.size }} bytes " +
                        "(sizes ${held.values.map { it.size }.distinct().sorted()}), names like ${held.keys.first()}",
                )
                verify(held.keys.all { Regex("[0-9a-f]{16}-[0-9]{10}").matches(it) }) { "blob names ${held.keys}" }
                verify(held.values.all { it.size in sizes }) { "a blob of a size outside the padding buckets" }
                for ((name, blob) in held) {
                    for (w in words) verify(!blob.containsBytes(w.toByteArray())) { "blob $name holds $w" }
                }

                // Forgetting on the TV forgets on the phone.
                val forgotten = tv.forget("m1")
                tv.syncNow(transport)
                val back = phone.syncNow(transport)
                println("forget \"${tv.title("m1")}\" on the TV: $forgotten event(s) there; phone sync: ${DemoModel.describe(back)}")
                verify(back.eventsRemoved == 1uL) { "the phone did not forget: $back" }
                verify(phoneStore.recentEvents(100u).none { it.itemId == "m1" }) { "the phone still holds the forgotten item" }

                val screens = tv.screens()
                println("your screens (on the TV): ${screens.statusText}; ${screens.devices.joinToString { (if (it.thisDevice) "this TV " else "phone ") + it.deviceId }}")
                verify(screens.devices.size == 2 && screens.devices.count { it.thisDevice } == 1) { "screens ${screens.devices}" }
                verify(screens.statusText == "2 screens; last sync complete") { screens.statusText }
            }
        }
    }
}

fun ByteArray.containsBytes(needle: ByteArray): Boolean =
    needle.isNotEmpty() && (0..size - needle.size).any { i -> needle.indices.all { this[i + it] == needle[it] } }

fun main() {
    val dir = Files.createTempDirectory("hearth-console").toFile()
    val status = try {
        run(File(dir, "store"))
        println()
        runScreens(dir, System.currentTimeMillis())
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

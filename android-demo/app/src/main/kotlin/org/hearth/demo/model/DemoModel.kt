// The demo's state holder: every Hearth call the screens make, in plain Kotlin
// (no android.* imports), so the console twin compiles and runs this same file
// on the JVM (tests/bindings/run.sh, suite kotlin-console). Every method
// blocks on the disk: the app calls them from Dispatchers.IO
// (DemoViewModel), never the main thread.
package org.hearth.demo.model

import org.hearth.Aggregation
import org.hearth.ArmTreatment
import org.hearth.NoiseMode
import org.hearth.RoundTask
import org.hearth.CatalogItem
import org.hearth.DeclineReason
import org.hearth.DeviceClass
import org.hearth.DeviceConditions
import org.hearth.Diversity
import org.hearth.Eligibility
import org.hearth.Event
import org.hearth.EventContext
import org.hearth.EventKind
import org.hearth.Experiment
import org.hearth.ExperimentArm
import org.hearth.ExperimentStatus
import org.hearth.FallbackReason
import org.hearth.FleetTransport
import org.hearth.Hearth
import org.hearth.HearthConfig
import org.hearth.HearthException
import org.hearth.IneligibleReason
import org.hearth.KeyProvider
import org.hearth.LedgerEntry
import org.hearth.OutcomeKind
import org.hearth.OutcomeLogged
import org.hearth.ParticipationOutcome
import org.hearth.PrivacyLedger
import org.hearth.PrivacySettings
import org.hearth.RankContext
import org.hearth.RankOptions
import org.hearth.RankResult
import org.hearth.Ranker
import org.hearth.RecordOutcome
import org.hearth.InviteReply
import org.hearth.SyncDevice
import org.hearth.SyncGroupInfo
import org.hearth.SyncOptions
import org.hearth.SyncReport
import org.hearth.SyncStatus
import org.hearth.SyncTransport
import org.hearth.SyncTransportException
import org.hearth.destroyStore

/** One tile of the home row: the title and the reason shown under it. */
data class Tile(val itemId: String, val title: String, val reason: String, val explored: Boolean)

/** The home row as the screen draws it. */
data class HomeRow(
    val tiles: List<Tile>,
    val personalized: Boolean,
    /** Null for a personalized row; otherwise what the row is, e.g. "NOT PERSONALIZED (...)". */
    val notPersonalizedLabel: String?,
    val rankerLabel: String,
    /** How many catalog items the filters took out (blocked, disliked, completed). */
    val filtered: UInt,
    /** The experiment arm this device is in, when the row was ranked for an experiment. */
    val experimentArm: String? = null,
)

/** An item the store holds history for, with a "forget" button on the privacy screen. */
data class Watched(val itemId: String, val title: String)

/** Everything the privacy screen shows. */
data class PrivacyState(
    val settings: PrivacySettings,
    val eventsHeld: ULong,
    val ledger: PrivacyLedger,
    val nextRound: Eligibility,
    /** Why the next federated round would or would not start, in words. */
    val nextRoundText: String,
    /** Every category of the catalog, for the "blocked categories" chips. */
    val categories: List<String>,
    val watched: List<Watched>,
    /** The experiments on this device: the arm drawn here and what is logged (nothing of it is sent). */
    val experiments: List<ExperimentStatus> = emptyList(),
)

/** The "Your screens" screen: the person's sync group on this device, its screens, the last sync. */
data class ScreensState(
    /** Null when this device syncs with no other. */
    val group: SyncGroupInfo?,
    val devices: List<SyncDevice>,
    val statusText: String,
)

/** A store opened by [DemoModel.openOrReset]; [wasReset] when the old one had to go. */
class Opened(val hearth: Hearth, val wasReset: Boolean)

class DemoModel(private val hearth: Hearth, val catalog: List<CatalogItem> = DEMO_CATALOG) {
    private val byId = catalog.associateBy { it.id }

    fun title(itemId: String): String = byId[itemId]?.title ?: itemId

    fun categoriesOf(itemId: String): List<String> = byId[itemId]?.categories.orEmpty()

    /** Puts the catalog into the store's cache when it is empty (first run, after delete all); true if it did. */
    fun seedCatalogIfEmpty(): Boolean {
        if (hearth.catalogSize() > 0uL) return false
        hearth.upsertCatalog(catalog)
        return true
    }

    /** The home row, ranked on the device. */
    fun home(options: RankOptions): HomeRow = homeRow(hearth.rankCatalog(options))

    fun homeRow(result: RankResult): HomeRow = HomeRow(
        tiles = result.items.map { Tile(it.itemId, title(it.itemId), it.reasonText, it.explored) },
        personalized = result.personalized,
        notPersonalizedLabel = notPersonalizedLabel(result),
        rankerLabel = rankerLabel(result),
        filtered = result.filtered,
        experimentArm = result.experimentArm,
    )

    /** The user started [itemId]; returns Paused (nothing stored) while history is paused. */
    fun watch(itemId: String, context: EventContext, nowMs: Long, kind: EventKind = EventKind.PLAY): RecordOutcome =
        hearth.record(Event(itemId = itemId, kind = kind, timestampMs = nowMs, context = context))

    /** [conditions]: the device's state now, for "why the next round would not start". */
    fun privacy(conditions: DeviceConditions): PrivacyState {
        val next = hearth.federatedEligibility(conditions)
        return PrivacyState(
            settings = hearth.settings(),
            eventsHeld = hearth.eventCount(),
            ledger = hearth.privacyLedger(),
            nextRound = next,
            nextRoundText = describe(next),
            categories = catalog.flatMap { it.categories }.distinct().sorted(),
            watched = hearth.recentEvents(200u).map { it.itemId }.distinct().map { Watched(it, title(it)) },
            experiments = hearth.experiments().map { hearth.experimentStatus(it.id) },
        )
    }

    /** Defines (or keeps) an experiment on this device; returns the arm drawn here. */
    fun joinExperiment(experiment: Experiment = HOME_ROW_EXPERIMENT): String = hearth.defineExperiment(experiment)

    /** The user played an item an experiment's row showed. */
    fun played(experimentId: String, itemId: String): OutcomeLogged =
        hearth.logOutcome(experimentId, itemId, OutcomeKind.PLAY)

    fun setPersonalization(enabled: Boolean) = hearth.setPersonalization(enabled)

    fun setHistoryPaused(paused: Boolean) = hearth.setHistoryPaused(paused)

    fun setFederatedOptIn(optIn: Boolean) = hearth.setFederatedOptIn(optIn)

    fun setBlockedCategories(categories: List<String>) = hearth.setBlockedCategories(categories)

    /** Blocks or unblocks one category, keeping the others. */
    fun setBlocked(category: String, blocked: Boolean) {
        val now = hearth.settings().blockedCategories
        hearth.setBlockedCategories(if (blocked) (now + category).distinct() else now - category)
    }

    /** Everything held about the user, as JSON (docs/export-format.md). */
    fun exportJson(): String = hearth.exportJson()

    /** Deletes the item's events; returns how many went. */
    fun forget(itemId: String): ULong = hearth.forgetItem(itemId)

    /** Deletes everything; the catalog cache goes too (seed it again for the home row). */
    fun deleteAll() = hearth.deleteAll()

    /**
     * One federated round over [transport]. Blocks for minutes at most; only
     * from a background worker. Throws HearthException.Federated when the
     * coordinator cannot be reached or refuses the device.
     */
    fun participate(transport: FleetTransport, conditions: DeviceConditions): ParticipationOutcome =
        hearth.participateVia(transport, conditions)

    /** Stops a round in progress (it then throws HearthException.Federated, kind CANCELLED). */
    fun cancelParticipation() = hearth.cancelParticipation()

    // ---- Your screens: the person's phone, tablet and TV share their history
    // through the app's backend, which holds only sealed blobs.

    /** The "Your screens" screen. */
    fun screens(): ScreensState {
        val status = hearth.syncStatus()
        val devices = if (status.group == null) emptyList() else hearth.syncDevices()
        return ScreensState(status.group, devices, describe(status))
    }

    /** "Add a screen" on a device in no group yet starts the person's group first. */
    fun startGroupIfNone(): SyncGroupInfo = hearth.syncGroup() ?: hearth.createSyncGroup()

    /** On the screen in the group: the invitation, shown as a QR code ([qrText]). */
    fun invite(): ByteArray = hearth.inviteDevice()

    /** On the new screen, which scanned the invitation: the answer, relayed back. */
    fun answerInvitation(invitation: ByteArray): ByteArray = hearth.joinDevice(invitation)

    /** On the inviting screen: the reveal to relay, and the six digits to show. */
    fun invitationAnswered(answer: ByteArray): InviteReply = hearth.inviteAnswer(answer)

    /** On the new screen: the six digits to show. */
    fun digitsFor(reveal: ByteArray): String = hearth.joinReveal(reveal)

    /** On the inviting screen, once the person compared the digits: the welcome to relay, or null. */
    fun confirmInvitation(digitsMatch: Boolean): ByteArray? = hearth.inviteConfirm(digitsMatch)

    /** On the new screen, once the person compared the digits: it joins the group. */
    fun finishJoining(welcome: ByteArray, digitsMatch: Boolean): SyncGroupInfo = hearth.joinFinish(welcome, digitsMatch)

    /** One sync over the app's backend (a worker's job: it blocks on the network). */
    fun syncNow(transport: SyncTransport): SyncReport = hearth.sync(transport, SyncOptions())

    /** "Remove this screen" for another device of the group (a TV left behind). */
    fun removeScreen(transport: SyncTransport, deviceId: String): SyncReport = hearth.removeSyncDevice(transport, deviceId)

    /** "Delete everything on every screen"; [deleteAll] deletes only here. */
    fun deleteEverywhere(transport: SyncTransport) = hearth.deleteEverywhere(transport)

    companion object {
        /**
         * Opens the store; when the key no longer opens it (the platform
         * invalidated or lost it: WrongKey, KeyInvalidated), the history is
         * unreadable for good, so the store is destroyed and a new one opened.
         * KeyUnavailable (device locked) is thrown: try again later.
         */
        fun openOrReset(config: HearthConfig, keys: KeyProvider): Opened =
            try {
                Opened(Hearth.open(config, keys), wasReset = false)
            } catch (e: HearthException) {
                if (e !is HearthException.WrongKey && e !is HearthException.KeyInvalidated) throw e
                destroyStore(config.dataDir)
                Opened(Hearth.open(config, keys), wasReset = true)
            }

        /** The home row's options: 20 items (or [limit]), MMR diversity, one slot in eight explores. */
        fun homeOptions(
            device: DeviceClass,
            localHour: UByte,
            locale: String?,
            limit: UInt = 20u,
            seed: ULong? = null,
            experiment: String? = null,
        ) = RankOptions(
            context = RankContext(device = device, localHour = localHour, locale = locale),
            diversity = Diversity.Mmr(lambda = 0.7),
            limit = limit,
            explorationShare = 0.125,
            seed = seed,
            experiment = experiment,
        )

        /** The demo's experiment: the home row by the model, or by popularity. */
        val HOME_ROW_EXPERIMENT = Experiment(
            id = "home-row.v1",
            arms = listOf(
                ExperimentArm(name = "model", share = 1.0, treatment = ArmTreatment.Model),
                ExperimentArm(name = "popular", share = 1.0, treatment = ArmTreatment.Fallback),
            ),
        )

        fun rankerLabel(r: RankResult): String = when (val ranker = r.ranker) {
            is Ranker.Model -> "model v${ranker.version} (${ranker.digest.take(12)}), personalized=${r.personalized}"
            is Ranker.Fallback -> "fallback (${ranker.why.name.lowercase()}), personalized=${r.personalized}"
        }

        /** What a non-personalized row says above it. */
        fun notPersonalizedLabel(r: RankResult): String? {
            if (r.personalized) return null
            val why = when ((r.ranker as? Ranker.Fallback)?.why) {
                FallbackReason.PERSONALIZATION_OFF -> "personalization is off"
                FallbackReason.NO_MODEL -> "no ranking model on this device"
                FallbackReason.MODEL_FAILED -> "the ranking model failed"
                FallbackReason.EXPERIMENT_ARM -> "an experiment's comparison arm"
                null -> "not from your history"
            }
            return "NOT PERSONALIZED ($why: popular items)"
        }

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

        /** A round's outcome, for the log. */
        fun describe(o: ParticipationOutcome): String = when (o) {
            is ParticipationOutcome.Contributed -> "sent an update in round ${o.entry.round ?: "?"}; epsilon now %.2f".format(o.entry.epsilonTotal)
            is ParticipationOutcome.NotEligible -> "not eligible: " + describe(Eligibility.NotEligible(o.reasons))
            is ParticipationOutcome.NoRound -> "no round offered"
            is ParticipationOutcome.Declined -> "declined: " + when (val r = o.reason) {
                is DeclineReason.PrivacyTermsMissing -> "the round did not state its privacy terms"
                is DeclineReason.OverBudget -> "it would spend epsilon %.2f of %.2f".format(r.epsilonAfter, r.budget)
                is DeclineReason.AlreadyTookPart -> "already took part in it"
                is DeclineReason.NoPrivacyGuarantee -> "its noise gives no privacy guarantee (noise multiplier %.3g)".format(r.noiseMultiplier)
                is DeclineReason.SecureAggregationRequired -> "the coordinator would have seen this update (not a secure round)"
            }
        }

        /**
         * A pairing message as the text of a QR code: upper-case hex, which
         * QR's alphanumeric mode packs densely (an invitation is 100 characters).
         */
        fun qrText(message: ByteArray): String = message.joinToString("") { "%02X".format(it.toInt() and 0xFF) }

        /** The message a scanned QR code holds; null when it is not one. */
        fun fromQrText(text: String): ByteArray? {
            val t = text.trim()
            if (t.length % 2 != 0 || t.any { it !in "0123456789ABCDEFabcdef" }) return null
            return ByteArray(t.length / 2) { t.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
        }

        /** Where sync stands, for the "Your screens" screen. */
        fun describe(s: SyncStatus): String {
            if (s.group == null) return "this screen syncs with no other"
            val last = when {
                s.lastSyncMs == null -> "not synced yet"
                s.lastSyncComplete -> "last sync complete"
                else -> "last sync not finished"
            }
            val waiting = if (s.recordsWaiting > 0u) "; ${s.recordsWaiting} records waiting to go" else ""
            return "${s.devices} screens; $last$waiting"
        }

        /** What one sync did, for the log. */
        fun describe(r: SyncReport): String {
            if (r.wiped) return "your data was deleted on every screen, this one too"
            if (r.removedFromGroup) return "this screen was removed from your screens; its own data stays"
            val parts = mutableListOf("${r.eventsReceived} events in", "${r.eventsSent} out")
            if (r.eventsRemoved > 0uL) parts += "${r.eventsRemoved} forgotten"
            if (r.refused.isNotEmpty()) parts += "${r.refused.size} records refused"
            if (!r.complete) {
                parts += when (val e = r.transportError) {
                    null -> "not finished (out of time): syncs on next time"
                    is SyncTransportException.Unavailable -> "not finished (backend unavailable): syncs on next time"
                    is SyncTransportException.Refused -> "not finished (backend refused: ${e.reason})"
                }
            }
            return parts.joinToString(", ")
        }

        /** Whether the device's own coin put the update in the round's sum (no one else knows). */
        private fun coinText(e: LedgerEntry): String = when (e.included) {
            null -> ""
            true -> "; this device's own coin (p %.2f) put the update in the sum".format(e.samplingRate)
            false -> "; this device's own coin (p %.2f) left the update out: only noise was sent".format(e.samplingRate)
        }

        /** One upload as the privacy screen lists it, with what protected it on its way. */
        fun uploadText(e: LedgerEntry, sent: String): String {
            val protection = when (e.aggregation) {
                Aggregation.SECURE -> "secure: the coordinator saw only the round's sum"
                Aggregation.PLAIN -> "plain: the coordinator saw this update"
            }
            val noise = when (e.noiseMode) {
                NoiseMode.DISTRIBUTED -> "noise added on this device (its share %.3f; counts on %.0f%% of %d devices)"
                    .format(e.noiseShare, e.honestFraction * 100, e.cohort.toInt()) + coinText(e)
                NoiseMode.CENTRAL -> "noise added by the coordinator, as it announced"
            }
            val epsilon = "%.2f".format(e.epsilonTotal)
            val what = when (e.task) {
                RoundTask.TRAINING -> "Round"
                RoundTask.EVALUATION -> "Evaluation of a candidate model, round"
                RoundTask.EXPERIMENT_REPORT -> "Experiment report, round"
            }
            return "$what ${e.round ?: "?"} · $sent · ${e.bytesSent} bytes · ${e.status.name.lowercase()} · $protection · " +
                "$noise · ε now $epsilon"
        }
    }
}

// The demo's state holder: every Hearth call the SwiftUI screens make, with
// Foundation only, so the console twin builds and runs this same file on Linux
// (tests/bindings/run.sh, suite swift-console). Every method blocks on the
// disk: the app calls them off the main actor (DemoStore runs them in a
// detached task), never on the main thread.
import Foundation
import Hearth

/// One tile of the home row: the title and the reason shown under it.
public struct Tile: Equatable, Identifiable, Sendable {
    public let itemId: String
    public let title: String
    public let reason: String
    public let explored: Bool
    public var id: String { itemId }
}

/// The home row as the screen draws it.
public struct HomeRow: Equatable, Sendable {
    public let tiles: [Tile]
    public let personalized: Bool
    /// nil for a personalized row; otherwise what the row is, e.g. "NOT PERSONALIZED (...)".
    public let notPersonalizedLabel: String?
    public let rankerLabel: String
    /// How many catalog items the filters took out (blocked, disliked, completed).
    public let filtered: UInt32
    /// The experiment arm this device is in, when the row was ranked for an experiment.
    public let experimentArm: String?
}

/// An item the store holds history for, with a "forget" button on the privacy screen.
public struct Watched: Equatable, Identifiable, Sendable {
    public let itemId: String
    public let title: String
    public var id: String { itemId }
}

/// Everything the privacy screen shows.
public struct PrivacyState: Equatable, Sendable {
    public let settings: PrivacySettings
    public let eventsHeld: UInt64
    public let ledger: PrivacyLedger
    public let nextRound: Eligibility
    /// Why the next federated round would or would not start, in words.
    public let nextRoundText: String
    /// Every category of the catalog, for the "blocked categories" toggles.
    public let categories: [String]
    public let watched: [Watched]
    /// The experiments on this device: the arm drawn here and what is logged (nothing of it is sent).
    public let experiments: [ExperimentStatus]
}

/// The "Your screens" screen: the person's sync group on this device, its screens, the last sync.
public struct ScreensState: Equatable, Sendable {
    /// nil when this device syncs with no other.
    public let group: SyncGroupInfo?
    public let devices: [SyncDevice]
    public let statusText: String
}

/// A store opened by `DemoModel.openOrReset`; `wasReset` when the old one had to go.
public struct Opened: Sendable {
    public let hearth: Hearth
    public let wasReset: Bool
}

public final class DemoModel: Sendable {
    private let hearth: Hearth
    public let catalog: [CatalogItem]
    private let byId: [String: CatalogItem]

    public init(hearth: Hearth, catalog: [CatalogItem] = demoCatalog) {
        self.hearth = hearth
        self.catalog = catalog
        self.byId = Dictionary(catalog.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    }

    public func title(_ itemId: String) -> String { byId[itemId]?.title ?? itemId }

    public func categories(of itemId: String) -> [String] { byId[itemId]?.categories ?? [] }

    /// Puts the catalog into the store's cache when it is empty (first run, after delete all); true if it did.
    @discardableResult
    public func seedCatalogIfEmpty() throws -> Bool {
        guard try hearth.catalogSize() == 0 else { return false }
        try hearth.upsertCatalog(items: catalog)
        return true
    }

    /// The home row, ranked on the device.
    public func home(options: RankOptions) throws -> HomeRow { homeRow(try hearth.rankCatalog(options: options)) }

    public func homeRow(_ result: RankResult) -> HomeRow {
        HomeRow(
            tiles: result.items.map { Tile(itemId: $0.itemId, title: title($0.itemId), reason: $0.reasonText, explored: $0.explored) },
            personalized: result.personalized,
            notPersonalizedLabel: Self.notPersonalizedLabel(result),
            rankerLabel: Self.rankerLabel(result),
            filtered: result.filtered,
            experimentArm: result.experimentArm)
    }

    /// The user started `itemId`; `.paused` (nothing stored) while history is paused.
    @discardableResult
    public func watch(_ itemId: String, context: EventContext, nowMs: Int64, kind: EventKind = .play) throws -> RecordOutcome {
        try hearth.record(event: Event(itemId: itemId, kind: kind, timestampMs: nowMs, context: context))
    }

    /// `conditions`: the device's state now, for "why the next round would not start".
    public func privacy(conditions: DeviceConditions) throws -> PrivacyState {
        let next = try hearth.federatedEligibility(conditions: conditions)
        var seen = Set<String>()
        let watched = try hearth.recentEvents(limit: 200).map(\.itemId).filter { seen.insert($0).inserted }
        return PrivacyState(
            settings: try hearth.settings(),
            eventsHeld: try hearth.eventCount(),
            ledger: try hearth.privacyLedger(),
            nextRound: next,
            nextRoundText: Self.describe(next),
            categories: Array(Set(catalog.flatMap(\.categories))).sorted(),
            watched: watched.map { Watched(itemId: $0, title: title($0)) },
            experiments: try hearth.experiments().map { try hearth.experimentStatus(experimentId: $0.id) })
    }

    /// Defines (or keeps) an experiment on this device; returns the arm drawn here.
    public func joinExperiment(_ experiment: Experiment = DemoModel.homeRowExperiment) throws -> String {
        try hearth.defineExperiment(experiment: experiment)
    }

    /// The user played an item an experiment's row showed.
    public func played(experimentId: String, itemId: String) throws -> OutcomeLogged {
        try hearth.logOutcome(experimentId: experimentId, itemId: itemId, kind: .play)
    }

    public func settings() throws -> PrivacySettings { try hearth.settings() }

    /// Writes state kept behind (the profile) now: when the app goes to the background.
    public func flush() throws { try hearth.flush() }

    public func setPersonalization(_ enabled: Bool) throws { try hearth.setPersonalization(enabled: enabled) }

    public func setHistoryPaused(_ paused: Bool) throws { try hearth.setHistoryPaused(paused: paused) }

    public func setFederatedOptIn(_ optIn: Bool) throws { try hearth.setFederatedOptIn(optIn: optIn) }

    public func setBlockedCategories(_ categories: [String]) throws { try hearth.setBlockedCategories(categories: categories) }

    /// Blocks or unblocks one category, keeping the others.
    public func setBlocked(_ category: String, _ blocked: Bool) throws {
        var now = try hearth.settings().blockedCategories.filter { $0 != category }
        if blocked { now.append(category) }
        try hearth.setBlockedCategories(categories: now)
    }

    /// Everything held about the user, as JSON (docs/export-format.md).
    public func exportJson() throws -> String { try hearth.exportJson() }

    /// Deletes the item's events; returns how many went.
    @discardableResult
    public func forget(_ itemId: String) throws -> UInt64 { try hearth.forgetItem(itemId: itemId) }

    /// Deletes everything; the catalog cache goes too (seed it again for the home row).
    public func deleteAll() throws { try hearth.deleteAll() }

    /// One federated round over `transport`. Blocks for minutes at most: only
    /// from a background task, on a thread of its own. Throws
    /// `HearthError.Federated` when the coordinator cannot be reached or refuses.
    /// Stops a round in progress (it then throws `HearthError.Federated`, kind `.cancelled`).
    public func cancelParticipation() {
        hearth.cancelParticipation()
    }

    public func participate(transport: FleetTransport, conditions: DeviceConditions) throws -> ParticipationOutcome {
        try hearth.participateVia(transport: transport, conditions: conditions)
    }

    // MARK: Your screens: the person's phone, tablet and TV share their history
    // through the app's backend, which holds only sealed blobs.

    /// The "Your screens" screen.
    public func screens() throws -> ScreensState {
        let status = try hearth.syncStatus()
        let devices = status.group == nil ? [] : try hearth.syncDevices()
        return ScreensState(group: status.group, devices: devices, statusText: DemoModel.describe(status))
    }

    /// "Add a screen" on a device in no group yet starts the person's group first.
    public func startGroupIfNone() throws -> SyncGroupInfo {
        if let group = try hearth.syncGroup() { return group }
        return try hearth.createSyncGroup()
    }

    /// On the screen in the group: the invitation, shown as a QR code (`qrText`).
    public func invite() throws -> Data { try hearth.inviteDevice() }

    /// On the new screen, which scanned the invitation: the answer, relayed back.
    public func answerInvitation(_ invitation: Data) throws -> Data { try hearth.joinDevice(invitation: invitation) }

    /// On the inviting screen: the reveal to relay, and the six digits to show.
    public func invitationAnswered(_ answer: Data) throws -> InviteReply { try hearth.inviteAnswer(answer: answer) }

    /// On the new screen: the six digits to show.
    public func digits(for reveal: Data) throws -> String { try hearth.joinReveal(reveal: reveal) }

    /// On the inviting screen, once the person compared the digits: the welcome to relay, or nil.
    public func confirmInvitation(digitsMatch: Bool) throws -> Data? { try hearth.inviteConfirm(digitsMatch: digitsMatch) }

    /// On the new screen, once the person compared the digits: it joins the group.
    public func finishJoining(_ welcome: Data, digitsMatch: Bool) throws -> SyncGroupInfo {
        try hearth.joinFinish(welcome: welcome, digitsMatch: digitsMatch)
    }

    /// One sync over the app's backend (a background task's job: it blocks on the network).
    public func syncNow(_ transport: SyncTransport) throws -> SyncReport {
        try hearth.sync(transport: transport, options: SyncOptions())
    }

    /// "Remove this screen" for another device of the group (a TV left behind).
    public func removeScreen(_ transport: SyncTransport, deviceId: String) throws -> SyncReport {
        try hearth.removeSyncDevice(transport: transport, deviceId: deviceId)
    }

    /// "Delete everything on every screen"; `deleteAll` deletes only here.
    public func deleteEverywhere(_ transport: SyncTransport) throws { try hearth.deleteEverywhere(transport: transport) }

    /// A pairing message as the text of a QR code: upper-case hex, which QR's
    /// alphanumeric mode packs densely (an invitation is 100 characters).
    public static func qrText(_ message: Data) -> String { message.map { String(format: "%02X", $0) }.joined() }

    /// The message a scanned QR code holds; nil when it is not one.
    public static func fromQrText(_ text: String) -> Data? {
        let t = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard t.count % 2 == 0 else { return nil }
        var out = Data(capacity: t.count / 2)
        for i in stride(from: 0, to: t.count, by: 2) {
            guard let byte = UInt8(String(decoding: t[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(byte)
        }
        return out
    }

    /// Where sync stands, for the "Your screens" screen.
    public static func describe(_ s: SyncStatus) -> String {
        guard s.group != nil else { return "this screen syncs with no other" }
        let last = s.lastSyncMs == nil ? "not synced yet" : s.lastSyncComplete ? "last sync complete" : "last sync not finished"
        let waiting = s.recordsWaiting > 0 ? "; \(s.recordsWaiting) records waiting to go" : ""
        return "\(s.devices) screens; \(last)\(waiting)"
    }

    /// What one sync did, for the log.
    public static func describe(_ r: SyncReport) -> String {
        if r.wiped { return "your data was deleted on every screen, this one too" }
        if r.removedFromGroup { return "this screen was removed from your screens; its own data stays" }
        var parts = ["\(r.eventsReceived) events in", "\(r.eventsSent) out"]
        if r.eventsRemoved > 0 { parts.append("\(r.eventsRemoved) forgotten") }
        if !r.refused.isEmpty { parts.append("\(r.refused.count) records refused") }
        if !r.complete {
            switch r.transportError {
            case nil: parts.append("not finished (out of time): syncs on next time")
            case .Unavailable?: parts.append("not finished (backend unavailable): syncs on next time")
            case .Refused(let reason)?: parts.append("not finished (backend refused: \(reason))")
            }
        }
        return parts.joined(separator: ", ")
    }

    /// Opens the store; when the key no longer opens it (the Keychain item is
    /// gone or replaced: `WrongKey`, `KeyInvalidated`), the history is
    /// unreadable for good, so the store is destroyed and a new one opened.
    /// `KeyUnavailable` (device locked) is thrown: try again later.
    public static func openOrReset(config: HearthConfig, keys: KeyProvider) throws -> Opened {
        do {
            return Opened(hearth: try Hearth.open(config: config, keys: keys), wasReset: false)
        } catch HearthError.WrongKey, HearthError.KeyInvalidated {
            try destroyStore(dataDir: config.dataDir)
            return Opened(hearth: try Hearth.open(config: config, keys: keys), wasReset: true)
        }
    }

    /// The home row's options: 20 items (or `limit`), MMR diversity, one slot in eight explores.
    public static func homeOptions(
        device: DeviceClass, localHour: UInt8, locale: String?, limit: UInt32 = 20, seed: UInt64? = nil,
        experiment: String? = nil
    ) -> RankOptions {
        RankOptions(
            context: RankContext(device: device, localHour: localHour, locale: locale),
            diversity: .mmr(lambda: 0.7),
            limit: limit,
            explorationShare: 0.125,
            seed: seed,
            experiment: experiment)
    }

    /// The demo's experiment: the home row by the model, or by popularity.
    public static let homeRowExperiment = Experiment(id: "home-row.v1", arms: [
        ExperimentArm(name: "model", share: 1, treatment: .model),
        ExperimentArm(name: "popular", share: 1, treatment: .fallback),
    ])

    public static func rankerLabel(_ r: RankResult) -> String {
        switch r.ranker {
        case .model(let version, let digest):
            return "model v\(version) (\(digest.prefix(12))), personalized=\(r.personalized)"
        case .fallback(let why):
            let name: String
            switch why {
            case .personalizationOff: name = "personalization_off"
            case .noModel: name = "no_model"
            case .modelFailed: name = "model_failed"
            case .experimentArm: name = "experiment_arm"
            }
            return "fallback (\(name)), personalized=\(r.personalized)"
        }
    }

    /// What a non-personalized row says above it.
    public static func notPersonalizedLabel(_ r: RankResult) -> String? {
        if r.personalized { return nil }
        let why: String
        switch r.ranker {
        case .fallback(.personalizationOff): why = "personalization is off"
        case .fallback(.noModel): why = "no ranking model on this device"
        case .fallback(.modelFailed): why = "the ranking model failed"
        case .fallback(.experimentArm): why = "an experiment's comparison arm"
        case .model: why = "not from your history"
        }
        return "NOT PERSONALIZED (\(why): popular items)"
    }

    /// What the privacy screen says about the next federated round.
    public static func describe(_ e: Eligibility) -> String {
        switch e {
        case .eligible: return "can take part when the app schedules it"
        case .notEligible(let reasons):
            return reasons.map { r -> String in
                switch r {
                case .notOptedIn: return "you have not opted in"
                case .notCharging: return "waits for the charger"
                case .meteredNetwork: return "waits for Wi-Fi"
                case .notIdle: return "waits until the device is idle"
                case .tooFewNewExamples(let have, let need): return "waits for more viewing (\(have) of \(need))"
                case .tooSoon: return "took part recently"
                case .budgetSpent: return "privacy budget spent"
                }
            }.joined(separator: "; ")
        }
    }

    /// A round's outcome, for the log.
    public static func describe(_ o: ParticipationOutcome) -> String {
        switch o {
        case .contributed(let entry):
            return "sent an update in round \(entry.round.map(String.init) ?? "?"); epsilon now "
                + String(format: "%.2f", entry.epsilonTotal)
        case .notEligible(let reasons): return "not eligible: " + describe(Eligibility.notEligible(reasons: reasons))
        case .noRound: return "no round offered"
        case .declined(.privacyTermsMissing): return "declined: the round did not state its privacy terms"
        case .declined(.overBudget(let after, let budget)):
            return "declined: it would spend epsilon " + String(format: "%.2f of %.2f", after, budget)
        case .declined(.alreadyTookPart): return "declined: already took part in it"
        case .declined(.noPrivacyGuarantee(let noiseMultiplier, _)):
            return "declined: its noise gives no privacy guarantee (noise multiplier "
                + String(format: "%.3g", noiseMultiplier) + ")"
        case .declined(.secureAggregationRequired):
            return "declined: the coordinator would have seen this update (not a secure round)"
        }
    }

    /// Whether the device's own coin put the update in the round's sum (no one else knows).
    static func coinText(_ e: LedgerEntry) -> String {
        switch e.included {
        case nil: return ""
        case true?: return String(format: "; this device's own coin (p %.2f) put the update in the sum", e.samplingRate)
        case false?:
            return String(format: "; this device's own coin (p %.2f) left the update out: only noise was sent", e.samplingRate)
        }
    }

    /// One upload as the privacy screen lists it, with what protected it on its way.
    public static func uploadText(_ e: LedgerEntry, sent: String) -> String {
        let protection: String
        switch e.aggregation {
        case .secure: protection = "secure: the coordinator saw only the round's sum"
        case .plain: protection = "plain: the coordinator saw this update"
        }
        let noise: String
        switch e.noiseMode {
        case .distributed:
            noise = String(
                format: "noise added on this device (its share %.3f; counts on %.0f%% of %d devices)",
                e.noiseShare, e.honestFraction * 100, Int(e.cohort)) + coinText(e)
        case .central: noise = "noise added by the coordinator, as it announced"
        }
        let what: String
        switch e.task {
        case .training: what = "Round"
        case .evaluation: what = "Evaluation of a candidate model, round"
        case .experimentReport: what = "Experiment report, round"
        }
        return "\(what) \(e.round.map(String.init) ?? "?") · \(sent) · \(e.bytesSent) bytes · \(String(describing: e.status)) · "
            + "\(protection) · \(noise) · ε now \(String(format: "%.2f", e.epsilonTotal))"
    }
}

// The iOS demo's flow as a console program: the same Hearth calls the SwiftUI
// app makes (home row with reasons, privacy screen, export, forget, delete),
// printed instead of drawn. tests/bindings/run.sh (suite swift-console) builds
// it in the Swift chroot against the generated bindings and runs it against
// libhearth.so; any failed check exits non-zero.
import Foundation
import Hearth

/// The root key. On iOS the app gets it from the Keychain: 32 random bytes
/// stored once as a generic password with kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
/// (never synced, never in backups), read back here; errSecInteractionNotAllowed
/// (device locked) becomes KeyError.Unavailable, a missing item after an earlier
/// store existed KeyError.Invalidated. Here: a fixed key.
final class DemoKeys: KeyProvider {
    func rootKey() throws -> Data { Data((0..<32).map { UInt8(0x40 + $0) }) }
}

struct CheckFailed: Error {
    let message: String
}

func verify(_ condition: Bool, _ what: @autoclosure () throws -> String) throws {
    if !condition { throw CheckFailed(message: try what()) }
}

let thisYear: UInt16 = {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    return UInt16(calendar.component(.year, from: Date()))
}()

func media(
    _ id: String, _ title: String, _ language: String, _ year: UInt16, _ popularity: Double, _ categories: [String]
) -> CatalogItem {
    CatalogItem(
        id: id, title: title, categories: categories, language: language, durationMs: 5_400_000, releaseYear: year,
        popularity: popularity, contentRating: "PG")
}

/// What the app's backend would send down: twenty items, eight categories, three languages.
let catalog = [
    media("d1", "Harbor Lights", "en", 2019, 40, ["drama"]),
    media("d2", "Quiet Rooms", "en", 2021, 30, ["drama"]),
    media("d3", "Long Winter", "fr", 2018, 20, ["drama"]),
    media("d4", "The Glass Orchard", "en", thisYear, 31, ["drama"]),
    media("d5", "Mar de Fondo", "es", 2016, 21, ["drama"]),
    media("m1", "Night Shift", "en", 2020, 33, ["drama", "crime"]),
    media("m2", "Cold Case Files", "en", 2022, 26, ["crime"]),
    media("c1", "Laugh Track", "en", 2019, 35, ["comedy"]),
    media("c2", "Office Hours", "fr", 2017, 25, ["comedy"]),
    media("c3", "Second Helpings", "en", thisYear, 12, ["comedy"]),
    media("s1", "Goal Rush", "en", 2023, 50, ["sports"]),
    media("s2", "Final Lap", "en", 2021, 15, ["sports"]),
    media("n1", "Evening Brief", "en", 2024, 10, ["news"]),
    media("n2", "Le Journal", "fr", 2024, 12, ["news"]),
    media("h1", "Night Terror", "en", 2019, 60, ["horror"]),
    media("h2", "The Cellar", "en", 2016, 45, ["horror", "crime"]),
    media("k1", "Tiny Dragons", "en", 2020, 22, ["kids"]),
    media("k2", "Paper Boats", "fr", 2015, 18, ["kids"]),
    media("o1", "Deep Blue", "en", 2018, 28, ["documentary"]),
    media("o2", "Stone Age", "fr", 2014, 16, ["documentary"]),
]
let byId = Dictionary(uniqueKeysWithValues: catalog.map { ($0.id, $0) })

/// The TV in the living room, 9 pm, British English.
let tvEvening = EventContext(device: .tv, localHour: 21, locale: "en-GB")
let home = RankOptions(
    context: RankContext(device: .tv, localHour: 21, locale: "en-GB"),
    diversity: .mmr(lambda: 0.7),
    limit: 8,
    explorationShare: 0.125,  // one slot of eight
    seed: 7  // fixed, so the printed row is the same on every run
)

func event(_ itemId: String, _ kind: EventKind, minutesAgo: Int64, now: Int64) -> Event {
    Event(
        itemId: itemId, kind: kind, timestampMs: now - minutesAgo * 60_000,
        positionMs: kind == .complete ? 5_400_000 : 600_000, durationMs: 5_400_000, context: tvEvening)
}

func title(_ id: String) -> String { byId[id]?.title ?? id }

func categories(_ id: String) -> [String] { byId[id]?.categories ?? [] }

func rankerLabel(_ r: RankResult) -> String {
    switch r.ranker {
    case .model(let version, let digest):
        return "model v\(version) (\(digest.prefix(12))), personalized=\(r.personalized)"
    case .fallback(let why):
        let name: String
        switch why {
        case .personalizationOff: name = "personalization_off"
        case .noModel: name = "no_model"
        case .modelFailed: name = "model_failed"
        }
        return "fallback (\(name)), personalized=\(r.personalized)"
    }
}

func printRow(_ heading: String, _ r: RankResult) {
    print(heading)
    for (i, item) in r.items.enumerated() {
        print("\(i + 1). \(title(item.itemId))  \u{2014} \(item.reasonText)")
    }
    print("ranker: \(rankerLabel(r)); filtered out: \(r.filtered)")
}

func onOff(_ b: Bool) -> String { b ? "on" : "off" }

/// What the privacy screen says about the next federated round.
func describe(_ e: Eligibility) -> String {
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

func printPrivacy(_ h: Hearth) throws {
    let s = try h.settings()
    print("Privacy screen")
    print("  personalization:   \(onOff(s.personalizationEnabled))")
    print("  history paused:    \(onOff(s.historyPaused))")
    print("  federated opt-in:  \(onOff(s.federatedOptIn))")
    print("  blocked categories: \(s.blockedCategories.isEmpty ? "none" : s.blockedCategories.joined(separator: ", "))")
    print("  events held:       \(try h.eventCount())")
    let ledger = try h.privacyLedger()
    print(
        "  federated uploads: \(ledger.entries.count), epsilon spent "
            + String(format: "%.2f of %.2f (delta %.0e)", ledger.epsilonSpent, ledger.epsilonBudget, ledger.delta))
    // On iOS the conditions come from the BGProcessingTask's requirements and ProcessInfo.
    let onTheSofa = DeviceConditions(charging: false, unmeteredNetwork: true, idle: false)
    let next = try h.federatedEligibility(conditions: onTheSofa)
    print("  next round:        \(describe(next))")
    guard case .notEligible(let reasons) = next, reasons.contains(.notCharging) else {
        throw CheckFailed(message: "eligible while not charging")
    }
    try verify(ledger.entries.isEmpty && ledger.epsilonSpent == 0, "an upload nobody made is in the ledger")
}

func isModel(_ ranker: Ranker) -> Bool {
    if case .model = ranker { return true }
    return false
}

func run(_ dir: URL) throws {
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    // On iOS: dataDir under Application Support (excluded from backups), and
    // every call below from a background task, never the main actor.
    let h = try Hearth.open(config: HearthConfig(dataDir: dir.path, durability: .normal), keys: DemoKeys())
    defer { try? h.close() }
    let model = try h.modelInfo()
    print("Hearth console twin (Swift) \u{2014} store in \(dir.path)")
    print("model: \(model.map { "\($0.name) v\($0.version)\($0.builtin ? ", built in" : "")" } ?? "none")")
    try verify(model != nil, "no model package verified")

    try h.upsertCatalog(items: catalog)
    try verify(try h.catalogSize() == UInt64(catalog.count), "catalog holds \(try h.catalogSize()) items")
    let history = [
        event("d1", .play, minutesAgo: 3 * 24 * 60, now: now),
        event("d1", .complete, minutesAgo: 3 * 24 * 60 - 90, now: now),
        event("m1", .play, minutesAgo: 2 * 24 * 60, now: now),
        event("c1", .play, minutesAgo: 26 * 60, now: now),
        event("c1", .like, minutesAgo: 25 * 60, now: now),
        event("o1", .play, minutesAgo: 5 * 60, now: now),
        event("o1", .complete, minutesAgo: 4 * 60, now: now),
        event("s1", .play, minutesAgo: 90, now: now),
        event("s2", .dislike, minutesAgo: 30, now: now),
    ]
    for e in history {
        let outcome = try h.record(event: e)
        try verify(outcome == .stored(count: 1), "record returned \(outcome)")
    }
    try verify(try h.eventCount() == UInt64(history.count), "\(try h.eventCount()) events held, \(history.count) recorded")
    print("catalog: \(try h.catalogSize()) items; history: \(try h.eventCount()) events (plays, completes, a like, a dislike)")
    print()

    // ---- the home row
    let row = try h.rankCatalog(options: home)
    printRow("Home row \u{2014} for you", row)
    let ids = row.items.map(\.itemId)
    try verify(isModel(row.ranker) && row.personalized, "home row not personalized: \(row.ranker)")
    try verify(row.items.count == 8, "home row has \(row.items.count) items")
    try verify(Set(ids).count == ids.count, "an item twice in \(ids)")
    try verify(row.items.allSatisfy { !$0.reasonText.isEmpty }, "an item without a reason")
    try verify(row.items.filter(\.explored).count == 1, "\(row.items.filter(\.explored).count) exploration slots")
    try verify(!row.items[0].explored, "the first slot is an exploration slot")
    try verify(!ids.contains("s2"), "the disliked item is in the row")
    try verify(!ids.contains("d1") && !ids.contains("o1"), "a completed item is in the row")
    try verify(try h.rankCatalog(options: home) == row, "same seed, another row")
    print()

    // ---- the privacy screen
    try printPrivacy(h)
    let defaults = try h.settings()
    try verify(
        defaults.personalizationEnabled && !defaults.historyPaused && !defaults.federatedOptIn,
        "unexpected defaults: \(defaults)")
    try verify(defaults.blockedCategories.isEmpty, "categories blocked by default")
    print()

    // ---- personalization off: the labelled fallback
    try h.setPersonalization(enabled: false)
    try verify(!(try h.settings().personalizationEnabled), "personalization still on")
    let fallback = try h.rankCatalog(options: home)
    printRow("Home row \u{2014} NOT PERSONALIZED (personalization is off: popular items)", fallback)
    try verify(fallback.ranker == .fallback(why: .personalizationOff), "ranker \(fallback.ranker)")
    try verify(!fallback.personalized, "fallback row says personalized")
    try verify(
        !fallback.items.isEmpty && fallback.items.allSatisfy { !$0.reasonText.isEmpty }, "empty fallback row")
    try verify(!fallback.items.contains { $0.itemId == "s2" }, "the disliked item is in the fallback row")
    try h.setPersonalization(enabled: true)
    try verify(try h.settings().personalizationEnabled, "personalization still off")
    print()

    // ---- block a category of the top item
    let blocked = categories(ids[0])[0]
    try h.setBlockedCategories(categories: [blocked])
    try verify(try h.settings().blockedCategories == [blocked], "blocked: \(try h.settings().blockedCategories)")
    let without = try h.rankCatalog(options: home)
    let gone = ids.filter { categories($0).contains(blocked) }
    printRow("Home row \u{2014} with \"\(blocked)\" blocked (gone: \(gone.map(title).joined(separator: ", ")))", without)
    try verify(!gone.isEmpty, "nothing to block")
    try verify(isModel(without.ranker), "ranker \(without.ranker)")
    try verify(!without.items.isEmpty, "empty row after blocking")
    try verify(!without.items.contains { categories($0.itemId).contains(blocked) }, "a \(blocked) item is still ranked")
    print()
    try printPrivacy(h)
    print()

    // ---- export, forget one item, delete all
    let json = try h.exportJson()
    let document = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    let exportedEvents = (document?["events"] as? [Any])?.count ?? -1
    print("export: \(json.utf8.count) bytes of JSON, \(exportedEvents) events")
    try verify(document?["format"] as? String == "hearth.export", "not an export document")
    try verify(exportedEvents == Int(try h.eventCount()), "export has \(exportedEvents) events, store \(try h.eventCount())")

    let before = try h.eventCount()
    let forgotten = try h.forgetItem(itemId: "d1")
    print("forget \"\(title("d1"))\": \(forgotten) events deleted, \(before) -> \(try h.eventCount())")
    try verify(forgotten == 2, "forgot \(forgotten) events")
    try verify(try h.eventCount() == before - forgotten, "\(try h.eventCount()) events after forgetting")
    try verify(!(try h.recentEvents(limit: 100)).contains { $0.itemId == "d1" }, "an event of the forgotten item is left")

    let beforeDelete = try h.eventCount()
    try h.deleteAll()
    print("delete all: events \(beforeDelete) -> \(try h.eventCount()), catalog \(try h.catalogSize()) items")
    try verify(try h.eventCount() == 0, "\(try h.eventCount()) events after delete all")
    try verify(try h.catalogSize() == 0, "\(try h.catalogSize()) catalog items after delete all")
    try verify(try h.settings().blockedCategories.isEmpty, "settings survived delete all")
    try verify(try h.integrityCheck() == "ok", "integrity check after delete all")
}

let root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-console-\(UUID().uuidString)")
var status: Int32 = 0
do {
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    try run(root.appendingPathComponent("store"))
    print("swift console: all checks passed")
} catch let failure as CheckFailed {
    fflush(stdout)  // what was printed so far comes before the failure
    FileHandle.standardError.write(Data("swift console: check failed: \(failure.message)\n".utf8))
    status = 1
} catch {
    fflush(stdout)
    FileHandle.standardError.write(Data("swift console: \(error)\n".utf8))
    status = 1
}
try? FileManager.default.removeItem(at: root)
exit(status)

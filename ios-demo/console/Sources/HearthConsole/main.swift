// The iOS demo's flow as a console program: the same Hearth calls the SwiftUI
// app makes (home row with reasons, privacy screen, export, forget, delete, a
// federated round over the app's URLSession transport, and the person's phone
// and TV pairing and syncing through the app's backend), printed instead of
// drawn. It drives the app's own Foundation-only files (ios-demo/App/Shared:
// DemoModel, demoCatalog, URLSessionFleetTransport, URLSessionSyncTransport,
// as the HearthDemoKit
// target of ../../Package.swift). tests/bindings/run.sh (suite swift-console)
// builds it in the Swift chroot against the generated bindings and runs it
// against libhearth.so; any failed check exits non-zero.
import Foundation
import Hearth
import HearthDemoKit

#if canImport(Glibc)
    import Glibc
#endif

/// The root key. On iOS the app gets it from the Keychain (ios-demo/App:
/// KeychainKeys, 32 random bytes stored as a generic password with
/// kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly); errSecInteractionNotAllowed
/// (device locked) becomes KeyError.Unavailable. Here: a fixed key.
final class DemoKeys: KeyProvider {
    let first: UInt8
    init(first: UInt8 = 0x40) { self.first = first }
    func rootKey() throws -> Data { Data((0..<32).map { first + UInt8($0) }) }
}

struct CheckFailed: Error {
    let message: String
}

func verify(_ condition: Bool, _ what: @autoclosure () throws -> String) throws {
    if !condition { throw CheckFailed(message: try what()) }
}

/// The TV in the living room, 9 pm, British English.
let tvEvening = EventContext(device: .tv, localHour: 21, locale: "en-GB")
let home = DemoModel.homeOptions(device: .tv, localHour: 21, locale: "en-GB", limit: 8, seed: 7)

/// What the BGProcessingTask reports when iOS starts it: on power, on Wi-Fi, idle.
let ready = DeviceConditions(charging: true, unmeteredNetwork: true, idle: true)
/// On iOS the conditions come from the BGProcessingTask's requirements and NWPathMonitor.
let onTheSofa = DeviceConditions(charging: false, unmeteredNetwork: true, idle: false)

func event(_ itemId: String, _ kind: EventKind, minutesAgo: Int64, now: Int64) -> Event {
    Event(
        itemId: itemId, kind: kind, timestampMs: now - minutesAgo * 60_000,
        positionMs: kind == .complete ? 5_400_000 : 600_000, durationMs: 5_400_000, context: tvEvening)
}

func printRow(_ heading: String, _ row: HomeRow) {
    print(heading)
    for (i, tile) in row.tiles.enumerated() {
        print("\(i + 1). \(tile.title)  \u{2014} \(tile.reason)")
    }
    print("ranker: \(row.rankerLabel); filtered out: \(row.filtered)")
}

func onOff(_ b: Bool) -> String { b ? "on" : "off" }

func printPrivacy(_ p: PrivacyState) {
    let s = p.settings
    print("Privacy screen")
    print("  personalization:   \(onOff(s.personalizationEnabled))")
    print("  history paused:    \(onOff(s.historyPaused))")
    print("  federated opt-in:  \(onOff(s.federatedOptIn))")
    print("  blocked categories: \(s.blockedCategories.isEmpty ? "none" : s.blockedCategories.joined(separator: ", "))")
    print("  events held:       \(p.eventsHeld)")
    print(
        "  federated uploads: \(p.ledger.entries.count), epsilon spent "
            + String(format: "%.2f of %.2f (delta %.0e)", p.ledger.epsilonSpent, p.ledger.epsilonBudget, p.ledger.delta))
    print("  next round:        \(p.nextRoundText)")
    for x in p.experiments {
        print("  experiment \(x.experimentId): arm \"\(x.arm)\", \(x.exposures) rows and \(x.outcomes) plays logged here, nothing sent")
    }
}

func checkPrivacyOnTheSofa(_ p: PrivacyState) throws {
    guard case .notEligible(let reasons) = p.nextRound, reasons.contains(.notCharging) else {
        throw CheckFailed(message: "eligible while not charging")
    }
    try verify(p.ledger.entries.isEmpty && p.ledger.epsilonSpent == 0, "an upload nobody made is in the ledger")
}

/// A stand-in coordinator on 127.0.0.1 for the URLSession transport, one
/// connection at a time: /echo returns the body, /status answers 503, /big
/// 4 KiB, /slow answers after 1.5 s; /v1/fleet/... (Hearth's Fleet API
/// calls) answers 403, as a SuperLink refusing an unknown node would. And
/// the app's backend for sync under /sync/: one blob store for the signed-in
/// person (whose token it checks), as URLSessionSyncTransport expects it,
/// which keeps what it is sent so the console reads it as its owner would.
final class LocalServer: @unchecked Sendable {
    private let listener: Int32
    let port: UInt16
    private let lock = NSLock()
    private var requests: [(path: String, headers: [String: String])] = []
    private var stored: [String: Data] = [:]
    static let syncToken = "session-of-the-signed-in-person"

    /// What the backend holds for sync: name and bytes.
    var blobs: [String: Data] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }

    var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    var fleetRequests: [(path: String, headers: [String: String])] {
        lock.lock()
        defer { lock.unlock() }
        return requests.filter { $0.path.hasPrefix("/v1/fleet/") }
    }

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, size) == 0 && listen(fd, 16) == 0 && getsockname(fd, p, &size) == 0
            }
        }
        guard fd >= 0, bound else { throw CheckFailed(message: "no local server") }
        listener = fd
        port = UInt16(bigEndian: addr.sin_port)
        Thread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 { return }
                handle(connection)
                close(connection)
            }
        }.start()
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)) }

    private func handle(_ connection: Int32) {
        var received = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        var contentLength = 0
        var method = ""
        var path = ""
        var headers: [String: String] = [:]
        while headerEnd == nil || received.count < headerEnd! + contentLength {
            let n = recv(connection, &chunk, chunk.count, 0)
            if n <= 0 { return }
            received.append(contentsOf: chunk[0..<n])
            if headerEnd == nil, let range = received.firstRange(of: separator) {
                headerEnd = range.upperBound
                let lines = String(decoding: received[0..<range.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
                let requestLine = lines.first?.split(separator: " ") ?? []
                method = requestLine.first.map(String.init) ?? ""
                path = requestLine.dropFirst().first.map(String.init) ?? ""
                for line in lines.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    let name = line[..<colon].lowercased()
                    headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                contentLength = Int(headers["content-length"] ?? "0") ?? 0
            }
        }
        let body = Array(received[headerEnd!...])
        lock.lock()
        requests.append((path, headers))
        lock.unlock()
        let (status, reply): (String, [UInt8])
        switch path {
        case "/echo":
            let ok = headers["content-type"] == "application/protobuf" && headers["x-demo"] == "1"
            (status, reply) = ok ? ("200 OK", body) : ("400 Bad Request", [])
        case "/status": (status, reply) = ("503 Service Unavailable", Array("busy".utf8))
        case "/big": (status, reply) = ("200 OK", [UInt8](repeating: 0, count: 4096))
        case "/slow":
            Thread.sleep(forTimeInterval: 1.5)
            (status, reply) = ("200 OK", [0])
        case _ where path.hasPrefix("/sync/"): (status, reply) = syncBackend(method, String(path.dropFirst(6)), headers, body)
        default: (status, reply) = ("403 Forbidden", [])
        }
        let head = "HTTP/1.1 \(status)\r\ncontent-length: \(reply.count)\r\nconnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + reply
        _ = bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}

extension LocalServer {
    /// The blob store: PUT, GET and DELETE of `/sync/<name>`, and GET of
    /// `/sync/` for the list (`<name> <size>` lines).
    fileprivate func syncBackend(_ method: String, _ name: String, _ headers: [String: String], _ body: [UInt8])
        -> (String, [UInt8])
    {
        guard headers["authorization"] == "Bearer \(LocalServer.syncToken)" else { return ("401 Unauthorized", []) }
        lock.lock()
        defer { lock.unlock() }
        switch (method, name) {
        case ("GET", ""):
            return ("200 OK", Array(stored.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count)\n" }.joined().utf8))
        case (_, _) where name.isEmpty || name.contains("/"): return ("400 Bad Request", [])
        case ("PUT", _):
            stored[name] = Data(body)
            return ("200 OK", [])
        case ("GET", _): return stored[name].map { ("200 OK", [UInt8]($0)) } ?? ("404 Not Found", [])
        case ("DELETE", _):
            stored[name] = nil
            return ("200 OK", [])
        default: return ("405 Method Not Allowed", [])
        }
    }
}

/// Hearth's calls through `inner`, with the headers Hearth asked for.
final class Recording: FleetTransport, @unchecked Sendable {
    private let inner: FleetTransport
    private let lock = NSLock()
    private var names = Set<String>()
    init(_ inner: FleetTransport) { self.inner = inner }

    var headerNames: Set<String> {
        lock.lock()
        defer { lock.unlock() }
        return names
    }

    func post(path: String, headers: [HttpHeader], body: Data, timeoutMs: UInt64) throws -> Data {
        lock.lock()
        names.formUnion(headers.map { $0.name.lowercased() })
        lock.unlock()
        return try inner.post(path: path, headers: headers, body: body, timeoutMs: timeoutMs)
    }
}

func failure(_ block: () throws -> Data) -> TransportFailure? {
    do {
        _ = try block()
        return nil
    } catch let failure as TransportFailure {
        return failure
    } catch {
        return .Io(reason: "not a TransportFailure: \(error)")
    }
}

func checkTransport(_ server: LocalServer) throws {
    guard let transport = URLSessionFleetTransport(baseURL: server.url, maxReplyBytes: 1024, allowCleartext: true) else {
        throw CheckFailed(message: "no transport for \(server.url)")
    }
    let body = Data([8, 1, 18, 3, 0x61, 0x62, 0x63])
    let echoed = try transport.post(path: "/echo", headers: [HttpHeader(name: "x-demo", value: "1")], body: body, timeoutMs: 5_000)
    let status = failure { try transport.post(path: "/status", headers: [], body: body, timeoutMs: 5_000) }
    let tooLarge = failure { try transport.post(path: "/big", headers: [], body: body, timeoutMs: 5_000) }
    let timeout = failure { try transport.post(path: "/slow", headers: [], body: body, timeoutMs: 300) }
    let closed = URLSessionFleetTransport(baseURL: URL(string: "http://127.0.0.1:9")!, allowCleartext: true)!
    let io = failure { try closed.post(path: "/echo", headers: [], body: body, timeoutMs: 5_000) }
    let cleartext = URLSessionFleetTransport(baseURL: server.url)
    var isIo = false
    if case .Io = io { isIo = true }
    print(
        "transport (URLSession, local server): echo \(echoed == body ? "ok" : "WRONG"), "
            + "503 -> \(status.map { "\($0)" } ?? "accepted"), 4 KiB reply -> \(tooLarge == .TooLarge ? "TooLarge" : "accepted"), "
            + "slow reply -> \(timeout == .Timeout ? "Timeout" : "waited"), closed port -> \(isIo ? "Io" : "\(String(describing: io))"), "
            + "http:// -> \(cleartext == nil ? "refused" : "accepted")")
    try verify(echoed == body, "the echo came back different")
    try verify(status == .Status(code: 503), "503 was \(String(describing: status))")
    try verify(tooLarge == .TooLarge, "a 4 KiB reply passed a 1 KiB bound: \(String(describing: tooLarge))")
    try verify(timeout == .Timeout, "a reply after 1.5 s passed a 300 ms timeout: \(String(describing: timeout))")
    try verify(isIo, "a closed port was \(String(describing: io))")
    try verify(cleartext == nil, "an http:// coordinator was accepted without allowCleartext")
}

func run(_ dir: URL) throws {
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    // On iOS: dataDir under Application Support (excluded from backups), and
    // every call below from a background task, never the main actor.
    let config = HearthConfig(dataDir: dir.path, durability: .normal)
    let opened = try DemoModel.openOrReset(config: config, keys: DemoKeys())
    try verify(!opened.wasReset, "a new store was reset")
    let h = opened.hearth
    let m = DemoModel(hearth: h)
    let model = try h.modelInfo()
    print("Hearth console twin (Swift) \u{2014} store in \(dir.path)")
    print("model: \(model.map { "\($0.name) v\($0.version)\($0.builtin ? ", built in" : "")" } ?? "none")")
    try verify(model != nil, "no model package verified")

    try verify(try m.seedCatalogIfEmpty(), "the new store's catalog was not empty")
    try verify(!(try m.seedCatalogIfEmpty()), "the catalog was seeded twice")
    try verify(try h.catalogSize() == UInt64(demoCatalog.count), "catalog holds \(try h.catalogSize()) items")
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
    let result = try h.rankCatalog(options: home)
    let row = m.homeRow(result)
    printRow("Home row \u{2014} \(row.notPersonalizedLabel ?? "for you")", row)
    let ids = row.tiles.map(\.itemId)
    if case .model = result.ranker {} else { throw CheckFailed(message: "home row not personalized: \(result.ranker)") }
    try verify(row.personalized && row.notPersonalizedLabel == nil, "home row not personalized: \(row.rankerLabel)")
    try verify(row.tiles.count == 8, "home row has \(row.tiles.count) items")
    try verify(Set(ids).count == ids.count, "an item twice in \(ids)")
    try verify(row.tiles.allSatisfy { !$0.reason.isEmpty }, "an item without a reason")
    try verify(row.tiles.filter(\.explored).count == 1, "\(row.tiles.filter(\.explored).count) exploration slots")
    try verify(!row.tiles[0].explored, "the first slot is an exploration slot")
    try verify(!ids.contains("s2"), "the disliked item is in the row")
    try verify(!ids.contains("d1") && !ids.contains("o1"), "a completed item is in the row")
    try verify(try m.home(options: home) == row, "same seed, another row")
    print()

    // ---- the privacy screen
    let privacy = try m.privacy(conditions: onTheSofa)
    printPrivacy(privacy)
    try checkPrivacyOnTheSofa(privacy)
    let defaults = privacy.settings
    try verify(
        defaults.personalizationEnabled && !defaults.historyPaused && !defaults.federatedOptIn,
        "unexpected defaults: \(defaults)")
    try verify(defaults.blockedCategories.isEmpty, "categories blocked by default")
    try verify(privacy.categories.count == 8, "\(privacy.categories.count) categories to block")
    try verify(Set(privacy.watched.map(\.itemId)) == Set(history.map(\.itemId)), "watched: \(privacy.watched)")
    try verify(privacy.experiments.isEmpty, "an experiment nobody defined: \(privacy.experiments)")

    // ---- an experiment: the arm is drawn on the device and the row follows it
    let arm = try m.joinExperiment()
    let inArm = m.homeRow(
        try h.rankCatalog(
            options: DemoModel.homeOptions(
                device: .tv, localHour: 21, locale: "en-GB", limit: 8, seed: 7, experiment: DemoModel.homeRowExperiment.id)))
    printRow("Home row in the experiment's \"\(arm)\" arm \u{2014} \(inArm.notPersonalizedLabel ?? "for you")", inArm)
    try verify(inArm.experimentArm == arm, "row in arm \(String(describing: inArm.experimentArm)), device in \(arm)")
    try verify(inArm.personalized == (arm == "model"), "arm \(arm), personalized=\(inArm.personalized)")
    try verify(
        try m.played(experimentId: DemoModel.homeRowExperiment.id, itemId: inArm.tiles[0].itemId) == .logged(position: 0),
        "the first tile's play not logged at position 0")
    let statuses = try m.privacy(conditions: onTheSofa).experiments
    guard statuses.count == 1, let status = statuses.first else {
        throw CheckFailed(message: "experiments on the privacy screen: \(statuses)")
    }
    try verify(status.arm == arm && status.exposures == 1 && status.outcomes == 1, "experiment status \(status)")
    try verify(try m.joinExperiment() == arm, "the arm changed")
    print()
    // Each upload's row says what protected it on its way.
    let modes: [(Aggregation, NoiseMode)] = [(.secure, .distributed), (.secure, .central), (.plain, .central)]
    for (aggregation, noiseMode) in modes {
        let distributed = noiseMode == .distributed
        let entry = LedgerEntry(
            runId: 1, round: 2, atMs: 0, status: .sent, bytesSent: 370_000, normBeforeClip: 2, normAfterClip: 1,
            clipNorm: 1, noiseMultiplier: 1, samplingRate: distributed ? 1 : 0.01, epsilonTotal: 0.5,
            segmentReportEpsilon: 0, aggregation: aggregation, noiseMode: noiseMode,
            noiseShare: distributed ? 0.122 : 0, cohort: distributed ? 100 : 0,
            honestFraction: distributed ? 2.0 / 3.0 : 0, scale: distributed ? 4828 : 0,
            dimension: distributed ? 144_935 : 0, nodeKey: "3f2a9c0b51d7e864", task: .training)
        let row = DemoModel.uploadText(entry, sent: "today")
        print("  ledger row:        \(row)")
        let says = aggregation == .secure ? "only the round's sum" : "saw this update"
        try verify(row.contains(says), "the ledger row does not say how the upload was protected: \(row)")
        let noise = distributed ? "added on this device" : "added by the coordinator"
        try verify(row.contains(noise), "the ledger row does not say where the noise was added: \(row)")
        try verify(!row.contains("coin"), "a round without a coin mentions one: \(row)")
    }
    // A round whose coin left the update out says so.
    let coined = LedgerEntry(
        runId: 1, round: 3, atMs: 0, status: .sent, bytesSent: 370_000, normBeforeClip: 2, normAfterClip: 1,
        clipNorm: 1, noiseMultiplier: 1, samplingRate: 0.7, epsilonTotal: 0.4, segmentReportEpsilon: 0,
        aggregation: .secure, noiseMode: .distributed, included: false, noiseShare: 0.122, cohort: 100,
        honestFraction: 2.0 / 3.0, scale: 4828, dimension: 144_935, nodeKey: "3f2a9c0b51d7e864", task: .training)
    let coinRow = DemoModel.uploadText(coined, sent: "today")
    print("  ledger row:        \(coinRow)")
    try verify(coinRow.contains("coin (p 0.70) left the update out"), "the ledger row does not show the coin: \(coinRow)")
    // A model-evaluation round (the release gate) is listed as one.
    let evaluation = LedgerEntry(
        runId: 1, round: 3, atMs: 0, status: .sent, bytesSent: 9_000, normBeforeClip: 1.2, normAfterClip: 1.2,
        clipNorm: 6.0.squareRoot(), noiseMultiplier: 1, samplingRate: 0.7, epsilonTotal: 0.4, segmentReportEpsilon: 0,
        aggregation: .secure, noiseMode: .distributed, included: false, noiseShare: 0.122, cohort: 100,
        honestFraction: 2.0 / 3.0, scale: 4828, dimension: 6, nodeKey: "3f2a9c0b51d7e864", task: .evaluation)
    let evaluated = DemoModel.uploadText(evaluation, sent: "today")
    print("  ledger row:        \(evaluated)")
    try verify(evaluated.hasPrefix("Evaluation of a candidate model, round 3"), "not an evaluation: \(evaluated)")
    print()

    // ---- personalization off: the labelled fallback
    try m.setPersonalization(false)
    try verify(!(try h.settings().personalizationEnabled), "personalization still on")
    let fallback = try m.home(options: home)
    printRow("Home row \u{2014} \(fallback.notPersonalizedLabel ?? "?")", fallback)
    try verify(
        fallback.notPersonalizedLabel == "NOT PERSONALIZED (personalization is off: popular items)",
        "label \(String(describing: fallback.notPersonalizedLabel))")
    try verify(try h.rankCatalog(options: home).ranker == .fallback(why: .personalizationOff), "ranker \(fallback.rankerLabel)")
    try verify(!fallback.personalized, "fallback row says personalized")
    try verify(!fallback.tiles.isEmpty && fallback.tiles.allSatisfy { !$0.reason.isEmpty }, "empty fallback row")
    try verify(!fallback.tiles.contains { $0.itemId == "s2" }, "the disliked item is in the fallback row")
    try m.setPersonalization(true)
    try verify(try h.settings().personalizationEnabled, "personalization still off")
    print()

    // ---- block a category of the top item
    let blocked = m.categories(of: ids[0])[0]
    try m.setBlocked(blocked, true)
    try m.setBlocked(blocked, true)
    try verify(try h.settings().blockedCategories == [blocked], "blocked: \(try h.settings().blockedCategories)")
    let without = try m.home(options: home)
    let gone = ids.filter { m.categories(of: $0).contains(blocked) }
    printRow("Home row \u{2014} with \"\(blocked)\" blocked (gone: \(gone.map(m.title).joined(separator: ", ")))", without)
    try verify(!gone.isEmpty, "nothing to block")
    try verify(without.personalized, "ranker \(without.rankerLabel)")
    try verify(!without.tiles.isEmpty, "empty row after blocking")
    try verify(!without.tiles.contains { m.categories(of: $0.itemId).contains(blocked) }, "a \(blocked) item is still ranked")
    print()
    let privacyBlocked = try m.privacy(conditions: onTheSofa)
    printPrivacy(privacyBlocked)
    try checkPrivacyOnTheSofa(privacyBlocked)
    print()

    // ---- history paused: a tap on a tile stores nothing
    try m.setHistoryPaused(true)
    let paused = try m.watch("d2", context: tvEvening, nowMs: now)
    try m.setHistoryPaused(false)
    try verify(paused == .paused, "recorded while paused: \(paused)")
    try verify(try h.eventCount() == UInt64(history.count), "an event was stored while history was paused")

    // ---- export, forget one item, delete all
    let json = try m.exportJson()
    let document = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    let exportedEvents = (document?["events"] as? [Any])?.count ?? -1
    print("export: \(json.utf8.count) bytes of JSON, \(exportedEvents) events")
    try verify(document?["format"] as? String == "hearth.export", "not an export document")
    try verify(exportedEvents == Int(try h.eventCount()), "export has \(exportedEvents) events, store \(try h.eventCount())")

    let before = try h.eventCount()
    let forgotten = try m.forget("d1")
    print("forget \"\(m.title("d1"))\": \(forgotten) events deleted, \(before) -> \(try h.eventCount())")
    try verify(forgotten == 2, "forgot \(forgotten) events")
    try verify(try h.eventCount() == before - forgotten, "\(try h.eventCount()) events after forgetting")
    try verify(!(try h.recentEvents(limit: 100)).contains { $0.itemId == "d1" }, "an event of the forgotten item is left")
    try verify(!(try m.privacy(conditions: onTheSofa)).watched.contains { $0.itemId == "d1" }, "the forgotten item is still listed")

    let beforeDelete = try h.eventCount()
    try m.deleteAll()
    print("delete all: events \(beforeDelete) -> \(try h.eventCount()), catalog \(try h.catalogSize()) items")
    try verify(try h.eventCount() == 0, "\(try h.eventCount()) events after delete all")
    try verify(try h.catalogSize() == 0, "\(try h.catalogSize()) catalog items after delete all")
    try verify(try h.settings().blockedCategories.isEmpty, "settings survived delete all")
    try verify(try h.integrityCheck() == "ok", "integrity check after delete all")
    print()

    // ---- the background task's call, over the app's URLSession transport
    let server = try LocalServer()
    defer { server.stop() }
    try checkTransport(server)
    try verify(try m.seedCatalogIfEmpty(), "the catalog was not seeded again after delete all")
    let transport = Recording(URLSessionFleetTransport(baseURL: server.url, allowCleartext: true)!)
    let notOptedIn = try m.participate(transport: transport, conditions: ready)
    print("participate, not opted in: \(DemoModel.describe(notOptedIn))")
    try verify(notOptedIn == .notEligible(reasons: [.notOptedIn, .tooFewNewExamples(have: 0, need: 10)]), "outcome \(notOptedIn)")
    try verify(server.fleetRequests.isEmpty, "the coordinator was contacted without consent")

    try m.setFederatedOptIn(true)
    let plays = demoCatalog.prefix(12).enumerated().map { i, item in event(item.id, .play, minutesAgo: 60 - Int64(i), now: now) }
    try verify(try h.recordBatch(events: plays) == .stored(count: UInt32(plays.count)), "recordBatch did not store \(plays.count)")
    let readyState = try m.privacy(conditions: ready)
    print("opted in, \(readyState.eventsHeld) plays, charging on Wi-Fi: next round \(readyState.nextRoundText)")
    try verify(readyState.nextRound == .eligible, "not eligible: \(readyState.nextRoundText)")

    var refused: FederatedFailure?
    do {
        let outcome = try m.participate(transport: transport, conditions: ready)
        throw CheckFailed(message: "a refusing coordinator gave \(outcome)")
    } catch HearthError.Federated(let kind, _) {
        refused = kind
    }
    let fleet = server.fleetRequests
    var paths: [String] = []
    for p in fleet.map(\.path) where !paths.contains(p) { paths.append(p) }
    let ledger = try m.privacy(conditions: ready).ledger
    print(
        "participate via URLSession, coordinator answers 403: \(refused.map { "\($0)" } ?? "no error") "
            + "after \(fleet.count) request(s) to \(paths.joined(separator: ", ")); uploads in the ledger: \(ledger.entries.count)")
    try verify(refused == .rejected, "outcome \(String(describing: refused))")
    try verify(!paths.isEmpty && paths.allSatisfy { $0.hasPrefix("/v1/fleet/") }, "requests to \(paths)")
    try verify(fleet.allSatisfy { $0.headers["content-type"] == "application/protobuf" }, "a request without content-type")
    let names = transport.headerNames
    try verify(
        !names.isEmpty && fleet.allSatisfy { r in names.allSatisfy { r.headers[$0] != nil } },
        "Hearth's headers \(names) did not all arrive")
    try verify(ledger.entries.isEmpty && ledger.epsilonSpent == 0, "an upload is in the ledger after a refusal")
    try h.close()

    // ---- the Keychain item is gone (a new key): the store is reset, not left unopenable
    let reopened = try DemoModel.openOrReset(config: config, keys: DemoKeys(first: 0x10))
    defer { try? reopened.hearth.close() }
    print(
        "opened with another key: \(reopened.wasReset ? "old store destroyed, new one opened" : "opened"); "
            + "events \(try reopened.hearth.eventCount())")
    try verify(reopened.wasReset, "a store opened with the wrong key")
    try verify(try reopened.hearth.eventCount() == 0 && reopened.hearth.catalogSize() == 0, "the reset store is not empty")
}

/// The phone on the commute, 8 am.
let phoneMorning = EventContext(device: .phone, localHour: 8, locale: "en-GB")

/// Your screens: the person's phone and TV, two stores, pair (the phone shows
/// a QR code, both show six digits) and sync through the app's backend; the
/// TV's home row then comes from what was watched on the phone. What the
/// backend holds is read as its owner would.
func runScreens(_ root: URL, now: Int64) throws {
    let server = try LocalServer()
    defer { server.stop() }
    guard let transport = URLSessionSyncTransport(
        baseURL: server.url.appendingPathComponent("sync"), token: LocalServer.syncToken, allowCleartext: true)
    else { throw CheckFailed(message: "no sync transport for \(server.url)") }
    func open(_ name: String, _ key: UInt8) throws -> Hearth {
        let config = HearthConfig(dataDir: root.appendingPathComponent(name).path, durability: .normal)
        return try DemoModel.openOrReset(config: config, keys: DemoKeys(first: key)).hearth
    }
    let phoneStore = try open("phone", 0x20)
    let tvStore = try open("tv", 0x60)
    defer {
        try? phoneStore.close()
        try? tvStore.close()
    }
    let phone = DemoModel(hearth: phoneStore)
    let tv = DemoModel(hearth: tvStore)
    _ = try phone.seedCatalogIfEmpty()
    _ = try tv.seedCatalogIfEmpty()
    let watched: [(String, EventKind)] = [("d1", .complete), ("m1", .play), ("m2", .complete), ("h2", .play)]
    let history = watched.enumerated().map { i, w in
        let e = event(w.0, w.1, minutesAgo: 2 * 24 * 60 - 60 * Int64(i), now: now)
        return Event(
            itemId: e.itemId, kind: e.kind, timestampMs: e.timestampMs, positionMs: e.positionMs, durationMs: e.durationMs,
            context: phoneMorning)
    }
    try verify(try phoneStore.recordBatch(events: history) == .stored(count: UInt32(history.count)), "the phone's history was not stored")
    print(
        "Your screens: a phone with \(history.count) events (\(watched.map { phone.title($0.0) }.joined(separator: ", "))), "
            + "a new TV with none")
    let before = try tv.home(options: home)
    printRow("TV home row before pairing \u{2014} no history on the TV yet", before)
    try verify(before.tiles.allSatisfy { !$0.reason.hasPrefix("Because you watched") }, "a TV with no history explains a tile by it")
    try verify(try tv.screens().group == nil, "the TV is in a group before pairing")

    // Pairing: the phone shows a QR code, the TV scans it; both show six digits.
    let group = try phone.startGroupIfNone()
    let qr = DemoModel.qrText(try phone.invite())
    guard let scanned = DemoModel.fromQrText(qr) else { throw CheckFailed(message: "not a QR text: \(qr)") }
    let answer = try tv.answerInvitation(scanned)
    let reply = try phone.invitationAnswered(answer)
    let onTv = try tv.digits(for: reply.message)
    print("pairing: the phone shows a QR code (\(qr.count) characters); phone shows \(reply.digits), TV shows \(onTv)")
    try verify(reply.digits == onTv && onTv.count == 6, "the screens show \(reply.digits) and \(onTv)")
    guard let welcome = try phone.confirmInvitation(digitsMatch: true) else { throw CheckFailed(message: "no welcome") }
    let joined = try tv.finishJoining(welcome, digitsMatch: true)
    try verify(joined.groupId == group.groupId, "the TV joined another group")

    let sent = try phone.syncNow(transport)
    print("phone sync: \(DemoModel.describe(sent))")
    let got = try tv.syncNow(transport)
    print("TV sync: \(DemoModel.describe(got))")
    try verify(sent.complete && sent.eventsSent == UInt64(history.count), "phone sync \(sent)")
    try verify(got.complete && got.eventsReceived == UInt64(history.count), "TV sync \(got)")
    let after = try tv.home(options: home)
    printRow("TV home row after sync \u{2014} for you, from what was watched on the phone", after)
    try verify(after.personalized && after != before, "the TV's row did not change with the phone's history")
    let because = Set(watched.map { "Because you watched \(tv.title($0.0))" })
    try verify(after.tiles.contains { because.contains($0.reason) }, "no tile on the TV is explained by what was watched on the phone")
    try verify(!after.tiles.contains { $0.itemId == "d1" || $0.itemId == "m2" }, "an item completed on the phone is on the TV's row")
    try verify(after == (try phone.home(options: home)), "the TV ranks the same history differently from the phone")

    // The backend's owner: names that say nothing, sizes from the padding
    // buckets, no item id, field name, locale or setting in any blob.
    let held = server.blobs
    let sizes = Set([1, 4, 16, 64, 256].map { 17 + $0 * 1024 + 16 })
    let words = watched.map { "\"\($0.0)\"" } + ["item_id", "timestamp_ms", "en-GB", "blocked"]
    let name = try NSRegularExpression(pattern: "^[0-9a-f]{16}-[0-9]{10}$")
    print(
        "the backend holds \(held.count) blobs, \(held.values.reduce(0) { $0 + $1.count }) bytes "
            + "(sizes \(Set(held.values.map(\.count)).sorted())), names like \(held.keys.sorted().first ?? "none")")
    for (n, blob) in held {
        try verify(name.firstMatch(in: n, range: NSRange(n.startIndex..., in: n)) != nil, "blob name \(n)")
        try verify(sizes.contains(blob.count), "blob \(n) of \(blob.count) bytes, outside the padding buckets")
        for w in words { try verify(blob.range(of: Data(w.utf8)) == nil, "blob \(n) holds \(w)") }
    }

    // Forgetting on the TV forgets on the phone.
    let forgotten = try tv.forget("m1")
    _ = try tv.syncNow(transport)
    let back = try phone.syncNow(transport)
    print("forget \"\(tv.title("m1"))\" on the TV: \(forgotten) event(s) there; phone sync: \(DemoModel.describe(back))")
    try verify(back.eventsRemoved == 1, "the phone did not forget: \(back)")
    try verify(try phoneStore.recentEvents(limit: 100).allSatisfy { $0.itemId != "m1" }, "the phone still holds the forgotten item")

    let screens = try tv.screens()
    let listed = screens.devices.map { ($0.thisDevice ? "this TV " : "phone ") + $0.deviceId }.joined(separator: ", ")
    print("your screens (on the TV): \(screens.statusText); \(listed)")
    try verify(screens.devices.count == 2 && screens.devices.filter(\.thisDevice).count == 1, "screens \(screens.devices)")
    try verify(screens.statusText == "2 screens; last sync complete", screens.statusText)
}

let root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-console-\(UUID().uuidString)")
var status: Int32 = 0
do {
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    try run(root.appendingPathComponent("store"))
    print()
    try runScreens(root, now: Int64(Date().timeIntervalSince1970 * 1000))
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

import Foundation
import Hearth
import XCTest

/// An app's HTTP stack that records what Hearth asks it to send and fails
/// with `failure`.
final class FailingTransport: FleetTransport, @unchecked Sendable {
    let failure: Error
    private let lock = NSLock()
    private var stored: [(path: String, headers: [HttpHeader], body: Data)] = []
    var requests: [(path: String, headers: [HttpHeader], body: Data)] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }

    init(_ failure: Error) { self.failure = failure }

    func post(path: String, headers: [HttpHeader], body: Data, timeoutMs: UInt64) throws -> Data {
        lock.lock()
        stored.append((path, headers, body))
        lock.unlock()
        throw failure
    }
}

struct URLSessionExploded: Error {}

/// Cancels the round from another thread during its first call, then times out.
final class CancellingTransport: FleetTransport, @unchecked Sendable {
    let hearth: Hearth
    private let lock = NSLock()
    private var count = 0
    var calls: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }

    init(_ hearth: Hearth) { self.hearth = hearth }

    func post(path: String, headers: [HttpHeader], body: Data, timeoutMs: UInt64) throws -> Data {
        lock.lock()
        count += 1
        lock.unlock()
        let done = DispatchSemaphore(value: 0)
        let hearth = self.hearth
        Thread {
            hearth.cancelParticipation()
            done.signal()
        }.start()
        done.wait()
        throw TransportFailure.Timeout
    }
}

/// Federated learning through the generated Swift: federatedEligibility,
/// participate, participateVia with an app's own transport (FleetTransport
/// and each TransportFailure), privacyLedger, and HearthError.Federated.
final class FederatedTests: XCTestCase {
    var root: URL!
    var dir: URL { root.appendingPathComponent("store") }
    let ready = DeviceConditions(charging: true, unmeteredNetwork: true, idle: true)

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-fed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// A store with `plays` completions of items whose ids must never leave it.
    func device(plays: Int = 12, at dir: URL? = nil, key: Data = keyA) throws -> Hearth {
        let c = HearthConfig(
            dataDir: (dir ?? self.dir).path, durability: .normal, federatedEpsilonBudget: 10.0, federatedMinNewExamples: 10)
        let h = try Hearth.open(config: c, keys: FixedKeys(key))
        try h.upsertCatalog(items: (0..<30).map { item("private-item-\($0)", "Private Title \($0)", ["drama"]) })
        _ = try h.recordBatch(
            events: (0..<plays).map { event("private-item-\($0)", .complete, at: now - 3_600_000 + Int64($0)) })
        return h
    }

    func federatedKind(_ body: () throws -> ParticipationOutcome, file: StaticString = #filePath, line: UInt = #line)
        -> FederatedFailure?
    {
        guard case .Federated(let kind, let reason)? = hearthError(file: file, line: line, body) else {
            XCTFail("expected HearthError.Federated", file: file, line: line)
            return nil
        }
        XCTAssertFalse(reason.isEmpty, file: file, line: line)
        return kind
    }

    func testEligibilityNamesEveryReasonAndConsentComesFirst() throws {
        let h = try device(plays: 4)
        let none = DeviceConditions(charging: false, unmeteredNetwork: false, idle: false)
        XCTAssertEqual(
            try h.federatedEligibility(conditions: none),
            .notEligible(reasons: [.notOptedIn, .notCharging, .meteredNetwork, .notIdle, .tooFewNewExamples(have: 4, need: 10)]))
        try h.setFederatedOptIn(optIn: true)
        _ = try h.recordBatch(events: (4..<12).map { event("private-item-\($0)", .play) })
        XCTAssertEqual(try h.federatedEligibility(conditions: ready), .eligible)
        let metered = DeviceConditions(charging: true, unmeteredNetwork: false, idle: true)
        XCTAssertEqual(try h.federatedEligibility(conditions: metered), .notEligible(reasons: [.meteredNetwork]))
    }

    func testADeviceWithoutConsentContactsNobody() throws {
        let h = try device()
        let transport = FailingTransport(TransportFailure.Status(code: 503))
        XCTAssertEqual(try h.participateVia(transport: transport, conditions: ready), .notEligible(reasons: [.notOptedIn]))
        XCTAssertTrue(transport.requests.isEmpty)
        XCTAssertEqual(
            try h.participate(coordinatorUrl: "http://127.0.0.1:9", conditions: ready), .notEligible(reasons: [.notOptedIn]))
    }

    func testTheLedgerIsEmptyThenAnImportedOneCountsAgainstTheBudget() throws {
        let h = try device()
        let ledger = try h.privacyLedger()
        XCTAssertEqual(ledger.entries, [])
        XCTAssertEqual(ledger.epsilonSpent, 0)
        XCTAssertEqual(ledger.delta, 1e-6)
        XCTAssertEqual(ledger.epsilonBudget, 10)
        let doc = try h.exportJson()
        XCTAssertTrue(doc.contains("\"privacy_ledger\": []"))
        let entry = """
            {"run_id": 7, "round": 1, "at_ms": \(now - dayMs), "status": "Sent", "bytes_sent": 600000,
             "norm_before_clip": 2.5, "norm_after_clip": 1.0, "clip_norm": 1.0, "noise_multiplier": 0.5,
             "sampling_rate": 1.0, "epsilon_total": 0.0}
            """
        let other = try device(at: root.appendingPathComponent("other"), key: keyB)
        _ = try other.importJson(document: doc.replacingOccurrences(of: "\"privacy_ledger\": []", with: "\"privacy_ledger\": [\(entry)]"))
        try other.setFederatedOptIn(optIn: true)
        let imported = try other.privacyLedger()
        XCTAssertEqual(imported.entries.count, 1)
        XCTAssertEqual(imported.entries.first?.status, .sent)
        XCTAssertEqual(imported.entries.first?.runId, 7)
        // An entry from before secure aggregation reads as a plain upload.
        XCTAssertEqual(imported.entries.first?.aggregation, .plain)
        // And from before distributed noise, as noise the coordinator added.
        XCTAssertEqual(imported.entries.first?.noiseMode, .central)
        XCTAssertEqual(imported.entries.first?.task, .training)
        XCTAssertGreaterThan(imported.epsilonSpent, 10, "one round at z = 0.5, q = 1 spends more than 10")
        guard case .notEligible(let reasons) = try other.federatedEligibility(conditions: ready) else {
            return XCTFail("expected the budget to be spent")
        }
        XCTAssertTrue(reasons.contains { if case .budgetSpent(_, let budget) = $0 { return budget == 10 } else { return false } })
    }

    func testTransportFailuresBecomeTypedErrorsAndOnlyTheNodeKeyLeaves() throws {
        let h = try device()
        try h.setFederatedOptIn(optIn: true)
        let cases: [(Error, FederatedFailure)] = [
            (TransportFailure.Status(code: 403), .rejected),
            (TransportFailure.Status(code: 500), .http),
            // A Retry-After (an hour) longer than the call's bound: fails at once.
            (TransportFailure.Throttled(code: 503, retryAfterMs: 3_600_000), .http),
            (TransportFailure.TooLarge, .tooLarge),
            (TransportFailure.Timeout, .timeout),
            (TransportFailure.Io(reason: "connection reset"), .network),
            // An error the app did not mean to throw.
            (URLSessionExploded(), .network),
        ]
        for (failure, kind) in cases {
            let transport = FailingTransport(failure)
            XCTAssertEqual(federatedKind { try h.participateVia(transport: transport, conditions: ready) }, kind, "\(failure)")
            XCTAssertFalse(transport.requests.isEmpty)
            for request in transport.requests {
                XCTAssertEqual(request.path, "/v1/fleet/activate-node")
                XCTAssertNotNil(request.body.range(of: Data("-----BEGIN PUBLIC KEY-----".utf8)))
                XCTAssertNil(request.body.range(of: Data("private-item".utf8)))
                XCTAssertNil(request.body.range(of: Data("Private Title".utf8)))
                XCTAssertEqual(
                    Set(request.headers.map(\.name)), ["flwr-public-key", "flwr-signature", "flwr-timestamp"])
            }
        }
        XCTAssertEqual(try h.privacyLedger().entries, [], "nothing was uploaded")
        XCTAssertEqual(try h.eventCount(), 12, "the store is unharmed")
    }

    func testAnAppCancelsARoundFromAnotherThread() throws {
        let h = try device()
        try h.setFederatedOptIn(optIn: true)
        // As a BGTask's expiration handler would: the round is cancelled
        // while the transport's call is in flight; Hearth stops instead of
        // retrying.
        let transport = CancellingTransport(h)
        let started = Date()
        XCTAssertEqual(federatedKind { try h.participateVia(transport: transport, conditions: ready) }, .cancelled)
        XCTAssertEqual(transport.calls, 1, "no retry after the cancel")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
        XCTAssertEqual(try h.privacyLedger().entries, [])
    }

    func testACoordinatorUrlMustBePlainHttp() throws {
        let h = try device()
        try h.setFederatedOptIn(optIn: true)
        for url in ["https://coordinator.example", "", "coordinator:9092"] {
            XCTAssertEqual(invalidField { try h.participate(coordinatorUrl: url, conditions: ready) }, "coordinator_url")
        }
        // Port 9 (discard) is closed on the test machine.
        XCTAssertEqual(federatedKind { try h.participate(coordinatorUrl: "http://127.0.0.1:9", conditions: ready) }, .network)
    }
}

import Foundation
import Hearth
import XCTest

/// The person's own backend, in memory, as an app implements SyncTransport
/// over URLSession. `failWith` makes every call throw (or only the calls
/// named in `failOnly`), as a backend that is down or a URLSession task that
/// fails does.
final class MemoryBackend: SyncTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String: Data] = [:]
    var failWith: Error?
    var failOnly: Set<String>?

    var blobs: [String: Data] {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            defer { lock.unlock() }
            stored = newValue
        }
    }

    private func call(_ op: String) throws {
        guard let failure = failWith else { return }
        if failOnly?.contains(op) ?? true { throw failure }
    }

    func put(name: String, blob: Data) throws {
        try call("put")
        blobs[name] = blob
    }

    func list() throws -> [SyncBlob] {
        try call("list")
        return blobs.map { SyncBlob(name: $0.key, size: UInt64($0.value.count)) }
    }

    func get(name: String) throws -> Data? {
        try call("get")
        return blobs[name]
    }

    func delete(name: String) throws {
        try call("delete")
        blobs[name] = nil
    }
}

struct URLSessionFailed: Error {}

/// Sync through the generated Swift: pairing (createSyncGroup, inviteDevice,
/// joinDevice, inviteAnswer, joinReveal, inviteConfirm, joinFinish), sync
/// over an app's SyncTransport (each SyncTransportError), syncStatus,
/// syncDevices, removeSyncDevice, deleteEverywhere and leaveSyncGroup; and
/// the backend's bytes read as the backend's owner would.
final class SyncTests: XCTestCase {
    var root: URL!
    let catalog = (0..<12).map { item("private-item-\($0)", "Private Title \($0)", ["horror-films"]) }
    let recordName = try! NSRegularExpression(pattern: "^[0-9a-f]{16}-[0-9]{10}$")

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-sync-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    func device(_ name: String, key: Data) throws -> Hearth {
        let h = try openStore(root.appendingPathComponent(name), key: key)
        try h.upsertCatalog(items: catalog)
        return h
    }

    func isRecordName(_ name: String) -> Bool {
        recordName.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
    }

    /// Pairs `joiner` into `inviter`'s group, the person confirming the digits on both screens.
    @discardableResult
    func pair(_ inviter: Hearth, _ joiner: Hearth) throws -> SyncGroupInfo {
        let answer = try joiner.joinDevice(invitation: try inviter.inviteDevice())
        let reply = try inviter.inviteAnswer(answer: answer)
        let onJoiner = try joiner.joinReveal(reveal: reply.message)
        XCTAssertEqual(reply.digits, onJoiner, "both screens show the same digits")
        XCTAssertTrue(onJoiner.count == 6 && onJoiner.allSatisfy(\.isNumber), onJoiner)
        let welcome = try XCTUnwrap(try inviter.inviteConfirm(digitsMatch: true))
        return try joiner.joinFinish(welcome: welcome, digitsMatch: true)
    }

    @discardableResult
    func syncOk(_ h: Hearth, _ backend: SyncTransport, file: StaticString = #filePath, line: UInt = #line) throws
        -> SyncReport
    {
        let report = try h.sync(transport: backend, options: SyncOptions())
        XCTAssertTrue(
            report.complete && report.refused.isEmpty && report.transportError == nil, "\(report)", file: file,
            line: line)
        return report
    }

    func items(_ h: Hearth) throws -> Set<String> { Set(try h.recentEvents(limit: 1000).map(\.itemId)) }

    func testAPairedTvTakesThePhonesHistorySettingsAndForgets() throws {
        let phone = try device("phone", key: keyA)
        let tv = try device("tv", key: keyB)
        XCTAssertNil(try phone.syncGroup())
        XCTAssertEqual(
            try phone.syncStatus(),
            SyncStatus(group: nil, keyEpoch: 0, devices: 0, recordsWaiting: 0, lastSyncMs: nil, lastSyncComplete: false))
        let group = try phone.createSyncGroup()
        XCTAssertEqual(try phone.syncGroup(), group)
        let joined = try pair(phone, tv)
        XCTAssertEqual(joined.groupId, group.groupId)
        XCTAssertNotEqual(joined.deviceId, group.deviceId)

        _ = try phone.recordBatch(events: (0..<8).map { event("private-item-\($0)", .complete, at: now - 3_600_000 + Int64($0)) })
        try phone.setBlockedCategories(categories: ["horror-films"])
        let backend = MemoryBackend()
        let sent = try syncOk(phone, backend)
        XCTAssertEqual(sent.eventsSent, 8)
        XCTAssertGreaterThanOrEqual(sent.recordsSent, 1)
        XCTAssertEqual(try syncOk(tv, backend).eventsReceived, 8)
        XCTAssertEqual(try tv.eventCount(), 8)
        XCTAssertEqual(try tv.settings().blockedCategories, ["horror-films"])

        // Forgetting on the TV forgets on the phone too.
        XCTAssertEqual(try tv.forgetItem(itemId: "private-item-0"), 1)
        try syncOk(tv, backend)
        XCTAssertEqual(try syncOk(phone, backend).eventsRemoved, 1)
        XCTAssertFalse(try items(phone).contains("private-item-0"))
        XCTAssertEqual(try items(phone), try items(tv))

        let status = try tv.syncStatus()
        XCTAssertEqual(status.group, joined)
        XCTAssertEqual(status.devices, 2)
        XCTAssertEqual(status.keyEpoch, 1)
        XCTAssertEqual(status.recordsWaiting, 0)
        XCTAssertTrue(status.lastSyncComplete && status.lastSyncMs != nil)
        let devices = try tv.syncDevices()
        XCTAssertEqual(Set(devices.map(\.deviceId)), [group.deviceId, joined.deviceId])
        XCTAssertEqual(devices.filter(\.thisDevice).map(\.deviceId), [joined.deviceId])
        XCTAssertTrue(devices.allSatisfy { !$0.removed })

        // What the backend's owner holds: names that say nothing, sizes from
        // the padding buckets only, and none of the history's or the
        // settings' words.
        let sizes = [1, 4, 16, 64, 256].map { 17 + $0 * 1024 + 16 }
        XCTAssertFalse(backend.blobs.isEmpty)
        for (name, blob) in backend.blobs {
            XCTAssertTrue(isRecordName(name), name)
            XCTAssertTrue(sizes.contains(blob.count), "\(name): \(blob.count) bytes")
            for word in ["private-item", "Private Title", "horror-films", "COMPLETE", "blocked", group.groupId] {
                XCTAssertFalse(blob.contains(word), "\(name) holds \"\(word)\"")
            }
        }
    }

    func testABackendThatFailsStopsTheSyncAndNothingIsLost() throws {
        let phone = try device("phone", key: keyA)
        let tv = try device("tv", key: keyB)
        _ = try phone.createSyncGroup()
        try pair(phone, tv)
        let backend = MemoryBackend()
        try syncOk(phone, backend)
        _ = try phone.recordBatch(events: (0..<5).map { event("private-item-\($0)", at: now - 600_000 + Int64($0)) })
        let failures: [Error] = [
            SyncTransportError.Unavailable(reason: "no network"),
            SyncTransportError.Refused(reason: "quota exceeded"),
            URLSessionFailed(),
        ]
        for failure in failures {
            backend.failWith = failure
            let report = try phone.sync(transport: backend, options: SyncOptions(timeBudgetMs: 5_000))
            XCTAssertFalse(report.complete)
            let got = try XCTUnwrap(report.transportError)
            if let own = failure as? SyncTransportError {
                // The app's own error, as it threw it.
                XCTAssertEqual(got, own)
            } else {
                // Anything else the app's stack throws: unavailable.
                guard case .Unavailable = got else { return XCTFail("expected Unavailable, got \(got)") }
            }
        }
        XCTAssertEqual(try phone.syncStatus().recordsWaiting, 0, "nothing is written before the backend answered")
        // A backend that lists but takes nothing: the records written wait,
        // sealed in the store, and go out once the backend is back.
        backend.failOnly = ["put"]
        XCTAssertFalse(try phone.sync(transport: backend, options: SyncOptions()).complete)
        XCTAssertGreaterThanOrEqual(try phone.syncStatus().recordsWaiting, 1)
        XCTAssertFalse(try phone.syncStatus().lastSyncComplete)
        backend.failWith = nil
        backend.failOnly = nil
        XCTAssertEqual(try syncOk(phone, backend).eventsSent, 5)
        XCTAssertEqual(try phone.syncStatus().recordsWaiting, 0)
        XCTAssertEqual(try syncOk(tv, backend).eventsReceived, 5)

        // Deleting everywhere on a backend that is down deletes nothing.
        backend.failWith = SyncTransportError.Unavailable(reason: "no network")
        guard case .Io? = hearthError({ try tv.deleteEverywhere(transport: backend) }) else { return XCTFail("expected Io") }
        XCTAssertEqual(try tv.eventCount(), 5)
    }

    func testATamperedRecordIsRefusedAndChangesNothing() throws {
        let phone = try device("phone", key: keyA)
        let tv = try device("tv", key: keyB)
        _ = try phone.createSyncGroup()
        try pair(phone, tv)
        let backend = MemoryBackend()
        _ = try phone.record(event: event("private-item-3"))
        try syncOk(phone, backend)
        let name = try XCTUnwrap(backend.blobs.keys.sorted().first)
        var blob = try XCTUnwrap(backend.blobs[name])
        blob[blob.count - 20] ^= 1
        backend.blobs[name] = blob
        let report = try tv.sync(transport: backend, options: SyncOptions())
        XCTAssertEqual(report.refused.map(\.name), [name])
        XCTAssertEqual(report.refused.first?.kind, .doesNotOpen)
        XCTAssertEqual(try tv.eventCount(), 0)
        // A store of another person, paired with no one, cannot use them.
        let stranger = try device("stranger", key: keyB)
        XCTAssertEqual(invalidField({ try stranger.sync(transport: backend, options: SyncOptions()) }), "sync group")
        _ = try stranger.createSyncGroup()
        XCTAssertTrue(try stranger.sync(transport: backend, options: SyncOptions()).refused.allSatisfy { $0.kind == .doesNotOpen })
        XCTAssertEqual(try stranger.eventCount(), 0)
    }

    func testRemovingADeviceShutsItOutAndDeleteEverywhereReachesEveryDevice() throws {
        let phone = try device("phone", key: keyA)
        let tv = try device("tv", key: keyB)
        let tablet = try device("tablet", key: keyB)
        _ = try phone.createSyncGroup()
        try pair(phone, tv)
        let lost = try pair(phone, tablet)
        let backend = MemoryBackend()
        _ = try phone.record(event: event("private-item-1"))
        for d in [phone, tv, tablet, phone] { try syncOk(d, backend) }
        XCTAssertEqual(try tablet.eventCount(), 1)
        XCTAssertEqual(try phone.syncDevices().count, 3)
        XCTAssertEqual(
            invalidField({ try phone.removeSyncDevice(transport: backend, deviceId: "0000000000000000") }), "device_id")
        let removal = try phone.removeSyncDevice(transport: backend, deviceId: lost.deviceId)
        XCTAssertTrue(removal.complete, "\(removal)")
        XCTAssertEqual(try phone.syncStatus().keyEpoch, 2)
        XCTAssertEqual(try phone.syncDevices().first { $0.deviceId == lost.deviceId }?.removed, true)
        // The tablet learns it was removed and leaves; what is written
        // afterwards reaches the TV only.
        XCTAssertTrue(try tablet.sync(transport: backend, options: SyncOptions()).removedFromGroup)
        XCTAssertNil(try tablet.syncGroup())
        _ = try phone.record(event: event("private-item-7"))
        try syncOk(phone, backend)
        XCTAssertEqual(try syncOk(tv, backend).eventsReceived, 1)
        XCTAssertEqual(try tv.eventCount(), 2)
        XCTAssertEqual(try tablet.eventCount(), 1)

        // Deleting everywhere from the TV: the phone deletes on its next sync.
        try tv.deleteEverywhere(transport: backend)
        XCTAssertEqual(try tv.eventCount(), 0)
        XCTAssertNil(try tv.syncGroup())
        XCTAssertTrue(try phone.sync(transport: backend, options: SyncOptions()).wiped)
        XCTAssertEqual(try phone.eventCount(), 0)
        XCTAssertNil(try phone.syncGroup())
        XCTAssertTrue(backend.blobs.keys.allSatisfy { !isRecordName($0) }, "\(backend.blobs.keys)")
    }

    func testPairingEndsWithoutThePersonsConfirmationAndLeavingForgetsTheGroup() throws {
        let phone = try device("phone", key: keyA)
        let tv = try device("tv", key: keyB)
        XCTAssertEqual(invalidField({ try phone.inviteDevice() }), "sync group")
        _ = try phone.createSyncGroup()
        XCTAssertEqual(invalidField({ try phone.createSyncGroup() }), "sync group")
        // The digits differ on the two screens: no welcome.
        let reply = try phone.inviteAnswer(answer: try tv.joinDevice(invitation: try phone.inviteDevice()))
        _ = try tv.joinReveal(reveal: reply.message)
        XCTAssertNil(try phone.inviteConfirm(digitsMatch: false))
        XCTAssertEqual(invalidField({ try tv.joinFinish(welcome: Data(count: 40), digitsMatch: true) }), "pairing")
        XCTAssertNil(try tv.syncGroup())
        // Garbage where an invitation should be.
        XCTAssertEqual(invalidField({ try tv.joinDevice(invitation: Data("not an invitation".utf8)) }), "pairing")
        try pair(phone, tv)
        XCTAssertEqual(invalidField({ try tv.joinDevice(invitation: try phone.inviteDevice()) }), "sync group")
        XCTAssertTrue(try tv.leaveSyncGroup())
        XCTAssertFalse(try tv.leaveSyncGroup())
        XCTAssertNil(try tv.syncGroup())
    }
}

import Foundation
import Hearth
import XCTest

/// The whole public API of libhearth through the generated Swift (the same
/// code an iOS or tvOS app compiles; only the linking of libhearth differs).
final class HearthTests: XCTestCase {
    var root: URL!
    var dir: URL { root.appendingPathComponent("store") }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        // The logger is process-wide: leave a harmless one for the next test.
        try setLogger(logger: QuietLogger(), maxLevel: .error)
        try? FileManager.default.removeItem(at: root)
    }

    func testRecordsCatalogAndProfile() throws {
        let h = try openStore(dir)
        let catalog = [
            item("m1", "The Silent Harbor", ["drama"]),
            item("m2", "Goal Rush", ["sports", "live"]),
            item("m3", "Night Shift", ["drama", "crime"]),
        ]
        try h.upsertCatalog(items: catalog)
        XCTAssertEqual(try h.catalogSize(), 3)
        XCTAssertEqual(try h.catalogItem(itemId: "m2"), catalog[1])
        XCTAssertNil(try h.catalogItem(itemId: "unknown"))

        XCTAssertEqual(try h.record(event: event("m1", .play, at: now - 3_600_000)), .stored(count: 1))
        let batch = [
            event("m1", .complete, at: now - 3_000_000),
            event("m2", .skip, at: now - 2_000_000, hour: 8, device: .phone),
            event("m3", .like, at: now - 1_000_000),
        ]
        XCTAssertEqual(try h.recordBatch(events: batch), .stored(count: 3))
        XCTAssertEqual(try h.recordBatch(events: []), .stored(count: 0))
        XCTAssertEqual(try h.eventCount(), 4)
        XCTAssertEqual(try h.recentEvents(limit: 2), [batch[2], batch[1]])  // newest first, every field back
        XCTAssertEqual(try h.recentEvents(limit: 100).count, 4)

        let p = try h.profile()
        XCTAssertEqual(p.eventCount, 4)
        XCTAssertEqual(p.itemsSeen, 3)
        XCTAssertEqual(p.topCategories.first?.category, "drama")
        XCTAssertTrue(p.topCategories.allSatisfy { $0.affinity > 0 })
        XCTAssertEqual(p.completionRate, 1.0, accuracy: 1e-9)
        XCTAssertEqual(p.skipRate, 0.5, accuracy: 1e-9)
        XCTAssertEqual(p.deviceMix.map(\.device), [.phone, .tablet, .tv, .car, .speaker])
        XCTAssertEqual(p.deviceMix.first { $0.device == .tv }?.share ?? 0, 0.75, accuracy: 1e-3)
        XCTAssertEqual(p.hourMix.count, 24)
        XCTAssertEqual(p.hourMix.reduce(0, +), 1.0, accuracy: 1e-9)
        XCTAssertEqual(p.hourMix[8], 0.25, accuracy: 1e-3)
        XCTAssertEqual(p.firstEventMs, now - 3_600_000)
        XCTAssertEqual(p.lastEventMs, now - 1_000_000)
    }

    func testSettingsAndEveryToggle() throws {
        let h = try openStore(dir)
        XCTAssertEqual(
            try h.settings(),
            PrivacySettings(
                personalizationEnabled: true, historyPaused: false, federatedOptIn: false, blockedCategories: [],
                retentionDays: nil))
        try h.setPersonalization(enabled: false)
        try h.setFederatedOptIn(optIn: true)
        try h.setBlockedCategories(categories: ["horror", "reality"])
        try h.setRetentionDays(days: 90)
        XCTAssertEqual(
            try h.settings(),
            PrivacySettings(
                personalizationEnabled: false, historyPaused: false, federatedOptIn: true,
                blockedCategories: ["horror", "reality"], retentionDays: 90))

        try h.setHistoryPaused(paused: true)
        XCTAssertTrue(try h.settings().historyPaused)
        XCTAssertEqual(try h.record(event: event("m1")), .paused)
        XCTAssertEqual(try h.recordBatch(events: [event("m1"), event("m2")]), .paused)
        XCTAssertEqual(try h.eventCount(), 0)
        try h.setHistoryPaused(paused: false)
        XCTAssertEqual(try h.record(event: event("m1")), .stored(count: 1))

        let replaced = PrivacySettings(
            personalizationEnabled: true, historyPaused: false, federatedOptIn: false, blockedCategories: ["news"],
            retentionDays: nil)
        try h.setSettings(settings: replaced)
        XCTAssertEqual(try h.settings(), replaced)
        try h.close()
        XCTAssertEqual(try openStore(dir).settings(), replaced)
    }

    func testRetentionDeletesOldEvents() throws {
        let h = try openStore(dir)
        _ = try h.recordBatch(events: [event("old", at: now - 100 * dayMs), event("recent", at: now - dayMs)])
        try h.setRetentionDays(days: 30)  // applies now
        XCTAssertEqual(try h.recentEvents(limit: 10).map(\.itemId), ["recent"])
        // record() purges at most hourly; purgeExpired() does it now.
        XCTAssertEqual(try h.record(event: event("late", at: now - 40 * dayMs)), .stored(count: 1))
        XCTAssertEqual(try h.eventCount(), 2)
        XCTAssertEqual(try h.purgeExpired(), 1)
        XCTAssertEqual(try h.purgeExpired(), 0)
        try h.setRetentionDays(days: nil)
        XCTAssertNil(try h.settings().retentionDays)
    }

    func testExportIsDocumentedJsonAndImportsElsewhere() throws {
        let h = try openStore(dir)
        try h.upsertCatalog(items: [item("m2", "Goal Rush", ["sports"]), item("m1", "The Silent Harbor", ["drama"])])
        _ = try h.recordBatch(events: [
            event("m1", .play, at: now - 3_000),
            event("m1", .complete, at: now - 2_000),
            event("m2", .skip, at: now - 1_000, hour: 7, device: .phone),
        ])
        try h.setBlockedCategories(categories: ["horror"])
        let json = try h.exportJson()

        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(doc["format"] as? String, "hearth.export")
        XCTAssertEqual((doc["format_version"] as? NSNumber)?.intValue, 1)
        XCTAssertGreaterThanOrEqual((doc["exported_at_ms"] as? NSNumber)?.int64Value ?? 0, now)
        let settings = try XCTUnwrap(doc["settings"] as? [String: Any])
        XCTAssertEqual(settings["blocked_categories"] as? [String], ["horror"])
        XCTAssertEqual(settings["federated_opt_in"] as? Bool, false)
        XCTAssertTrue(settings["retention_days"] is NSNull)
        let events = try XCTUnwrap(doc["events"] as? [[String: Any]])
        XCTAssertEqual(events.map { ($0["id"] as? NSNumber)?.intValue }, [1, 2, 3])
        XCTAssertEqual(events.map { $0["item_id"] as? String }, ["m1", "m1", "m2"])
        XCTAssertEqual(events.map { $0["kind"] as? String }, ["play", "complete", "skip"])
        XCTAssertEqual((events[0]["timestamp_ms"] as? NSNumber)?.int64Value, now - 3_000)
        XCTAssertEqual((events[0]["position_ms"] as? NSNumber)?.intValue, 60_000)
        let context = try XCTUnwrap(events[2]["context"] as? [String: Any])
        XCTAssertEqual(context["device"] as? String, "phone")
        XCTAssertEqual((context["local_hour"] as? NSNumber)?.intValue, 7)
        XCTAssertEqual(context["locale"] as? String, "en-GB")
        let catalog = try XCTUnwrap(doc["catalog"] as? [[String: Any]])
        XCTAssertEqual(catalog.map { $0["id"] as? String }, ["m1", "m2"])
        XCTAssertEqual(catalog[0]["title"] as? String, "The Silent Harbor")
        XCTAssertEqual(catalog[0]["categories"] as? [String], ["drama"])
        let profile = try XCTUnwrap(doc["profile"] as? [String: Any])
        XCTAssertEqual((profile["event_count"] as? NSNumber)?.intValue, 3)
        XCTAssertEqual((profile["items_seen"] as? NSNumber)?.intValue, 2)
        let top = try XCTUnwrap(profile["top_categories"] as? [[String: Any]])
        XCTAssertEqual(top.first?["category"] as? String, "drama")

        // The user's next device: another store, another key.
        let next = try openStore(root.appendingPathComponent("next-device"), key: keyB)
        XCTAssertEqual(try next.importJson(document: json), ImportSummary(events: 3, catalogItems: 2))
        XCTAssertEqual(try next.eventCount(), 3)
        XCTAssertEqual(try next.catalogSize(), 2)
        XCTAssertEqual(try next.settings().blockedCategories, ["horror"])
        XCTAssertEqual(try next.recentEvents(limit: 10).map(\.itemId), ["m2", "m1", "m1"])
        XCTAssertEqual(invalidField { try next.importJson(document: "{ not json") }, "document")
        let otherFormat = json.replacingOccurrences(of: "\"hearth.export\"", with: "\"other\"")
        XCTAssertEqual(invalidField { try next.importJson(document: otherFormat) }, "format")
        XCTAssertEqual(try next.eventCount(), 3)
    }

    func testForgetItemAndDeleteAll() throws {
        let h = try openStore(dir)
        try h.upsertCatalog(items: [item("m1", "A", ["drama"]), item("m2", "B", ["sports"])])
        _ = try h.recordBatch(events: [event("m1"), event("m1", .complete), event("m2")])
        XCTAssertEqual(try h.forgetItem(itemId: "m1"), 2)
        XCTAssertEqual(try h.recentEvents(limit: 10).map(\.itemId), ["m2"])
        XCTAssertEqual(try h.profile().itemsSeen, 1)
        XCTAssertEqual(try h.profile().topCategories.map(\.category), ["sports"])
        XCTAssertEqual(try h.forgetItem(itemId: "m1"), 0)
        XCTAssertEqual(invalidField { try h.forgetItem(itemId: "") }, "item_id")

        try h.setFederatedOptIn(optIn: true)
        try h.deleteAll()
        XCTAssertEqual(try h.eventCount(), 0)
        XCTAssertEqual(try h.catalogSize(), 0)
        XCTAssertEqual(try h.profile().eventCount, 0)
        XCTAssertFalse(try h.settings().federatedOptIn)
        XCTAssertEqual(try h.record(event: event("m3")), .stored(count: 1))  // a fresh store, in use
    }

    func testRekeyThenTheOldKeyIsWrong() throws {
        let h = try openStore(dir, key: keyA)
        _ = try h.recordBatch(events: [event("m1"), event("m2")])
        try h.rekey(newKeys: FixedKeys(keyB))
        XCTAssertEqual(try h.eventCount(), 2)
        XCTAssertEqual(try h.integrityCheck(), "ok")
        try h.close()
        XCTAssertEqual(hearthError { try openStore(dir, key: keyA) }, .WrongKey)
        let reopened = try openStore(dir, key: keyB)
        XCTAssertEqual(try reopened.recentEvents(limit: 10).map(\.itemId), ["m2", "m1"])
        XCTAssertEqual(try reopened.integrityCheck(), "ok")
    }

    func testCloseThenCallsFailWithClosed() throws {
        let h = try openStore(dir)
        _ = try h.record(event: event("m1"))
        try h.flush()  // what an app does when it goes to the background
        try h.close()
        XCTAssertEqual(hearthError { try h.eventCount() }, .Closed)
        XCTAssertEqual(hearthError { try h.flush() }, .Closed)
        XCTAssertEqual(hearthError { try h.record(event: event("m2")) }, .Closed)
        XCTAssertEqual(hearthError { try h.deleteAll() }, .Closed)
        XCTAssertEqual(try openStore(dir).eventCount(), 1)
    }

    func testDestroyStoreAfterTheKeyIsLost() throws {
        do {
            let h = try openStore(dir, key: keyA)
            _ = try h.record(event: event("m1"))
            try h.close()
        }
        XCTAssertEqual(hearthError { try openStore(dir, key: keyB) }, .WrongKey)
        try destroyStore(dataDir: dir.path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("hearth.db").path))
        XCTAssertEqual(try openStore(dir, key: keyB).eventCount(), 0)
        XCTAssertEqual(invalidField { try destroyStore(dataDir: "") }, "data_dir")
    }

    func testKeyProviderFailures() throws {
        let locked = hearthError { try Hearth.open(config: config(dir), keys: FailingKeys(KeyError.Unavailable(reason: "device locked"))) }
        XCTAssertEqual(locked, .KeyUnavailable(reason: "device locked"))
        let gone = hearthError { try Hearth.open(config: config(dir), keys: FailingKeys(KeyError.Invalidated)) }
        XCTAssertEqual(gone, .KeyInvalidated)
        // Any other error from the provider is reported as unavailable.
        guard case .KeyUnavailable(let reason)? = hearthError({ try Hearth.open(config: config(dir), keys: FailingKeys(KeychainExploded())) }) else {
            return XCTFail("expected KeyUnavailable")
        }
        XCTAssertTrue(reason.hasPrefix("key provider failed"), reason)
        XCTAssertEqual(invalidField { try Hearth.open(config: config(dir), keys: FixedKeys(Data(count: 16))) }, "root_key")

        let h = try openStore(dir)
        _ = try h.record(event: event("m1"))
        XCTAssertEqual(
            hearthError { try h.rekey(newKeys: FailingKeys(KeyError.Unavailable(reason: "locked"))) },
            .KeyUnavailable(reason: "locked"))
        XCTAssertEqual(try h.eventCount(), 1)
        try h.close()
        XCTAssertEqual(try openStore(dir, key: keyA).eventCount(), 1)  // still under the first key
    }

    func testInvalidInputNamesTheFieldAndStoresNothing() throws {
        let h = try openStore(dir)
        XCTAssertEqual(invalidField { try h.record(event: event("")) }, "item_id")
        XCTAssertEqual(invalidField { try h.record(event: event("m1", at: 5)) }, "timestamp_ms")
        XCTAssertEqual(invalidField { try h.record(event: event("m1", at: now + 2 * dayMs)) }, "timestamp_ms")
        XCTAssertEqual(invalidField { try h.record(event: event("m1", hour: 24)) }, "context.local_hour")
        XCTAssertEqual(invalidField { try h.record(event: event("m1", position: 4_000_000)) }, "position_ms")
        XCTAssertEqual(invalidField { try h.recordBatch(events: [event("m1"), event("")]) }, "item_id")  // all or none
        XCTAssertEqual(invalidField { try h.upsertCatalog(items: [item("m1", "A", popularity: .nan)]) }, "popularity")
        XCTAssertEqual(invalidField { try h.upsertCatalog(items: [item("m1", "")]) }, "title")
        XCTAssertEqual(invalidField { try h.setRetentionDays(days: 0) }, "retention_days")
        XCTAssertEqual(invalidField { try h.setBlockedCategories(categories: [""]) }, "blocked_categories")
        XCTAssertEqual(try h.eventCount(), 0)
        XCTAssertEqual(try h.catalogSize(), 0)
        XCTAssertEqual(
            invalidField { try Hearth.open(config: HearthConfig(dataDir: "", durability: .full), keys: FixedKeys(keyA)) },
            "data_dir")
        XCTAssertEqual(
            invalidField { try Hearth.open(config: config(dir, halfLifeDays: 0), keys: FixedKeys(keyA)) },
            "profile_half_life_days")
    }

    func testStorageFullStoresNothingOfTheFailedCall() throws {
        let h = try Hearth.open(config: config(dir, maxStoreBytes: 64 * 1024), keys: FixedKeys(keyA))
        var stored: UInt64 = 0
        var full = false
        for round in 0..<100 {
            do {
                _ = try h.recordBatch(events: (0..<50).map { event("item-\(round)-\($0)") })
                stored += 50
            } catch HearthError.StorageFull {
                full = true
                break
            }
        }
        XCTAssertTrue(full, "64 KiB never filled up")
        XCTAssertGreaterThan(stored, 0)
        XCTAssertEqual(try h.eventCount(), stored)
        XCTAssertEqual(try h.recentEvents(limit: 10_000).count, Int(stored))
    }

    func testJunkFileIsACorruptStore() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(repeating: UInt8(ascii: "x"), count: 8192).write(to: dir.appendingPathComponent("hearth.db"))
        guard case .CorruptStore? = hearthError({ try openStore(dir) }) else { return XCTFail("expected CorruptStore") }
        try destroyStore(dataDir: dir.path)
        XCTAssertEqual(try openStore(dir).eventCount(), 0)
    }

    func testNewerSchemaIsStoreTooNew() throws {
        let h = try openStore(dir)
        _ = try h.record(event: event("m1"))
        try h.close()  // releases the file: the WAL is checkpointed
        let wal = dir.appendingPathComponent("hearth.db-wal").path
        let walBytes = (try? FileManager.default.attributesOfItem(atPath: wal)[.size] as? UInt64) ?? 0
        XCTAssertEqual(walBytes, 0, "WAL not checkpointed")
        try setSchemaVersion(dir, 99)
        guard case .StoreTooNew(let found, let supported)? = hearthError({ try openStore(dir) }) else {
            return XCTFail("expected StoreTooNew")
        }
        XCTAssertEqual(found, 99)
        XCTAssertTrue((1...98).contains(supported))
    }

    func testTamperedRecordFailsItsIntegrityCheck() throws {
        let first = try openStore(dir)
        _ = try first.recordBatch(events: (1...5).map { event("m\($0)") })
        try first.close()
        try tamperFirstEvent(dir)
        let h = try openStore(dir)
        XCTAssertEqual(try h.eventCount(), 5)
        XCTAssertEqual(hearthError { try h.recentEvents(limit: 10) }, .Integrity(what: "events"))
        XCTAssertEqual(hearthError { try h.exportJson() }, .Integrity(what: "events"))
        XCTAssertEqual(try h.integrityCheck(), "ok")  // the file itself is sound
        // The rest of the store is still usable.
        XCTAssertEqual(try h.record(event: event("m6")), .stored(count: 1))
        XCTAssertEqual(try h.recentEvents(limit: 1).map(\.itemId), ["m6"])
    }

    func testUnusableDirectoryIsIo() throws {
        let file = root.appendingPathComponent("a-file")
        try Data("not a directory".utf8).write(to: file)
        guard case .Io? = hearthError({ try openStore(file.appendingPathComponent("store")) }) else {
            return XCTFail("expected Io")
        }
    }

    /// A store whose schema version says v1 although the v2 tables are there:
    /// the upgrade cannot run and SQLite's error surfaces as Internal. (A Swift
    /// logger cannot throw, `log` has no error channel, so this is how Swift
    /// meets Internal.) The store is untouched: with the version put back it opens.
    func testInconsistentSchemaIsInternalAndChangesNothing() throws {
        let h = try openStore(dir)
        _ = try h.record(event: event("m1"))
        try h.close()
        let version = try schemaVersion(dir)
        try setSchemaVersion(dir, 1)
        guard case .Internal? = hearthError({ try openStore(dir) }) else { return XCTFail("expected Internal") }
        try setSchemaVersion(dir, version)
        XCTAssertEqual(try openStore(dir).eventCount(), 1)
    }

    func testNothingPersonalOnDiskInClear() throws {
        let secretId = "item-7f3a9c-private"
        let title = "The Quiet Lighthouse Keeper"
        let category = "noir-mystery-swift"
        let timestamp = now - 4_321
        let needles = [secretId, title, category, "blocked-genre-xyz", String(timestamp)]
        func scan(_ when: String) throws {
            let files = try filesUnder(dir)
            XCTAssertFalse(files[dir.appendingPathComponent("hearth.db").path]?.isEmpty ?? true)
            for (path, bytes) in files {
                for needle in needles {
                    XCTAssertFalse(bytes.contains(needle), "'\(needle)' in clear in \(path) (\(when))")
                }
            }
        }
        let h = try openStore(dir)
        try h.upsertCatalog(items: [item(secretId, title, [category])])
        _ = try h.recordBatch(events: (0..<20).map { event(secretId, .progress, at: timestamp - Int64($0)) })
        try h.setBlockedCategories(categories: ["blocked-genre-xyz"])
        let wal = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("hearth.db-wal").path)
        XCTAssertGreaterThan(wal[.size] as? UInt64 ?? 0, 0)  // the WAL is scanned too
        try scan("open")
        try h.close()
        try scan("closed")
        // And the bytes are the app's data: they come back under the key.
        let reopened = try openStore(dir)
        XCTAssertEqual(try reopened.catalogItem(itemId: secretId)?.title, title)
        XCTAssertEqual(try reopened.recentEvents(limit: 20).map(\.timestampMs).reversed(), (0..<20).map { timestamp - Int64($0) })
    }

    func testLoggerReceivesLinesAndCanBeSwapped() throws {
        let info = ListLogger()
        try setLogger(logger: info, maxLevel: .info)
        do {
            let h = try openStore(dir)
            _ = try h.record(event: event("item-logged-42"))
            XCTAssertEqual(try h.forgetItem(itemId: "item-logged-42"), 1)
        }
        XCTAssertTrue(info.lines.contains("info hearth_core::hearth store opened"), "\(info.lines)")
        XCTAssertTrue(info.lines.contains { $0.hasSuffix("deleted 1 events") }, "\(info.lines)")
        XCTAssertFalse(info.lines.contains { $0.hasPrefix("debug") || $0.hasPrefix("trace") })
        XCTAssertFalse(info.lines.contains { $0.contains("item-logged-42") }, "an item id in a log line")

        let debug = ListLogger()
        try setLogger(logger: debug, maxLevel: .debug)
        let before = info.lines.count
        _ = try openStore(dir)
        XCTAssertTrue(debug.lines.contains { $0.hasPrefix("debug") }, "\(debug.lines)")
        XCTAssertEqual(info.lines.count, before)  // the old logger is out
    }

    /// What a Swift logger can do wrong without throwing: replace itself from
    /// inside `log`. No deadlock, and the next lines go to the new logger.
    func testALoggerMayReplaceItselfFromInsideLog() throws {
        let next = ListLogger()
        try setLogger(logger: SelfReplacingLogger(next: next), maxLevel: .info)
        let h = try openStore(dir)
        _ = try h.record(event: event("m1"))
        XCTAssertEqual(try h.forgetItem(itemId: "m1"), 1)
        XCTAssertTrue(next.lines.contains { $0.hasSuffix("deleted 1 events") }, "\(next.lines)")
    }

    func testCallsFromManyThreads() throws {
        let h = try openStore(dir)
        let lock = NSLock()
        var errors: [Error] = []
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            do {
                for i in 0..<25 { _ = try h.record(event: event("t\(t)-\(i)")) }
                _ = try h.profile()
            } catch {
                lock.lock()
                errors.append(error)
                lock.unlock()
            }
        }
        XCTAssertTrue(errors.isEmpty, "\(errors)")
        XCTAssertEqual(try h.eventCount(), 100)
    }
}

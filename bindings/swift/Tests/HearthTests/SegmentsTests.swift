import Foundation
import Hearth
import XCTest

/// Segments, segment reports and notification decisions through the
/// generated Swift: segments, segmentsAt, segmentConfig, setSegmentConfig,
/// setSegmentReportsOptIn, segmentReport, shouldNotify, notificationPolicy,
/// setNotificationPolicy and setNotificationsEnabled.
final class SegmentsTests: XCTestCase {
    var root: URL!
    var dir: URL { root.appendingPathComponent("store") }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-seg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    func utc(_ s: String) -> Int64 {
        let date = ISO8601DateFormatter().date(from: s)!
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    func candidate(_ zone: String, _ at: String, urgency: Urgency = .normal, category: String? = nil)
        -> NotificationCandidate
    {
        NotificationCandidate(
            kind: .newEpisode, itemId: nil, category: category, urgency: urgency, timeZone: zone, atMs: utc(at))
    }

    func testSegmentsFollowAScriptedHistory() throws {
        let h = try openStore(dir)
        try h.upsertCatalog(items: [
            item("d1", "Harbor Lights", ["drama"]), item("d2", "Harbor Days", ["drama"]),
            item("d3", "Harbor Nights", ["drama"]),
        ])
        let fresh = try h.segments()
        XCTAssertEqual(fresh.lifecycle, .new)
        XCTAssertEqual(fresh.engagement, .light)
        XCTAssertNil(fresh.daysSinceLastAction)

        // Forty days ago, one evening: three dramas back to back (one
        // 75-minute session, a binge).
        let t0 = now - 40 * dayMs
        let min: Int64 = 60_000
        _ = try h.recordBatch(events: [
            event("d1", .play, at: t0), event("d1", .complete, at: t0 + 25 * min),
            event("d2", .play, at: t0 + 26 * min), event("d2", .complete, at: t0 + 50 * min),
            event("d3", .play, at: t0 + 51 * min), event("d3", .complete, at: t0 + 75 * min),
        ])
        let s = try h.segmentsAt(asOfMs: t0 + 2 * 3_600_000)
        XCTAssertEqual(s.lifecycle, .new)
        XCTAssertEqual(s.engagement, .regular)
        XCTAssertEqual(s.sessionsPerWeek, 1.0, accuracy: 1e-9)
        XCTAssertEqual(s.minutesPerWeek, 75.0, accuracy: 1e-9)
        XCTAssertEqual(s.bingeSessions, 1)
        XCTAssertTrue(s.bingeWatcher)
        XCTAssertFalse(s.abandoner)
        XCTAssertEqual(s.topCategories.map(\.category), ["drama"])
        XCTAssertEqual(s.preferredHours, [21])
        XCTAssertEqual(s.daypart, .evening)
        XCTAssertEqual(s.primaryDevice, .tv)
        XCTAssertEqual(try h.segmentsAt(asOfMs: t0 + 10 * dayMs).lifecycle, .atRisk)
        XCTAssertEqual(try h.segmentsAt(asOfMs: t0 + 35 * dayMs).lifecycle, .dormant)
        let current = try h.segments()
        XCTAssertEqual(current.lifecycle, .dormant)
        XCTAssertEqual(current.daysSinceLastAction, 39)  // 40 days less 75 minutes

        // Thresholds come from the config; a bad one changes nothing.
        let config = try h.segmentConfig()
        XCTAssertEqual(config.atRiskAfterDays, 7)
        XCTAssertEqual(config.reportCategories, [])
        let relaxed = SegmentConfig(atRiskAfterDays: 20, reportCategories: ["drama", "comedy"])
        try h.setSegmentConfig(config: relaxed)
        XCTAssertEqual(try h.segmentsAt(asOfMs: t0 + 10 * dayMs).lifecycle, .new)
        XCTAssertEqual(
            invalidField { try h.setSegmentConfig(config: SegmentConfig(windowDays: 90)) }, "window_days")
        XCTAssertEqual(
            invalidField { try h.setSegmentConfig(config: SegmentConfig(reportEpsilon: -1)) }, "report_epsilon")
        XCTAssertEqual(try h.segmentConfig(), relaxed)
        XCTAssertEqual(invalidField { try h.segmentsAt(asOfMs: 5) }, "as_of_ms")
    }

    func testSegmentReportsNeedConsentAndRepeatThemselves() throws {
        let h = try openStore(dir)
        XCTAssertFalse(try h.settings().segmentReportsOptIn)
        XCTAssertEqual(try h.segmentReport(), .noConsent)
        try h.setSegmentReportsOptIn(optIn: true)
        XCTAssertTrue(try h.settings().segmentReportsOptIn)
        guard case .report(let first) = try h.segmentReport() else {
            return XCTFail("no report")
        }
        XCTAssertEqual(first.labels.count, 18)
        XCTAssertEqual(first.labels.first, "lifecycle.new")
        XCTAssertEqual(first.bits.count, 3)
        XCTAssertEqual(first.epsilon, 2.0)
        XCTAssertEqual(first.epsilonSpent, 2.0)
        XCTAssertEqual(first.bitEpsilon, 0.2, accuracy: 1e-12)
        XCTAssertTrue(first.keepProbability > 0.5 && first.keepProbability < 0.6)
        guard case .report(let again) = try h.segmentReport() else {
            return XCTFail("no report")
        }
        XCTAssertEqual(again.bits, first.bits)
        XCTAssertEqual(again.epsilonSpent, 0.0)
        try h.setSegmentReportsOptIn(optIn: false)
        XCTAssertEqual(try h.segmentReport(), .noConsent)
    }

    func testNotificationDecisionsFollowTheUsersZoneAndCaps() throws {
        let ny = "America/New_York"
        do {
            let h = try openStore(dir)
            XCTAssertEqual(
                try h.notificationPolicy(),
                NotificationPolicy(maxPerDay: 2, maxPerWeek: 6, quietStartMinute: 1320, quietEndMinute: 480))
            try h.setNotificationPolicy(policy: NotificationPolicy(maxPerDay: 1))
            // 10 March 2024, after the change to EDT: 11:30Z is 07:30, quiet
            // until 08:00 EDT = 12:00Z.
            let held = try h.shouldNotify(candidate: candidate(ny, "2024-03-10T11:30:00Z"))
            XCTAssertFalse(held.allowed)
            XCTAssertEqual(held.reason, .quietHours)
            XCTAssertEqual(held.reasonText, "Quiet hours, 22:00 to 08:00")
            XCTAssertEqual(held.retryAtMs, utc("2024-03-10T12:00:00Z"))
            XCTAssertNil(try h.shouldNotify(candidate: candidate(ny, "2024-03-10T11:30:00Z", urgency: .low)).retryAtMs)
            let ok = try h.shouldNotify(candidate: candidate(ny, "2024-03-10T12:30:00Z"))
            XCTAssertTrue(ok.allowed)
            XCTAssertEqual(ok.reason, .allowed)
            try h.close()
        }
        // The send is sealed in the store: the day's cap holds after reopening.
        let h = try openStore(dir)
        let capped = try h.shouldNotify(candidate: candidate(ny, "2024-03-10T15:00:00Z"))
        XCTAssertEqual(capped.reason, .dailyCapReached)
        XCTAssertEqual(capped.retryAtMs, utc("2024-03-11T12:00:00Z"))
        XCTAssertTrue(try h.shouldNotify(candidate: candidate(ny, "2024-03-10T15:00:00Z", urgency: .high)).allowed)

        XCTAssertTrue(try h.settings().notificationsEnabled)
        try h.setNotificationsEnabled(enabled: false)
        XCTAssertEqual(
            try h.shouldNotify(candidate: candidate("UTC", "2024-06-01T12:00:00Z")).reason, .notificationsOff)
        try h.setNotificationsEnabled(enabled: true)
        try h.setBlockedCategories(categories: ["horror"])
        XCTAssertEqual(
            try h.shouldNotify(candidate: candidate("UTC", "2024-06-01T12:00:00Z", category: "horror")).reason,
            .blockedCategory)

        XCTAssertEqual(
            invalidField { try h.shouldNotify(candidate: candidate("Mars/Olympus_Mons", "2024-06-01T12:00:00Z")) },
            "time_zone")
        let policy = try h.notificationPolicy()
        XCTAssertEqual(
            invalidField { try h.setNotificationPolicy(policy: NotificationPolicy(quietStartMinute: 1440)) },
            "quiet_start_minute")
        XCTAssertEqual(try h.notificationPolicy(), policy)
    }
}

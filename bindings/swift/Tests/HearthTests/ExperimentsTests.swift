import Foundation
import Hearth
import XCTest

/// Experiments through the generated Swift: defineExperiment, experimentArm,
/// rankCatalog with an experiment, logOutcome, experimentStatus, and what
/// export and deleteAll do with them.
final class ExperimentsTests: XCTestCase {
    var root: URL!
    var dir: URL { root.appendingPathComponent("store") }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-exp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    func homeRow(_ treatment: ArmTreatment) -> Experiment {
        Experiment(id: "home-row.v1", arms: [
            ExperimentArm(name: "first", share: 1, treatment: treatment),
            ExperimentArm(name: "second", share: 1, treatment: treatment),
        ])
    }

    func withExperiment() -> RankOptions {
        RankOptions(context: context, diversity: .off, experiment: "home-row.v1")
    }

    func testTheArmIsStableAndTheRowFollowsIt() throws {
        var arm = ""
        do {
            let h = try openStore(dir)
            try seedRanking(h)
            arm = try h.defineExperiment(experiment: homeRow(.fallback))
            XCTAssertTrue(["first", "second"].contains(arm))
            let row = try h.rankCatalog(options: withExperiment())
            XCTAssertEqual(row.ranker, .fallback(why: .experimentArm))
            XCTAssertEqual(row.experimentArm, arm)
            XCTAssertNil(try h.rankCatalog(options: options()).experimentArm)
            try h.close()
        }
        let h = try openStore(dir)
        XCTAssertEqual(try h.experimentArm(experimentId: "home-row.v1"), arm)
        XCTAssertEqual(try h.experiments().map(\.id), ["home-row.v1"])
    }

    func testOutcomesAreLoggedWithTheirPositionExportedAndDeleted() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        _ = try h.defineExperiment(experiment: homeRow(.model))
        let row = try h.rankCatalog(options: withExperiment())
        XCTAssertTrue(row.personalized)
        let second = row.items[1].itemId
        XCTAssertEqual(try h.logOutcome(experimentId: "home-row.v1", itemId: second, kind: .play), .logged(position: 1))
        let status = try h.experimentStatus(experimentId: "home-row.v1")
        XCTAssertEqual(status.exposures, 1)
        XCTAssertEqual(status.outcomes, 1)
        XCTAssertTrue(status.logging)
        // The report: one row, engaged at position 1.
        let report = try h.experimentReport(experimentId: "home-row.v1")
        XCTAssertEqual(report.arm, status.arm)
        XCTAssertEqual(report.exposures, 1)
        XCTAssertEqual(report.ndcgAt10, 1 / log2(3.0), accuracy: 1e-12)
        XCTAssertEqual(report.hitRateAt10, 1)
        XCTAssertEqual(report.completionRate, 0)

        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try h.exportJson().utf8)) as? [String: Any])
        let experiments = try XCTUnwrap(doc["experiments"] as? [String: Any])
        let log = try XCTUnwrap(experiments["log"] as? [[String: Any]])
        XCTAssertEqual(log.count, 2)
        XCTAssertEqual((log[1]["entry"] as? [String: Any])?["item_id"] as? String, second)

        try h.setHistoryPaused(paused: true)
        XCTAssertEqual(try h.logOutcome(experimentId: "home-row.v1", itemId: second, kind: .complete), .paused)
        try h.setHistoryPaused(paused: false)

        try h.deleteAll()
        XCTAssertEqual(try h.experiments(), [])
        XCTAssertEqual(invalidField { try h.experimentArm(experimentId: "home-row.v1") }, "experiment")
    }

    func testABadDefinitionIsInvalidInputAndChangesNothing() throws {
        let h = try openStore(dir)
        let one = Experiment(id: "x", arms: [ExperimentArm(name: "only", share: 1, treatment: .model)])
        XCTAssertEqual(invalidField { try h.defineExperiment(experiment: one) }, "experiment.arms")
        XCTAssertEqual(try h.experiments(), [])
        XCTAssertFalse(try h.removeExperiment(experimentId: "x"))
    }
}

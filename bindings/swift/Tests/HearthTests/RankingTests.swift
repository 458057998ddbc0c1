import Foundation
import Hearth
import XCTest

/// Ranking and model packages through the generated Swift: rank, rankCatalog,
/// modelInfo, installModel, installModelFromDir and ModelRejected.
final class RankingTests: XCTestCase {
    var root: URL!
    var dir: URL { root.appendingPathComponent("store") }

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-swift-rank-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// The built-in package's files (tests/bindings/run.sh copies
    /// models/ranker-v1 into the package and sets HEARTH_MODEL_DIR).
    func modelPackageDir() throws -> URL {
        let path = try XCTUnwrap(
            ProcessInfo.processInfo.environment["HEARTH_MODEL_DIR"], "HEARTH_MODEL_DIR is not set (tests/bindings/run.sh sets it)")
        let url = URL(fileURLWithPath: path)
        XCTAssertTrue(FileManager.default.fileExists(atPath: url.appendingPathComponent("manifest.json").path), path)
        return url
    }

    func testRankOrdersCandidatesWithTheModelAndExplainsEachItem() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let info = try XCTUnwrap(try h.modelInfo())
        let freshItem = entry("f1", "Brand New Laughs", "en", 5, ["comedy"], year: thisYear)
        let candidates = rankingCatalog.map { Candidate(itemId: $0.id) } + [Candidate(itemId: "f1", item: freshItem)]
        let r = try h.rank(candidates: candidates, options: options(limit: 100))

        XCTAssertEqual(r.ranker, .model(version: 1, digest: info.digest))
        XCTAssertTrue(r.personalized)
        // Blocked (h1, h2), disliked (s2) and completed (d1) are left out.
        XCTAssertEqual(r.filtered, 4)
        let ids = r.items.map(\.itemId)
        XCTAssertEqual(Set(ids).count, ids.count)
        XCTAssertEqual(Set(ids), rankable.union(["f1"]))
        XCTAssertTrue(ids.contains("f1"), "the inline candidate, not in the catalog, is ranked")
        XCTAssertEqual(r.items.map(\.score), r.items.map(\.score).sorted(by: >))  // score order
        XCTAssertTrue(r.items.allSatisfy { $0.score.isFinite && !$0.explored })

        let expected: [String: Reason] = [
            "d2": .becauseYouWatched(itemId: "d1", title: "Harbor Lights"),
            "d3": .becauseYouWatched(itemId: "d1", title: "Harbor Lights"),
            "m1": .becauseYouWatched(itemId: "d1", title: "Harbor Lights"),
            "c1": .popularInYourLanguage(language: "en"),
            "c2": .becauseYouWatched(itemId: "c1", title: "Laugh Track"),
            "s1": .popularInYourLanguage(language: "en"),
            "n1": .popularInYourLanguage(language: "en"),
            "n2": .popular,
            "k1": .popularInYourLanguage(language: "en"),
            "k2": .popular,
            "o1": .popularInYourLanguage(language: "en"),
            "o2": .becauseYouWatched(itemId: "o1", title: "Deep Blue"),
            "f1": .newInCategoryYouLike(category: "comedy"),
        ]
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: r.items.map { ($0.itemId, $0.reason) }), expected)
        for item in r.items {
            XCTAssertFalse(item.reasonText.isEmpty)
            XCTAssertEqual(item.reasonText, reasonText(item.reason), item.itemId)
            XCTAssertFalse(item.reasonText.lowercased().contains("horror"))
        }
        // The metadata given inline was for that call only.
        XCTAssertNil(try h.catalogItem(itemId: "f1"))
    }

    func testRankCatalogRanksTheCatalogCache() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let all = try h.rankCatalog(options: options(limit: 100))
        guard case .model = all.ranker else { return XCTFail("expected the model, got \(all.ranker)") }
        XCTAssertTrue(all.personalized)
        XCTAssertEqual(all.filtered, 4)
        XCTAssertEqual(Set(all.items.map(\.itemId)), rankable)
        // The same as ranking the catalog's ids.
        let explicit = try h.rank(candidates: rankingCatalog.map { Candidate(itemId: $0.id) }, options: options(limit: 100))
        XCTAssertEqual(explicit.items.map(\.itemId), all.items.map(\.itemId))
        XCTAssertEqual(explicit.items.map(\.reason), all.items.map(\.reason))
        XCTAssertEqual(explicit.ranker, all.ranker)

        XCTAssertEqual(try h.rankCatalog(options: options(limit: 5)).items, Array(all.items.prefix(5)))

        // The defaults (limit 20, completed items left out) with excludeWatched:
        // items with any event (c1 liked, s1 and o1 played) go too.
        let unwatched = try h.rankCatalog(options: RankOptions(context: context, diversity: .off, excludeWatched: true))
        XCTAssertEqual(Set(unwatched.items.map(\.itemId)), rankable.subtracting(["c1", "s1", "o1"]))
        XCTAssertEqual(unwatched.filtered, 7)
        // excludeCompleted: false lets the completed d1 back in.
        let withCompleted = try h.rankCatalog(
            options: RankOptions(context: context, diversity: .off, limit: 100, excludeCompleted: false))
        XCTAssertTrue(withCompleted.items.contains { $0.itemId == "d1" })
        XCTAssertEqual(withCompleted.filtered, 3)

        try h.deleteAll()
        let empty = try h.rankCatalog(options: options())
        XCTAssertEqual(empty.items, [])
        XCTAssertEqual(empty.filtered, 0)
    }

    func testBlockedCategoriesAndDislikesNeverAppear() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let candidates = rankingCatalog.map { Candidate(itemId: $0.id) }
        func ids(_ r: RankResult) -> Set<String> { Set(r.items.map(\.itemId)) }
        let before = try h.rank(candidates: candidates, options: options(limit: 100))
        XCTAssertTrue(ids(before).isDisjoint(with: ["h1", "h2", "s2"]))

        // Blocking is case-insensitive and applies to every category of an item.
        try h.setBlockedCategories(categories: ["Horror", "KIDS", "crime"])
        let after = try h.rank(candidates: candidates, options: options(limit: 100))
        XCTAssertEqual(ids(after), rankable.subtracting(["k1", "k2", "m1"]))
        XCTAssertEqual(after.filtered, 7)
        // Also for an inline candidate, in every diversity mode and in the fallback.
        let inline = Candidate(itemId: "x1", item: entry("x1", "Scary Inline", "en", 99, ["horror"]))
        let gone: Set<String> = ["x1", "h1", "h2", "s2", "k1", "k2", "m1"]
        for diversity in [Diversity.off, .mmr(lambda: 0.5), .categoryCap(maxPerCategory: 1)] {
            let r = try h.rank(candidates: candidates + [inline], options: options(limit: 100, diversity: diversity))
            XCTAssertTrue(ids(r).isDisjoint(with: gone), "\(diversity)")
        }
        // A dislike recorded now takes n1 out.
        _ = try h.record(event: event("n1", .dislike))
        XCTAssertFalse(ids(try h.rank(candidates: candidates, options: options(limit: 100))).contains("n1"))
        try h.setPersonalization(enabled: false)
        let fallback = try h.rank(candidates: candidates + [inline], options: options(limit: 100))
        XCTAssertEqual(ids(fallback), rankable.subtracting(["k1", "k2", "m1", "n1"]))
    }

    func testExplorationSlotsAreSeededMarkedAndNeverFirst() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let exploit = try h.rankCatalog(options: options(limit: 6)).items.map(\.itemId)
        func explore(seed: UInt64 = 42, share: Double = 0.25) -> RankOptions {
            RankOptions(context: context, diversity: .off, limit: 8, explorationShare: share, seed: seed)
        }
        let a = try h.rankCatalog(options: explore())
        // Same seed, same row (the scores move in their last digits as the
        // profile's recency decays between the two calls).
        let row = { (r: RankResult) in r.items.map { "\($0.itemId) \($0.explored) \($0.reasonText)" } }
        XCTAssertEqual(row(a), row(try h.rankCatalog(options: explore())))
        XCTAssertEqual(a.items.count, 8)
        XCTAssertEqual(Set(a.items.map(\.itemId)).count, 8)
        let explored = a.items.filter(\.explored)
        XCTAssertEqual(explored.count, 2)  // floor(8 * 0.25)
        XCTAssertFalse(a.items[0].explored)
        // The exploited slots are the top six in order; the explored ones come from below the cut.
        XCTAssertEqual(a.items.filter { !$0.explored }.map(\.itemId), exploit)
        XCTAssertTrue(explored.allSatisfy { !exploit.contains($0.itemId) })
        for e in explored {
            XCTAssertEqual(e.reason, .somethingDifferent)
            XCTAssertEqual(e.reasonText, "Something different")
        }
        // Whatever the seed, the first slot is the best guess.
        let rows = try (0..<30).map { try h.rankCatalog(options: explore(seed: UInt64($0))) }
        XCTAssertTrue(rows.allSatisfy { !$0.items[0].explored && $0.items[0].itemId == exploit[0] })
        XCTAssertTrue(rows.allSatisfy { $0.items.filter(\.explored).count == 2 })
        XCTAssertGreaterThan(Set(rows.map { $0.items.map(\.itemId) }).count, 1, "the seed changes the draw")
        XCTAssertFalse(try h.rankCatalog(options: explore(share: 0)).items.contains { $0.explored })
    }

    func testDiversityCategoryCapAndMmr() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let byId = Dictionary(uniqueKeysWithValues: rankingCatalog.map { ($0.id, $0) })
        func categories(_ r: RankResult) -> [String] { r.items.flatMap { byId[$0.itemId]?.categories ?? [] } }

        // Seven categories among the rankable items; six rows never need a second one.
        let capped = try h.rankCatalog(options: options(limit: 6, diversity: .categoryCap(maxPerCategory: 1)))
        XCTAssertEqual(capped.items.count, 6)
        let cats = categories(capped)
        XCTAssertEqual(Set(cats).count, cats.count, "two items of one category: \(capped.items.map(\.itemId))")
        // Past the caps, the rest still fills the row.
        XCTAssertEqual(
            try h.rankCatalog(options: options(limit: 100, diversity: .categoryCap(maxPerCategory: 1))).items.count, 12)
        let twoEach = categories(try h.rankCatalog(options: options(limit: 8, diversity: .categoryCap(maxPerCategory: 2))))
        XCTAssertTrue(Dictionary(grouping: twoEach, by: { $0 }).values.allSatisfy { $0.count <= 2 }, "\(twoEach)")

        let off = try h.rankCatalog(options: options(limit: 10)).items.map(\.itemId)
        // lambda 1 is pure score order.
        XCTAssertEqual(try h.rankCatalog(options: options(limit: 10, diversity: .mmr(lambda: 1))).items.map(\.itemId), off)
        // lambda 0 is pure novelty: the second item shares no category with the first.
        let novel = try h.rankCatalog(options: options(limit: 10, diversity: .mmr(lambda: 0))).items.map(\.itemId)
        XCTAssertEqual(novel.first, off.first)
        XCTAssertTrue(Set(byId[novel[0]]!.categories).isDisjoint(with: byId[novel[1]]!.categories))
        // In between: the best item first, a full row of distinct items.
        let mmr = try h.rankCatalog(options: options(limit: 10, diversity: .mmr(lambda: 0.5)))
        guard case .model = mmr.ranker else { return XCTFail("expected the model") }
        XCTAssertEqual(mmr.items.first?.itemId, off.first)
        XCTAssertEqual(Set(mmr.items.map(\.itemId)).count, 10)
        XCTAssertTrue(mmr.items.allSatisfy { rankable.contains($0.itemId) && !$0.reasonText.isEmpty })
    }

    func testPersonalizationOffFallsBackToPopularity() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        try h.setPersonalization(enabled: false)
        let r = try h.rankCatalog(options: options(limit: 100))
        XCTAssertEqual(r.ranker, .fallback(why: .personalizationOff))
        XCTAssertFalse(r.personalized)
        XCTAssertEqual(r.filtered, 4)
        // Popularity, the request's language (en-GB) first.
        XCTAssertEqual(r.items.map(\.itemId), ["s1", "c1", "m1", "d2", "o1", "k1", "n1", "c2", "d3", "k2", "o2", "n2"])
        for item in r.items {
            let english = rankingCatalog.first { $0.id == item.itemId }?.language == "en"
            XCTAssertEqual(item.reason, english ? .popularInYourLanguage(language: "en") : .popular)
            XCTAssertEqual(item.reasonText, english ? "Popular in English" : "Popular right now")
        }
        try h.setPersonalization(enabled: true)
        let back = try h.rankCatalog(options: options(limit: 100))
        guard case .model = back.ranker else { return XCTFail("expected the model, got \(back.ranker)") }
        XCTAssertTrue(back.personalized)
    }

    func testModelInfoIsTheBuiltInModel() throws {
        let h = try openStore(dir)
        let info = try XCTUnwrap(try h.modelInfo())
        XCTAssertEqual(info.name, "hearth-ranker")
        XCTAssertEqual(info.version, 1)
        XCTAssertTrue(info.builtin)
        XCTAssertEqual(info.digest.count, 64)
        XCTAssertTrue(info.digest.allSatisfy { "0123456789abcdef".contains($0) }, info.digest)
        try seedRanking(h)
        XCTAssertEqual(try h.rankCatalog(options: options()).ranker, .model(version: info.version, digest: info.digest))
    }

    func testInstallModelFromDirAndModelPackage() throws {
        let packageDir = try modelPackageDir()
        do {
            let h = try openStore(dir)
            try seedRanking(h)
            let builtin = try XCTUnwrap(try h.modelInfo())
            let installed = try h.installModelFromDir(dir: packageDir.path)
            XCTAssertEqual(installed, ModelInfo(name: builtin.name, version: builtin.version, digest: builtin.digest, builtin: false))
            XCTAssertEqual(try h.modelInfo(), installed)
            XCTAssertEqual(try h.rankCatalog(options: options()).ranker, .model(version: 1, digest: builtin.digest))
            // The same package again, as bytes (a download): same version, accepted.
            XCTAssertEqual(try h.installModel(package: try readPackage(packageDir)), installed)
            try h.close()
        }
        // Kept in the data directory for later sessions.
        let h = try openStore(dir)
        XCTAssertEqual(try h.modelInfo()?.builtin, false)
        try seedRanking(h)
        guard case .model = try h.rankCatalog(options: options()).ranker else { return XCTFail("expected the model") }
    }

    func testRejectedPackagesChangeNothing() throws {
        let packageDir = try modelPackageDir()
        let h = try openStore(dir)
        try seedRanking(h)
        let builtin = try XCTUnwrap(try h.modelInfo())
        let good = try readPackage(packageDir)
        func rejected(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> ModelInfo) throws
            -> ModelRejection?
        {
            guard case .ModelRejected(let kind, let reason)? = hearthError(file: file, line: line, body) else {
                XCTFail("expected ModelRejected", file: file, line: line)
                return nil
            }
            XCTAssertFalse(reason.isEmpty, file: file, line: line)
            XCTAssertFalse(describe(kind).isEmpty)
            // Ranking goes on with the model in use.
            XCTAssertEqual(try h.modelInfo(), builtin, file: file, line: line)
            let r = try h.rankCatalog(options: options())
            XCTAssertEqual(r.ranker, .model(version: builtin.version, digest: builtin.digest), file: file, line: line)
            XCTAssertEqual(Set(r.items.map(\.itemId)), rankable, file: file, line: line)
            return kind
        }
        XCTAssertEqual(
            try rejected { try h.installModel(package: with(good, signature: flip(good.signature, at: 10, mask: 0x01))) },
            .badSignature)
        XCTAssertEqual(
            try rejected { try h.installModel(package: with(good, signature: good.signature.prefix(63))) }, .badSignature)
        let otherManifest = Data(String(decoding: good.manifest, as: UTF8.self)
            .replacingOccurrences(of: "\"version\"", with: " \"version\"").utf8)
        XCTAssertNotEqual(otherManifest, good.manifest)
        XCTAssertEqual(try rejected { try h.installModel(package: with(good, manifest: otherManifest)) }, .badSignature)
        XCTAssertEqual(
            try rejected { try h.installModel(package: with(good, weights: good.weights.prefix(good.weights.count - 100))) },
            .truncated)
        let flipped = flip(good.weights, at: good.weights.count / 2, mask: 0x40)
        XCTAssertEqual(try rejected { try h.installModel(package: with(good, weights: flipped)) }, .digestMismatch)
        XCTAssertEqual(
            try rejected { try h.installModel(package: with(good, inferenceNnef: good.inferenceNnef + Data([0]))) }, .digestMismatch)

        // A directory with a file missing: an interrupted download.
        let partial = root.appendingPathComponent("partial")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        for name in packageFiles where name != "weights.bin" {
            try FileManager.default.copyItem(at: packageDir.appendingPathComponent(name), to: partial.appendingPathComponent(name))
        }
        XCTAssertEqual(try rejected { try h.installModelFromDir(dir: partial.path) }, .truncated)
        XCTAssertEqual(try rejected { try h.installModelFromDir(dir: root.appendingPathComponent("nowhere").path) }, .truncated)
    }

    func testInvalidOptionsAndKeysAreInvalidInput() throws {
        let h = try openStore(dir)
        try seedRanking(h)
        let c = [Candidate(itemId: "d2")]
        XCTAssertEqual(invalidField { try h.rank(candidates: c, options: options(limit: 0)) }, "limit")
        XCTAssertEqual(invalidField { try h.rankCatalog(options: options(limit: 1001)) }, "limit")
        func share(_ s: Double) -> RankOptions { RankOptions(context: context, diversity: .off, explorationShare: s) }
        XCTAssertEqual(invalidField { try h.rank(candidates: c, options: share(0.9)) }, "exploration_share")
        XCTAssertEqual(invalidField { try h.rankCatalog(options: share(-0.1)) }, "exploration_share")
        XCTAssertEqual(invalidField { try h.rankCatalog(options: share(.nan)) }, "exploration_share")
        let lateHour = RankOptions(context: RankContext(device: .phone, localHour: 24), diversity: .off)
        XCTAssertEqual(invalidField { try h.rank(candidates: c, options: lateHour) }, "context.local_hour")
        XCTAssertEqual(invalidField { try h.rank(candidates: c, options: options(diversity: .mmr(lambda: 1.5))) }, "diversity.lambda")
        XCTAssertEqual(
            invalidField { try h.rank(candidates: c, options: options(diversity: .categoryCap(maxPerCategory: 0))) },
            "diversity.max_per_category")
        XCTAssertEqual(invalidField { try h.rank(candidates: [Candidate(itemId: "")], options: options()) }, "candidates.item_id")
        let mismatched = Candidate(itemId: "z1", item: entry("z2", "Other", "en", 1, ["drama"]))
        XCTAssertEqual(invalidField { try h.rank(candidates: [mismatched], options: options()) }, "candidates.item")
        XCTAssertEqual(try h.rank(candidates: [], options: options()).items, [])
        try h.close()

        func openWith(_ keys: [String]) throws -> Hearth {
            try Hearth.open(
                config: HearthConfig(dataDir: dir.path, durability: .normal, trustedModelKeys: keys), keys: FixedKeys(keyA))
        }
        for bad in ["not hex", "abcd", String(repeating: "00", count: 31), String(repeating: "0", count: 63),
                    String(repeating: "zz", count: 32), ""] {
            XCTAssertEqual(invalidField { try openWith([bad]) }, "trusted_model_keys", bad)
        }
        // A well-formed key is accepted; the built-in model is still the one in use.
        let stranger = try openWith([String(repeating: "ab", count: 32)])
        XCTAssertEqual(try stranger.modelInfo()?.builtin, true)
        // A package that no trusted key signed is refused: here, the built-in
        // package with another signature.
        let good = try readPackage(try modelPackageDir())
        guard case .ModelRejected(kind: .badSignature, _)? = hearthError({
            try stranger.installModel(package: with(good, signature: Data(repeating: 7, count: 64)))
        }) else { return XCTFail("expected ModelRejected(badSignature)") }
    }
}

// MARK: - A catalog and a history for ranking

let context = RankContext(device: .tv, localHour: 21, locale: "en-GB")

func options(limit: UInt32 = 20, diversity: Diversity = .off) -> RankOptions {
    RankOptions(context: context, diversity: diversity, limit: limit)
}

let thisYear: UInt16 = {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    return UInt16(calendar.component(.year, from: Date()))
}()

func entry(
    _ id: String, _ title: String, _ language: String, _ popularity: Double, _ categories: [String], year: UInt16 = 2019
) -> CatalogItem {
    CatalogItem(
        id: id, title: title, categories: categories, language: language, durationMs: 5_400_000, releaseYear: year,
        popularity: popularity, contentRating: "PG-13")
}

/// Sixteen items, eight categories, English and French, all from 2019.
let rankingCatalog = [
    entry("d1", "Harbor Lights", "en", 40, ["drama"]),
    entry("d2", "Quiet Rooms", "en", 30, ["drama"]),
    entry("d3", "Long Winter", "fr", 20, ["drama"]),
    entry("m1", "Night Shift", "en", 33, ["drama", "crime"]),
    entry("c1", "Laugh Track", "en", 35, ["comedy"]),
    entry("c2", "Office Hours", "fr", 25, ["comedy"]),
    entry("s1", "Goal Rush", "en", 50, ["sports"]),
    entry("s2", "Final Lap", "en", 15, ["sports"]),
    entry("n1", "Evening Brief", "en", 10, ["news"]),
    entry("n2", "Le Journal", "fr", 12, ["news"]),
    entry("h1", "Night Terror", "en", 60, ["horror"]),
    entry("h2", "The Cellar", "en", 45, ["horror", "crime"]),
    entry("k1", "Tiny Dragons", "en", 22, ["kids"]),
    entry("k2", "Paper Boats", "fr", 18, ["kids"]),
    entry("o1", "Deep Blue", "en", 28, ["documentary"]),
    entry("o2", "Stone Age", "fr", 16, ["documentary"]),
]

/// What is left after seedRanking: not blocked (h1, h2), disliked (s2) or completed (d1).
let rankable: Set<String> = ["d2", "d3", "m1", "c1", "c2", "s1", "n1", "n2", "k1", "k2", "o1", "o2"]

/// d1 watched to the end, c1 liked, s1 and o1 played, s2 disliked, h1 played; horror blocked.
func seedRanking(_ h: Hearth) throws {
    try h.upsertCatalog(items: rankingCatalog)
    _ = try h.recordBatch(events: [
        event("d1", .play, at: now - 600_000),
        event("d1", .complete, at: now - 500_000),
        event("c1", .like, at: now - 400_000),
        event("s1", .play, at: now - 300_000),
        event("s2", .dislike, at: now - 250_000),
        event("o1", .play, at: now - 200_000),
        event("h1", .play, at: now - 100_000),
    ])
    try h.setBlockedCategories(categories: ["horror"])
}

/// The English text of each reason, as the library renders it.
func reasonText(_ reason: Reason) -> String {
    switch reason {
    case .becauseYouWatched(_, let title): return "Because you watched \(title)"
    case .newInCategoryYouLike(let category): return "New in \(category)"
    case .popularInYourLanguage(let language): return language == "en" ? "Popular in English" : "unexpected \(language)"
    case .popular: return "Popular right now"
    case .somethingDifferent: return "Something different"
    }
}

/// What an app would tell its user for each rejection (exhaustive: a new variant fails to compile).
func describe(_ kind: ModelRejection) -> String {
    switch kind {
    case .badSignature: return "not signed by a trusted key"
    case .truncated: return "incomplete download"
    case .digestMismatch: return "damaged download"
    case .malformed: return "unreadable package"
    case .schemaMismatch, .wrongShape: return "for another version of Hearth"
    case .unknownOp: return "needs a newer Hearth"
    case .stale: return "older than the model in use"
    }
}

let packageFiles = [
    "manifest.json", "manifest.sig", "inference.onnx", "train_step.onnx", "weights.bin",
    "inference.nnef.tar", "train_step.nnef.tar",
]

func readPackage(_ dir: URL) throws -> ModelPackage {
    func read(_ name: String) throws -> Data { try Data(contentsOf: dir.appendingPathComponent(name)) }
    // The NNEF graphs are the ones libhearth loads (the core's `nnef` feature).
    return ModelPackage(
        manifest: try read("manifest.json"), signature: try read("manifest.sig"), inference: try read("inference.onnx"),
        trainStep: try read("train_step.onnx"), weights: try read("weights.bin"),
        inferenceNnef: try read("inference.nnef.tar"), trainStepNnef: try read("train_step.nnef.tar"))
}

/// `package` with some of its files replaced (records are immutable).
func with(
    _ p: ModelPackage, manifest: Data? = nil, signature: Data? = nil, inferenceNnef: Data? = nil, weights: Data? = nil
) -> ModelPackage {
    ModelPackage(
        manifest: manifest ?? p.manifest, signature: signature ?? p.signature, inference: p.inference,
        trainStep: p.trainStep, weights: weights ?? p.weights, inferenceNnef: inferenceNnef ?? p.inferenceNnef,
        trainStepNnef: p.trainStepNnef)
}

func flip(_ data: Data, at index: Int, mask: UInt8) -> Data {
    var bytes = [UInt8](data)
    bytes[index] ^= mask
    return Data(bytes)
}

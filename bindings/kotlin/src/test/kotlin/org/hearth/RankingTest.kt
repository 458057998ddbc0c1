package org.hearth

import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.security.KeyPairGenerator
import java.security.MessageDigest
import java.security.Signature
import java.time.Year
import java.time.ZoneOffset
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlin.test.fail

/**
 * Ranking and model packages through the generated Kotlin: rank, rankCatalog,
 * modelInfo, installModel, installModelFromDir and ModelRejected.
 */
class RankingTest {
    @get:Rule val tmp = TemporaryFolder()

    private val dir: File by lazy { File(tmp.root, "store") }

    /** The built-in package's files (models/ranker-v1, set by tests/bindings/run.sh). */
    private val packageDir: File by lazy {
        val path = System.getenv("HEARTH_MODEL_DIR") ?: fail("HEARTH_MODEL_DIR is not set (tests/bindings/run.sh sets it)")
        File(path).also { assertTrue(File(it, "manifest.json").isFile, "no manifest.json in $path") }
    }

    @Test fun rankOrdersCandidatesWithTheModelAndExplainsEachItem() {
        openStore(dir).use { h ->
            seedRanking(h)
            val info = assertNotNull(h.modelInfo())
            val fresh = Candidate(
                itemId = "f1",
                item = entry("f1", "Brand New Laughs", "en", 5.0, "comedy").copy(releaseYear = THIS_YEAR),
            )
            val candidates = RANKING_CATALOG.map { Candidate(it.id) } + fresh
            val r = h.rank(candidates, options(limit = 100u))

            assertEquals(Ranker.Model(version = 1uL, digest = info.digest), r.ranker)
            assertTrue(r.personalized)
            // Blocked (h1, h2), disliked (s2) and completed (d1) are left out.
            assertEquals(4u, r.filtered)
            val ids = r.items.map { it.itemId }
            assertEquals(ids.distinct(), ids)
            assertEquals(RANKABLE + "f1", ids.toSet())
            assertTrue("f1" in ids, "the inline candidate, not in the catalog, is ranked")
            assertEquals(r.items.map { it.score }.sortedDescending(), r.items.map { it.score }) // score order
            assertTrue(r.items.all { it.score.isFinite() })
            assertTrue(r.items.none { it.explored })

            val expected = mapOf(
                "d2" to Reason.BecauseYouWatched("d1", "Harbor Lights"),
                "d3" to Reason.BecauseYouWatched("d1", "Harbor Lights"),
                "m1" to Reason.BecauseYouWatched("d1", "Harbor Lights"),
                "c1" to Reason.PopularInYourLanguage("en"),
                "c2" to Reason.BecauseYouWatched("c1", "Laugh Track"),
                "s1" to Reason.PopularInYourLanguage("en"),
                "n1" to Reason.PopularInYourLanguage("en"),
                "n2" to Reason.Popular,
                "k1" to Reason.PopularInYourLanguage("en"),
                "k2" to Reason.Popular,
                "o1" to Reason.PopularInYourLanguage("en"),
                "o2" to Reason.BecauseYouWatched("o1", "Deep Blue"),
                "f1" to Reason.NewInCategoryYouLike("comedy"),
            )
            assertEquals(expected, r.items.associate { it.itemId to it.reason })
            for (item in r.items) {
                assertTrue(item.reasonText.isNotEmpty())
                assertEquals(reasonText(item.reason), item.reasonText, item.itemId)
                assertFalse("horror" in item.reasonText.lowercase())
            }
            // The metadata given inline was for that call only.
            assertEquals(null, h.catalogItem("f1"))
        }
    }

    @Test fun rankCatalogRanksTheCatalogCache() {
        openStore(dir).use { h ->
            seedRanking(h)
            val all = h.rankCatalog(options(limit = 100u))
            assertTrue(all.ranker is Ranker.Model)
            assertTrue(all.personalized)
            assertEquals(4u, all.filtered)
            assertEquals(RANKABLE, all.items.map { it.itemId }.toSet())
            // The same as ranking the catalog's ids.
            val explicit = h.rank(RANKING_CATALOG.map { Candidate(it.id) }, options(limit = 100u))
            assertEquals(all.items.map { it.itemId to it.reason }, explicit.items.map { it.itemId to it.reason })
            assertEquals(all.ranker, explicit.ranker)

            val top5 = h.rankCatalog(options(limit = 5u))
            assertEquals(all.items.take(5), top5.items)

            // With the defaults (limit 20, completed items left out) and
            // excludeWatched: items with any event (c1 liked, s1 and o1 played) go too.
            val unwatched = h.rankCatalog(RankOptions(context = CONTEXT, diversity = Diversity.Off, excludeWatched = true))
            assertEquals(RANKABLE - setOf("c1", "s1", "o1"), unwatched.items.map { it.itemId }.toSet())
            assertEquals(7u, unwatched.filtered)
            // excludeCompleted = false lets the completed d1 back in.
            val withCompleted = h.rankCatalog(options(limit = 100u).copy(excludeCompleted = false))
            assertTrue("d1" in withCompleted.items.map { it.itemId })
            assertEquals(3u, withCompleted.filtered)

            h.deleteAll()
            val empty = h.rankCatalog(options())
            assertEquals(emptyList(), empty.items)
            assertEquals(0u, empty.filtered)
        }
    }

    @Test fun blockedCategoriesAndDislikesNeverAppear() {
        openStore(dir).use { h ->
            seedRanking(h)
            val candidates = RANKING_CATALOG.map { Candidate(it.id) }
            val ids = { r: RankResult -> r.items.map { it.itemId }.toSet() }
            val before = h.rank(candidates, options(limit = 100u))
            assertTrue(ids(before).none { it in setOf("h1", "h2", "s2") })

            // Blocking is case-insensitive and applies to every category of an item.
            h.setBlockedCategories(listOf("Horror", "KIDS", "crime"))
            val after = h.rank(candidates, options(limit = 100u))
            assertEquals(RANKABLE - setOf("k1", "k2", "m1"), ids(after))
            assertEquals(7u, after.filtered)
            // Also for an inline candidate, and in every diversity mode and in the fallback.
            val inline = Candidate("x1", entry("x1", "Scary Inline", "en", 99.0, "horror"))
            for (diversity in listOf(Diversity.Off, Diversity.Mmr(0.5), Diversity.CategoryCap(1u))) {
                val r = h.rank(candidates + inline, options(limit = 100u, diversity = diversity))
                assertTrue(ids(r).none { it in setOf("x1", "h1", "h2", "s2", "k1", "k2", "m1") }, "$diversity")
            }
            // A dislike recorded now takes n1 out.
            h.record(event("n1", EventKind.DISLIKE))
            assertFalse("n1" in ids(h.rank(candidates, options(limit = 100u))))
            h.setPersonalization(false)
            val fallback = h.rank(candidates + inline, options(limit = 100u))
            assertEquals(RANKABLE - setOf("k1", "k2", "m1", "n1"), ids(fallback))
        }
    }

    @Test fun explorationSlotsAreSeededMarkedAndNeverFirst() {
        openStore(dir).use { h ->
            seedRanking(h)
            val exploit = h.rankCatalog(options(limit = 6u)).items.map { it.itemId }
            val explore = options(limit = 8u).copy(explorationShare = 0.25, seed = 42uL)
            val a = h.rankCatalog(explore)
            // Same seed, same row (the scores move in their last digits as
            // the profile's recency decays between the two calls).
            val row = { r: RankResult -> r.items.map { Triple(it.itemId, it.explored, it.reasonText) } }
            assertEquals(row(a), row(h.rankCatalog(explore)))
            assertEquals(8, a.items.size)
            assertEquals(8, a.items.map { it.itemId }.distinct().size)
            val explored = a.items.filter { it.explored }
            assertEquals(2, explored.size) // floor(8 * 0.25)
            assertFalse(a.items.first().explored)
            // The exploited slots are the top six in order; the explored ones come from below the cut.
            assertEquals(exploit, a.items.filterNot { it.explored }.map { it.itemId })
            assertTrue(explored.none { it.itemId in exploit })
            for (e in explored) {
                assertEquals(Reason.SomethingDifferent, e.reason)
                assertEquals("Something different", e.reasonText)
            }
            // Whatever the seed, the first slot is the best guess.
            val rows = (0uL until 30uL).map { h.rankCatalog(explore.copy(seed = it)) }
            assertTrue(rows.all { !it.items.first().explored && it.items.first().itemId == exploit.first() })
            assertTrue(rows.all { r -> r.items.count { it.explored } == 2 })
            assertTrue(rows.map { r -> r.items.map { it.itemId } }.toSet().size > 1, "the seed changes the draw")
            // No exploration without a share.
            assertTrue(h.rankCatalog(explore.copy(explorationShare = 0.0)).items.none { it.explored })
        }
    }

    @Test fun diversityCategoryCapAndMmr() {
        openStore(dir).use { h ->
            seedRanking(h)
            val byId = RANKING_CATALOG.associateBy { it.id }
            val categoriesOf = { r: RankResult -> r.items.flatMap { byId.getValue(it.itemId).categories } }

            // Seven categories among the rankable items (drama, crime, comedy,
            // sports, news, kids, documentary); six rows never need a second one.
            val capped = h.rankCatalog(options(limit = 6u, diversity = Diversity.CategoryCap(1u)))
            assertEquals(6, capped.items.size)
            val cats = categoriesOf(capped)
            assertEquals(cats.distinct(), cats, "two items of one category: ${capped.items.map { it.itemId }}")
            // Past the caps, the rest still fills the row.
            assertEquals(12, h.rankCatalog(options(limit = 100u, diversity = Diversity.CategoryCap(1u))).items.size)
            val twoEach = categoriesOf(h.rankCatalog(options(limit = 8u, diversity = Diversity.CategoryCap(2u))))
            assertTrue(twoEach.groupingBy { it }.eachCount().values.all { it <= 2 }, twoEach.toString())

            val off = h.rankCatalog(options(limit = 10u)).items.map { it.itemId }
            // lambda 1 is pure score order.
            assertEquals(off, h.rankCatalog(options(limit = 10u, diversity = Diversity.Mmr(1.0))).items.map { it.itemId })
            // lambda 0 is pure novelty: the second item shares no category with the first.
            val novel = h.rankCatalog(options(limit = 10u, diversity = Diversity.Mmr(0.0))).items.map { it.itemId }
            assertEquals(off.first(), novel.first())
            assertTrue(byId.getValue(novel[0]).categories.intersect(byId.getValue(novel[1]).categories.toSet()).isEmpty())
            // In between: the same ten best-first candidates' top item, a full row of distinct items.
            val mmr = h.rankCatalog(options(limit = 10u, diversity = Diversity.Mmr(0.5)))
            assertTrue(mmr.ranker is Ranker.Model)
            assertEquals(off.first(), mmr.items.first().itemId)
            assertEquals(10, mmr.items.map { it.itemId }.distinct().size)
            assertTrue(mmr.items.all { it.itemId in RANKABLE && it.reasonText.isNotEmpty() })
        }
    }

    @Test fun personalizationOffFallsBackToPopularity() {
        openStore(dir).use { h ->
            seedRanking(h)
            h.setPersonalization(false)
            val r = h.rankCatalog(options(limit = 100u))
            assertEquals(Ranker.Fallback(FallbackReason.PERSONALIZATION_OFF), r.ranker)
            assertFalse(r.personalized)
            assertEquals(4u, r.filtered)
            // Popularity, the request's language (en-GB) first.
            assertEquals(
                listOf("s1", "c1", "m1", "d2", "o1", "k1", "n1", "c2", "d3", "k2", "o2", "n2"),
                r.items.map { it.itemId },
            )
            for (item in r.items) {
                val english = RANKING_CATALOG.first { it.id == item.itemId }.language == "en"
                assertEquals(if (english) Reason.PopularInYourLanguage("en") else Reason.Popular, item.reason)
                assertEquals(if (english) "Popular in English" else "Popular right now", item.reasonText)
            }
            h.setPersonalization(true)
            val back = h.rankCatalog(options(limit = 100u))
            assertTrue(back.ranker is Ranker.Model)
            assertTrue(back.personalized)
        }
    }

    @Test fun modelInfoIsTheBuiltInModel() {
        openStore(dir).use { h ->
            val info = assertNotNull(h.modelInfo())
            assertEquals("hearth-ranker", info.name)
            assertEquals(1uL, info.version)
            assertTrue(info.builtin)
            assertTrue(Regex("[0-9a-f]{64}").matches(info.digest), info.digest)
            assertEquals(sha256Hex(File(packageDir, "manifest.json").readBytes()), info.digest)
        }
    }

    @Test fun installModelFromDirAndModelPackage() {
        openStore(dir).use { h ->
            seedRanking(h)
            val builtin = assertNotNull(h.modelInfo())
            val installed = h.installModelFromDir(packageDir.path)
            assertEquals(builtin.copy(builtin = false), installed)
            assertEquals(installed, h.modelInfo())
            assertEquals(Ranker.Model(1uL, builtin.digest), h.rankCatalog(options()).ranker)
            // The same package again, as bytes (a download): same version, accepted.
            assertEquals(installed, h.installModel(readPackage(packageDir)))
            h.closeStore()
        }
        // Kept in the data directory for later sessions.
        openStore(dir).use { h ->
            assertEquals(false, h.modelInfo()?.builtin)
            seedRanking(h)
            assertTrue(h.rankCatalog(options()).ranker is Ranker.Model)
        }
    }

    @Test fun rejectedPackagesChangeNothing() {
        openStore(dir).use { h ->
            seedRanking(h)
            val builtin = assertNotNull(h.modelInfo())
            val good = readPackage(packageDir)
            fun rejected(block: () -> Unit): ModelRejection {
                val e = assertFailsWith<HearthException.ModelRejected>(block = block)
                assertTrue(e.reason.isNotEmpty())
                assertTrue(describe(e.kind).isNotEmpty())
                // Ranking goes on with the model in use.
                assertEquals(builtin, h.modelInfo())
                val r = h.rankCatalog(options())
                assertEquals(Ranker.Model(builtin.version, builtin.digest), r.ranker)
                assertEquals(RANKABLE, r.items.map { it.itemId }.toSet())
                return e.kind
            }
            val badSignature = good.signature.copyOf().also { it[10] = (it[10].toInt() xor 0x01).toByte() }
            assertEquals(ModelRejection.BAD_SIGNATURE, rejected { h.installModel(good.copy(signature = badSignature)) })
            assertEquals(ModelRejection.BAD_SIGNATURE, rejected { h.installModel(good.copy(signature = good.signature.copyOf(63))) })
            val otherManifest = good.manifest.toString(Charsets.UTF_8).replaceFirst("\"version\"", " \"version\"").toByteArray()
            assertEquals(ModelRejection.BAD_SIGNATURE, rejected { h.installModel(good.copy(manifest = otherManifest)) })
            val truncated = good.weights.copyOf(good.weights.size - 100)
            assertEquals(ModelRejection.TRUNCATED, rejected { h.installModel(good.copy(weights = truncated)) })
            val flipped = good.weights.copyOf().also { it[it.size / 2] = (it[it.size / 2].toInt() xor 0x40).toByte() }
            assertEquals(ModelRejection.DIGEST_MISMATCH, rejected { h.installModel(good.copy(weights = flipped)) })
            val longer = good.inferenceNnef + byteArrayOf(0)
            assertEquals(ModelRejection.DIGEST_MISMATCH, rejected { h.installModel(good.copy(inferenceNnef = longer)) })

            // A directory with a file missing: an interrupted download.
            val partial = File(tmp.root, "partial").apply { mkdirs() }
            for (name in PACKAGE_FILES - "weights.bin") File(packageDir, name).copyTo(File(partial, name))
            assertEquals(ModelRejection.TRUNCATED, rejected { h.installModelFromDir(partial.path) })
            assertEquals(ModelRejection.TRUNCATED, rejected { h.installModelFromDir(File(tmp.root, "nowhere").path) })
            assertTrue(builtin.builtin)
        }
    }

    @Test fun trustedModelKeysAcceptAnAppSignedPackage() {
        // The app's coordinator key (Ed25519, from the JDK).
        val pair = KeyPairGenerator.getInstance("Ed25519").generateKeyPair()
        val publicKey = pair.public.encoded.takeLast(32).toByteArray() // X.509: 12-byte prefix, then the raw key
        val good = readPackage(packageDir)
        val appSigned = good.copy(
            signature = Signature.getInstance("Ed25519").run {
                initSign(pair.private)
                update(good.manifest)
                sign()
            },
        )
        assertEquals(64, appSigned.signature.size)
        // Not trusted by default: only the release key is.
        openStore(dir).use { h ->
            val e = assertFailsWith<HearthException.ModelRejected> { h.installModel(appSigned) }
            assertEquals(ModelRejection.BAD_SIGNATURE, e.kind)
        }
        val trusting = config(dir).copy(trustedModelKeys = listOf("00".repeat(32), hex(publicKey).uppercase()))
        Hearth.open(trusting, FixedKeys(KEY_A)).use { h ->
            val info = h.installModel(appSigned)
            assertFalse(info.builtin)
            assertEquals("hearth-ranker", info.name)
            assertEquals(info, h.modelInfo())
            seedRanking(h)
            assertEquals(Ranker.Model(info.version, info.digest), h.rankCatalog(options()).ranker)
        }
        // A store opened without the key no longer accepts its installed package: the built-in model takes over.
        openStore(dir).use { h -> assertEquals(true, h.modelInfo()?.builtin) }
    }

    @Test fun invalidOptionsAndKeysAreInvalidInput() {
        openStore(dir).use { h ->
            seedRanking(h)
            fun field(block: () -> Unit) = assertFailsWith<HearthException.InvalidInput>(block = block).field
            val c = listOf(Candidate("d2"))
            assertEquals("limit", field { h.rank(c, options(limit = 0u)) })
            assertEquals("limit", field { h.rankCatalog(options(limit = 1001u)) })
            assertEquals("exploration_share", field { h.rank(c, options().copy(explorationShare = 0.9)) })
            assertEquals("exploration_share", field { h.rankCatalog(options().copy(explorationShare = -0.1)) })
            assertEquals("exploration_share", field { h.rankCatalog(options().copy(explorationShare = Double.NaN)) })
            assertEquals("context.local_hour", field { h.rank(c, options().copy(context = CONTEXT.copy(localHour = 24u))) })
            assertEquals("diversity.lambda", field { h.rank(c, options(diversity = Diversity.Mmr(1.5))) })
            assertEquals("diversity.max_per_category", field { h.rank(c, options(diversity = Diversity.CategoryCap(0u))) })
            assertEquals("candidates.item_id", field { h.rank(listOf(Candidate("")), options()) })
            val mismatched = Candidate("z1", entry("z2", "Other", "en", 1.0, "drama"))
            assertEquals("candidates.item", field { h.rank(listOf(mismatched), options()) })
            // An empty list is a valid (empty) row.
            assertEquals(emptyList(), h.rank(emptyList(), options()).items)
        }
        fun openWith(keys: List<String>) = Hearth.open(config(dir).copy(trustedModelKeys = keys), FixedKeys(KEY_A))
        for (bad in listOf("not hex", "abcd", "00".repeat(31), "0".repeat(63), "zz".repeat(32), "")) {
            val e = assertFailsWith<HearthException.InvalidInput>(bad) { openWith(listOf(bad)) }
            assertEquals("trusted_model_keys", e.field)
        }
        openWith(listOf("ab".repeat(32))).use { assertTrue(it.modelInfo()?.builtin == true) }
    }
}

// ---------------------------------------------------------------------------
// A catalog and a history for ranking
// ---------------------------------------------------------------------------

val CONTEXT = RankContext(device = DeviceClass.TV, localHour = 21u, locale = "en-GB")

fun options(limit: UInt = 20u, diversity: Diversity = Diversity.Off) =
    RankOptions(context = CONTEXT, diversity = diversity, limit = limit)

val THIS_YEAR: UShort = Year.now(ZoneOffset.UTC).value.toUShort()

fun entry(id: String, title: String, language: String, popularity: Double, vararg categories: String) =
    item(id, title, *categories).copy(language = language, popularity = popularity)

/** Sixteen items, eight categories, English and French, all from 2019. */
val RANKING_CATALOG = listOf(
    entry("d1", "Harbor Lights", "en", 40.0, "drama"),
    entry("d2", "Quiet Rooms", "en", 30.0, "drama"),
    entry("d3", "Long Winter", "fr", 20.0, "drama"),
    entry("m1", "Night Shift", "en", 33.0, "drama", "crime"),
    entry("c1", "Laugh Track", "en", 35.0, "comedy"),
    entry("c2", "Office Hours", "fr", 25.0, "comedy"),
    entry("s1", "Goal Rush", "en", 50.0, "sports"),
    entry("s2", "Final Lap", "en", 15.0, "sports"),
    entry("n1", "Evening Brief", "en", 10.0, "news"),
    entry("n2", "Le Journal", "fr", 12.0, "news"),
    entry("h1", "Night Terror", "en", 60.0, "horror"),
    entry("h2", "The Cellar", "en", 45.0, "horror", "crime"),
    entry("k1", "Tiny Dragons", "en", 22.0, "kids"),
    entry("k2", "Paper Boats", "fr", 18.0, "kids"),
    entry("o1", "Deep Blue", "en", 28.0, "documentary"),
    entry("o2", "Stone Age", "fr", 16.0, "documentary"),
)

/** What is left after seedRanking: not blocked (h1, h2), disliked (s2) or completed (d1). */
val RANKABLE = setOf("d2", "d3", "m1", "c1", "c2", "s1", "n1", "n2", "k1", "k2", "o1", "o2")

/** d1 watched to the end, c1 liked, s1 and o1 played, s2 disliked, h1 played; horror blocked. */
fun seedRanking(h: Hearth) {
    h.upsertCatalog(RANKING_CATALOG)
    h.recordBatch(
        listOf(
            event("d1", EventKind.PLAY, NOW - 600_000),
            event("d1", EventKind.COMPLETE, NOW - 500_000),
            event("c1", EventKind.LIKE, NOW - 400_000),
            event("s1", EventKind.PLAY, NOW - 300_000),
            event("s2", EventKind.DISLIKE, NOW - 250_000),
            event("o1", EventKind.PLAY, NOW - 200_000),
            event("h1", EventKind.PLAY, NOW - 100_000),
        ),
    )
    h.setBlockedCategories(listOf("horror"))
}

/** The English text of each reason, as the library renders it. */
fun reasonText(reason: Reason): String = when (reason) {
    is Reason.BecauseYouWatched -> "Because you watched ${reason.title}"
    is Reason.NewInCategoryYouLike -> "New in ${reason.category}"
    is Reason.PopularInYourLanguage -> if (reason.language == "en") "Popular in English" else fail("unexpected ${reason.language}")
    Reason.Popular -> "Popular right now"
    Reason.SomethingDifferent -> "Something different"
}

/** What an app would tell its user for each rejection (exhaustive: a new variant fails to compile). */
fun describe(kind: ModelRejection): String = when (kind) {
    ModelRejection.BAD_SIGNATURE -> "not signed by a trusted key"
    ModelRejection.TRUNCATED -> "incomplete download"
    ModelRejection.DIGEST_MISMATCH -> "damaged download"
    ModelRejection.MALFORMED -> "unreadable package"
    ModelRejection.SCHEMA_MISMATCH -> "for another version of Hearth"
    ModelRejection.WRONG_SHAPE -> "for another version of Hearth"
    ModelRejection.UNKNOWN_OP -> "needs a newer Hearth"
    ModelRejection.STALE -> "older than the model in use"
}

val PACKAGE_FILES = listOf(
    "manifest.json", "manifest.sig", "inference.onnx", "train_step.onnx", "weights.bin",
    "inference.nnef.tar", "train_step.nnef.tar",
)

fun readPackage(dir: File) = ModelPackage(
    manifest = File(dir, "manifest.json").readBytes(),
    signature = File(dir, "manifest.sig").readBytes(),
    inference = File(dir, "inference.onnx").readBytes(),
    trainStep = File(dir, "train_step.onnx").readBytes(),
    weights = File(dir, "weights.bin").readBytes(),
    // The graphs libhearth loads (it is built with the core's `nnef` feature).
    inferenceNnef = File(dir, "inference.nnef.tar").readBytes(),
    trainStepNnef = File(dir, "train_step.nnef.tar").readBytes(),
)

fun hex(bytes: ByteArray): String = bytes.joinToString("") { "%02x".format(it) }

fun sha256Hex(bytes: ByteArray): String = hex(MessageDigest.getInstance("SHA-256").digest(bytes))

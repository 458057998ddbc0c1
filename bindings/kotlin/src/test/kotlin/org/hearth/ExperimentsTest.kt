package org.hearth

import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

/**
 * Experiments through the generated Kotlin: defineExperiment, experimentArm,
 * rankCatalog with an experiment, logOutcome, experimentStatus, and what
 * export and deleteAll do with them.
 */
class ExperimentsTest {
    @get:Rule val tmp = TemporaryFolder()

    private val dir: File by lazy { File(tmp.root, "store") }

    private fun homeRow(treatment: ArmTreatment) = Experiment(
        id = "home-row.v1",
        arms = listOf(
            ExperimentArm(name = "first", share = 1.0, treatment = treatment),
            ExperimentArm(name = "second", share = 1.0, treatment = treatment),
        ),
    )

    @Test fun theArmIsStableAndTheRowFollowsIt() {
        val arm = openStore(dir).use { h ->
            seedRanking(h)
            val arm = h.defineExperiment(homeRow(ArmTreatment.Fallback))
            assertTrue(arm in setOf("first", "second"))
            val row = h.rankCatalog(options().copy(experiment = "home-row.v1"))
            assertEquals(Ranker.Fallback(FallbackReason.EXPERIMENT_ARM), row.ranker)
            assertEquals(arm, row.experimentArm)
            assertEquals(null, h.rankCatalog(options()).experimentArm)
            arm
        }
        openStore(dir).use { h ->
            assertEquals(arm, h.experimentArm("home-row.v1"))
            assertEquals(listOf("home-row.v1"), h.experiments().map { it.id })
        }
    }

    @Test fun outcomesAreLoggedWithTheirPositionExportedAndDeleted() {
        openStore(dir).use { h ->
            seedRanking(h)
            h.defineExperiment(homeRow(ArmTreatment.Model))
            val row = h.rankCatalog(options().copy(experiment = "home-row.v1"))
            assertTrue(row.personalized)
            val second = row.items[1].itemId
            assertEquals(OutcomeLogged.Logged(1u), h.logOutcome("home-row.v1", second, OutcomeKind.PLAY))
            val status = h.experimentStatus("home-row.v1")
            assertEquals(1uL, status.exposures)
            assertEquals(1uL, status.outcomes)
            assertTrue(status.logging)
            // The report: one row, engaged at position 1.
            val report = h.experimentReport("home-row.v1")
            assertEquals(status.arm, report.arm)
            assertEquals(1u, report.exposures)
            assertEquals(1.0 / Math.log(3.0) * Math.log(2.0), report.ndcgAt10, 1e-12)
            assertEquals(1.0, report.hitRateAt10)
            assertEquals(0.0, report.completionRate)

            @Suppress("UNCHECKED_CAST")
            val doc = Json.parse(h.exportJson()) as Map<String, Any?>
            @Suppress("UNCHECKED_CAST")
            val log = (doc["experiments"] as Map<String, Any?>)["log"] as List<Map<String, Any?>>
            assertEquals(2, log.size)
            @Suppress("UNCHECKED_CAST")
            assertEquals(second, (log[1]["entry"] as Map<String, Any?>)["item_id"])

            h.setHistoryPaused(true)
            assertEquals(OutcomeLogged.Paused, h.logOutcome("home-row.v1", second, OutcomeKind.COMPLETE))
            h.setHistoryPaused(false)

            h.deleteAll()
            assertTrue(h.experiments().isEmpty())
            assertFailsWith<HearthException.InvalidInput> { h.experimentArm("home-row.v1") }
        }
    }

    @Test fun aBadDefinitionIsInvalidInputAndChangesNothing() {
        openStore(dir).use { h ->
            val one = Experiment(id = "x", arms = listOf(ExperimentArm("only", 1.0, ArmTreatment.Model)))
            val e = assertFailsWith<HearthException.InvalidInput> { h.defineExperiment(one) }
            assertEquals("experiment.arms", e.field)
            assertTrue(h.experiments().isEmpty())
            assertFalse(h.removeExperiment("x"))
        }
    }
}

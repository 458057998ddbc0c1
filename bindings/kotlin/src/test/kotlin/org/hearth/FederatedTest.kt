package org.hearth

import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.net.ServerSocket
import java.util.Collections
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

/**
 * Federated learning through the generated Kotlin: federatedEligibility,
 * participate, participateVia with an app's own transport (FleetTransport and
 * each TransportFailure), privacyLedger, and HearthException.Federated.
 */
class FederatedTest {
    @get:Rule val tmp = TemporaryFolder()

    private val dir: File by lazy { File(tmp.root, "store") }

    private val ready = DeviceConditions(charging = true, unmeteredNetwork = true, idle = true)

    /** An opted-in store with [plays] plays of items whose ids must never leave it. */
    private fun device(plays: Int = 12, budget: Double = 10.0): Hearth {
        val h = Hearth.open(
            HearthConfig(
                dataDir = dir.path,
                durability = Durability.NORMAL,
                federatedEpsilonBudget = budget,
                federatedMinNewExamples = 10u,
            ),
            FixedKeys(KEY_A),
        )
        h.upsertCatalog((0 until 30).map { item("private-item-$it", "Private Title $it", "drama") })
        h.recordBatch((0 until plays).map { event("private-item-$it", EventKind.COMPLETE, at = NOW - 3_600_000 + it) })
        return h
    }

    /** An app's HTTP stack that records what Hearth asks it to send and fails with [failure]. */
    private class FailingTransport(private val failure: Exception) : FleetTransport {
        val requests: MutableList<Pair<String, ByteArray>> = Collections.synchronizedList(mutableListOf())
        val headers: MutableList<List<HttpHeader>> = Collections.synchronizedList(mutableListOf())

        override fun post(path: String, headers: List<HttpHeader>, body: ByteArray, timeoutMs: ULong): ByteArray {
            requests.add(path to body)
            this.headers.add(headers)
            throw failure
        }
    }

    @Test fun eligibilityNamesEveryReasonAndConsentComesFirst() {
        device(plays = 4).use { h ->
            val none = DeviceConditions(charging = false, unmeteredNetwork = false, idle = false)
            assertEquals(
                Eligibility.NotEligible(
                    listOf(
                        IneligibleReason.NotOptedIn,
                        IneligibleReason.NotCharging,
                        IneligibleReason.MeteredNetwork,
                        IneligibleReason.NotIdle,
                        IneligibleReason.TooFewNewExamples(have = 4u, need = 10u),
                    ),
                ),
                h.federatedEligibility(none),
            )
            h.setFederatedOptIn(true)
            h.recordBatch((4 until 12).map { event("private-item-$it", EventKind.PLAY) })
            assertEquals(Eligibility.Eligible, h.federatedEligibility(ready))
            assertEquals(
                Eligibility.NotEligible(listOf(IneligibleReason.MeteredNetwork)),
                h.federatedEligibility(ready.copy(unmeteredNetwork = false)),
            )
        }
    }

    @Test fun aDeviceWithoutConsentContactsNobody() {
        device().use { h ->
            val transport = FailingTransport(TransportFailure.Status(503u))
            assertEquals(
                ParticipationOutcome.NotEligible(listOf(IneligibleReason.NotOptedIn)),
                h.participateVia(transport, ready),
            )
            assertTrue(transport.requests.isEmpty())
            assertEquals(
                ParticipationOutcome.NotEligible(listOf(IneligibleReason.NotOptedIn)),
                h.participate("http://127.0.0.1:9", ready),
            )
        }
    }

    @Test fun aNewBudgetThatIsSpentStopsTheDevice() {
        device(budget = 10.0).use { h ->
            val ledger = h.privacyLedger()
            assertEquals(emptyList(), ledger.entries)
            assertEquals(0.0, ledger.epsilonSpent)
            assertEquals(1e-6, ledger.delta)
            assertEquals(10.0, ledger.epsilonBudget)
        }
        // The ledger is in the export: an imported one counts against the budget.
        val entry = """{"run_id":7,"round":1,"at_ms":${NOW - DAY_MS},"status":"Sent","bytes_sent":600000,
            |"norm_before_clip":2.5,"norm_after_clip":1.0,"clip_norm":1.0,"noise_multiplier":0.5,
            |"sampling_rate":1.0,"epsilon_total":0.0}""".trimMargin()
        val doc = device().use { it.exportJson() }
        assertTrue("\"privacy_ledger\":[]" in doc.replace(" ", ""))
        File(dir.parentFile, "other").let { other ->
            Hearth.open(config(other), FixedKeys(KEY_B)).use { h ->
                h.importJson(doc.replace("\"privacy_ledger\": []", "\"privacy_ledger\": [$entry]"))
                h.setFederatedOptIn(true)
                val ledger = h.privacyLedger()
                assertEquals(1, ledger.entries.size)
                assertEquals(UploadStatus.SENT, ledger.entries[0].status)
                assertEquals(7uL, ledger.entries[0].runId)
                // An entry from before secure aggregation reads as a plain upload.
                assertEquals(Aggregation.PLAIN, ledger.entries[0].aggregation)
                // And from before distributed noise, as noise the coordinator added.
                assertEquals(NoiseMode.CENTRAL, ledger.entries[0].noiseMode)
                assertEquals(RoundTask.TRAINING, ledger.entries[0].task)
                assertTrue(ledger.epsilonSpent > 10.0, "one round at z = 0.5, q = 1 spends more than 10")
                val outcome = h.federatedEligibility(ready) as Eligibility.NotEligible
                assertTrue(outcome.reasons.any { it is IneligibleReason.BudgetSpent && it.budget == 10.0 })
            }
        }
    }

    @Test fun transportFailuresBecomeTypedErrorsAndOnlyTheNodeKeyLeaves() {
        device().use { h ->
            h.setFederatedOptIn(true)
            val cases = listOf(
                TransportFailure.Status(403u) to FederatedFailure.REJECTED,
                TransportFailure.Status(500u) to FederatedFailure.HTTP,
                // A Retry-After (an hour) longer than the call's bound: fails at once.
                TransportFailure.Throttled(503u, 3_600_000uL) to FederatedFailure.HTTP,
                TransportFailure.TooLarge() to FederatedFailure.TOO_LARGE,
                TransportFailure.Timeout() to FederatedFailure.TIMEOUT,
                TransportFailure.Io("connection reset") to FederatedFailure.NETWORK,
                // An exception the app did not mean to throw.
                IllegalStateException("OkHttp broke") to FederatedFailure.NETWORK,
            )
            for ((failure, kind) in cases) {
                val transport = FailingTransport(failure)
                val e = assertFailsWith<HearthException.Federated> { h.participateVia(transport, ready) }
                assertEquals(kind, e.kind, "$failure")
                assertTrue(transport.requests.isNotEmpty())
                for ((path, body) in transport.requests) {
                    assertEquals("/v1/fleet/activate-node", path)
                    assertTrue(body.contains("-----BEGIN PUBLIC KEY-----".toByteArray()))
                    assertFalse(body.contains("private-item".toByteArray()))
                    assertFalse(body.contains("Private Title".toByteArray()))
                }
                val names = transport.headers.first().map { it.name }.toSet()
                assertEquals(setOf("flwr-public-key", "flwr-signature", "flwr-timestamp"), names)
            }
            assertEquals(emptyList(), h.privacyLedger().entries, "nothing was uploaded")
            // The store is unharmed.
            assertEquals(12uL, h.eventCount())
        }
    }

    @Test fun anAppCancelsARoundFromAnotherThread() {
        device().use { h ->
            h.setFederatedOptIn(true)
            // As WorkManager's stop would: the round is cancelled while the
            // transport's call is in flight; Hearth stops instead of retrying.
            var calls = 0
            val transport = object : FleetTransport {
                override fun post(path: String, headers: List<HttpHeader>, body: ByteArray, timeoutMs: ULong): ByteArray {
                    calls++
                    Thread { h.cancelParticipation() }.apply { start() }.join()
                    throw TransportFailure.Timeout()
                }
            }
            val started = System.nanoTime()
            val e = assertFailsWith<HearthException.Federated> { h.participateVia(transport, ready) }
            assertEquals(FederatedFailure.CANCELLED, e.kind)
            assertEquals(1, calls, "no retry after the cancel")
            assertTrue(System.nanoTime() - started < 2_000_000_000L)
            assertEquals(emptyList(), h.privacyLedger().entries)
        }
    }

    @Test fun aCoordinatorUrlMustBePlainHttp() {
        device().use { h ->
            h.setFederatedOptIn(true)
            for (url in listOf("https://coordinator.example", "", "coordinator:9092")) {
                val e = assertFailsWith<HearthException.InvalidInput> { h.participate(url, ready) }
                assertEquals("coordinator_url", e.field)
            }
            val port = ServerSocket(0).use { it.localPort }
            val e = assertFailsWith<HearthException.Federated> { h.participate("http://127.0.0.1:$port", ready) }
            assertEquals(FederatedFailure.NETWORK, e.kind)
        }
    }
}

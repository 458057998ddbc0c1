package org.hearth

import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.time.Instant
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.fail

/**
 * Segments, segment reports and notification decisions through the
 * generated Kotlin: segments, segmentsAt, segmentConfig, setSegmentConfig,
 * setSegmentReportsOptIn, segmentReport, shouldNotify, notificationPolicy,
 * setNotificationPolicy and setNotificationsEnabled.
 */
class SegmentsTest {
    @get:Rule val tmp = TemporaryFolder()

    private val dir: File by lazy { File(tmp.root, "store") }

    private fun invalidField(block: () -> Unit): String = assertFailsWith<HearthException.InvalidInput>(block = block).field

    private fun utc(s: String): Long = Instant.parse(s).toEpochMilli()

    private fun candidate(zone: String, at: String, urgency: Urgency = Urgency.NORMAL) = NotificationCandidate(
        kind = NotificationKind.NEW_EPISODE,
        itemId = null,
        category = null,
        urgency = urgency,
        timeZone = zone,
        atMs = utc(at),
    )

    @Test fun segmentsFollowAScriptedHistory() {
        openStore(dir).use { h ->
            h.upsertCatalog(listOf(item("d1", "Harbor Lights", "drama"), item("d2", "Harbor Days", "drama"), item("d3", "Harbor Nights", "drama")))
            val fresh = h.segments()
            assertEquals(LifecycleStage.NEW, fresh.lifecycle)
            assertEquals(EngagementLevel.LIGHT, fresh.engagement)
            assertNull(fresh.daysSinceLastAction)

            // Forty days ago, one evening: three dramas back to back (one
            // 75-minute session, a binge).
            val t0 = NOW - 40 * DAY_MS
            val min = 60_000L
            h.recordBatch(
                listOf(
                    event("d1", EventKind.PLAY, t0), event("d1", EventKind.COMPLETE, t0 + 25 * min),
                    event("d2", EventKind.PLAY, t0 + 26 * min), event("d2", EventKind.COMPLETE, t0 + 50 * min),
                    event("d3", EventKind.PLAY, t0 + 51 * min), event("d3", EventKind.COMPLETE, t0 + 75 * min),
                ),
            )
            val s = h.segmentsAt(t0 + 2 * 3_600_000L)
            assertEquals(LifecycleStage.NEW, s.lifecycle)
            assertEquals(EngagementLevel.REGULAR, s.engagement)
            assertEquals(1.0, s.sessionsPerWeek, 1e-9)
            assertEquals(75.0, s.minutesPerWeek, 1e-9)
            assertEquals(1u, s.bingeSessions)
            assertTrue(s.bingeWatcher)
            assertFalse(s.abandoner)
            assertEquals("drama", s.topCategories.single().category)
            assertEquals(1.0, s.topCategories.single().strength, 1e-9)
            assertEquals(listOf(21u), s.preferredHours)
            assertEquals(Daypart.EVENING, s.daypart)
            assertEquals(DeviceClass.TV, s.primaryDevice)
            assertEquals(LifecycleStage.AT_RISK, h.segmentsAt(t0 + 10 * DAY_MS).lifecycle)
            assertEquals(LifecycleStage.DORMANT, h.segmentsAt(t0 + 35 * DAY_MS).lifecycle)
            val now = h.segments()
            assertEquals(LifecycleStage.DORMANT, now.lifecycle)
            assertEquals(39u, now.daysSinceLastAction) // 40 days less 75 minutes

            // Thresholds come from the config; a bad one changes nothing.
            val config = h.segmentConfig()
            assertEquals(7u, config.atRiskAfterDays)
            assertEquals(emptyList(), config.reportCategories)
            val relaxed = config.copy(atRiskAfterDays = 20u, reportCategories = listOf("drama", "comedy"))
            h.setSegmentConfig(relaxed)
            assertEquals(LifecycleStage.NEW, h.segmentsAt(t0 + 10 * DAY_MS).lifecycle)
            assertEquals("window_days", invalidField { h.setSegmentConfig(relaxed.copy(windowDays = 90u)) })
            assertEquals("report_epsilon", invalidField { h.setSegmentConfig(relaxed.copy(reportEpsilon = -1.0)) })
            assertEquals(relaxed, h.segmentConfig())
            assertEquals("as_of_ms", invalidField { h.segmentsAt(5L) })
        }
    }

    @Test fun segmentReportsNeedConsentAndRepeatThemselves() {
        openStore(dir).use { h ->
            assertFalse(h.settings().segmentReportsOptIn)
            assertEquals(SegmentReportOutcome.NoConsent, h.segmentReport())
            h.setSegmentReportsOptIn(true)
            assertTrue(h.settings().segmentReportsOptIn)
            val first = (h.segmentReport() as? SegmentReportOutcome.Report ?: fail("no report")).report
            assertEquals(18, first.labels.size)
            assertEquals("lifecycle.new", first.labels.first())
            assertEquals(3, first.bits.size)
            assertEquals(2.0, first.epsilon)
            assertEquals(2.0, first.epsilonSpent)
            assertEquals(0.2, first.bitEpsilon, 1e-12)
            assertTrue(first.keepProbability > 0.5 && first.keepProbability < 0.6)
            val again = (h.segmentReport() as SegmentReportOutcome.Report).report
            assertContentEquals(first.bits, again.bits)
            assertEquals(0.0, again.epsilonSpent)
            h.setSegmentReportsOptIn(false)
            assertEquals(SegmentReportOutcome.NoConsent, h.segmentReport())
        }
    }

    @Test fun notificationDecisionsFollowTheUsersZoneAndCaps() {
        openStore(dir).use { h ->
            assertEquals(NotificationPolicy(maxPerDay = 2u, maxPerWeek = 6u, quietStartMinute = 1320u, quietEndMinute = 480u), h.notificationPolicy())
            h.setNotificationPolicy(NotificationPolicy(maxPerDay = 1u, maxPerWeek = 6u, quietStartMinute = 1320u, quietEndMinute = 480u))
            val ny = "America/New_York"
            // 10 March 2024, after the change to EDT: 11:30Z is 07:30, quiet until 08:00 EDT = 12:00Z.
            val held = h.shouldNotify(candidate(ny, "2024-03-10T11:30:00Z"))
            assertFalse(held.allowed)
            assertEquals(NotifyReason.QUIET_HOURS, held.reason)
            assertEquals("Quiet hours, 22:00 to 08:00", held.reasonText)
            assertEquals(utc("2024-03-10T12:00:00Z"), held.retryAtMs)
            assertNull(h.shouldNotify(candidate(ny, "2024-03-10T11:30:00Z", Urgency.LOW)).retryAtMs)
            val ok = h.shouldNotify(candidate(ny, "2024-03-10T12:30:00Z"))
            assertTrue(ok.allowed)
            assertEquals(NotifyReason.ALLOWED, ok.reason)
            h.closeStore()
        }
        // The send is sealed in the store: the day's cap holds after reopening.
        openStore(dir).use { h ->
            val capped = h.shouldNotify(candidate("America/New_York", "2024-03-10T15:00:00Z"))
            assertEquals(NotifyReason.DAILY_CAP_REACHED, capped.reason)
            assertEquals(utc("2024-03-11T12:00:00Z"), capped.retryAtMs)
            assertTrue(h.shouldNotify(candidate("America/New_York", "2024-03-10T15:00:00Z", Urgency.HIGH)).allowed)

            assertTrue(h.settings().notificationsEnabled)
            h.setNotificationsEnabled(false)
            assertEquals(NotifyReason.NOTIFICATIONS_OFF, h.shouldNotify(candidate("UTC", "2024-06-01T12:00:00Z")).reason)
            h.setNotificationsEnabled(true)
            h.setBlockedCategories(listOf("horror"))
            val blocked = candidate("UTC", "2024-06-01T12:00:00Z").copy(category = "horror")
            assertEquals(NotifyReason.BLOCKED_CATEGORY, h.shouldNotify(blocked).reason)

            assertEquals("time_zone", invalidField { h.shouldNotify(candidate("Mars/Olympus_Mons", "2024-06-01T12:00:00Z")) })
            val policy = h.notificationPolicy()
            assertEquals("quiet_start_minute", invalidField { h.setNotificationPolicy(policy.copy(quietStartMinute = 1440u)) })
            assertEquals(policy, h.notificationPolicy())
        }
    }
}

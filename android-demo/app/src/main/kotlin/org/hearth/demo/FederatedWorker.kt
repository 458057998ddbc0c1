package org.hearth.demo

import android.content.Context
import android.net.ConnectivityManager
import android.os.BatteryManager
import android.util.Log
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingPeriodicWorkPolicy
import androidx.work.NetworkType
import androidx.work.PeriodicWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.hearth.DeviceConditions
import org.hearth.HearthException
import org.hearth.demo.model.DemoModel
import org.hearth.demo.net.HttpFleetTransport
import java.util.concurrent.TimeUnit

/**
 * One federated round a day, when the device is charging, on an unmetered
 * network and idle (WorkManager's constraints), with the user's opt-in.
 * Hearth checks eligibility again itself (opt-in, conditions, enough new
 * viewing, time since the last round, privacy budget) before contacting
 * anything, and the round runs over HttpFleetTransport (HTTPS).
 *
 * participateVia blocks (a bounded wait for a round, training, the upload:
 * minutes at most), on Dispatchers.IO. If WorkManager stops the worker, the
 * coroutine is cancelled and the worker tells Hearth (cancelParticipation),
 * whose call then returns within its current network call.
 */
class FederatedWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result = withContext(Dispatchers.IO) {
        val url = BuildConfig.HEARTH_COORDINATOR_URL
        if (url.isEmpty()) return@withContext Result.success()
        try {
            val model = (applicationContext as DemoApplication).model()
            val outcome = coroutineScope {
                // WorkManager stopping the worker cancels this scope; the blocking call
                // cannot see that, so a sibling tells Hearth.
                val onStop = launch {
                    try {
                        awaitCancellation()
                    } finally {
                        model.cancelParticipation()
                    }
                }
                try {
                    model.participate(HttpFleetTransport(url), conditions())
                } finally {
                    onStop.cancel()
                }
            }
            Log.i(LogcatLogger.TAG, "federated round: ${DemoModel.describe(outcome)}")
        } catch (e: HearthException) {
            // Federated (coordinator unreachable or refusing), KeyUnavailable, ...: the message
            // carries no personal data. Try again at the next period; the ledger says what was sent.
            Log.w(LogcatLogger.TAG, "federated round failed: ${e.javaClass.simpleName} ${e.message}")
        }
        // Periodic work runs again tomorrow whatever this run did; Hearth
        // itself refuses a second round within its minimum interval.
        Result.success()
    }

    /**
     * What the device is doing now, checked rather than assumed: the
     * constraints held when the worker started, but the charger can be pulled
     * since. Android has no query for JobScheduler's "idle", so the
     * constraint stands for it.
     */
    private fun conditions(): DeviceConditions {
        val battery = applicationContext.getSystemService(BatteryManager::class.java)
        val connectivity = applicationContext.getSystemService(ConnectivityManager::class.java)
        return DeviceConditions(
            charging = battery?.isCharging == true,
            unmeteredNetwork = connectivity?.isActiveNetworkMetered == false,
            idle = true,
        )
    }

    companion object {
        private const val NAME = "hearth-federated"

        /** Schedules the daily round when the user opted in (and a coordinator is configured), cancels it otherwise. */
        fun schedule(context: Context, optedIn: Boolean) {
            val workManager = WorkManager.getInstance(context)
            if (!optedIn || BuildConfig.HEARTH_COORDINATOR_URL.isEmpty()) {
                workManager.cancelUniqueWork(NAME)
                return
            }
            val constraints = Constraints.Builder()
                .setRequiresCharging(true)
                .setRequiredNetworkType(NetworkType.UNMETERED)
                .setRequiresDeviceIdle(true)
                .build()
            // No backoff criteria: JobScheduler does not allow them on idle jobs.
            val request = PeriodicWorkRequestBuilder<FederatedWorker>(1, TimeUnit.DAYS)
                .setConstraints(constraints)
                .build()
            workManager.enqueueUniquePeriodicWork(NAME, ExistingPeriodicWorkPolicy.KEEP, request)
        }
    }
}

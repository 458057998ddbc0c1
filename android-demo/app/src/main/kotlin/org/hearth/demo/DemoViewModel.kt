package org.hearth.demo

import android.app.Application
import android.content.res.Configuration
import android.net.ConnectivityManager
import android.os.BatteryManager
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.hearth.DeviceClass
import org.hearth.DeviceConditions
import org.hearth.EventContext
import org.hearth.HearthException
import org.hearth.demo.model.DemoModel
import org.hearth.demo.model.HomeRow
import org.hearth.demo.model.PrivacyState
import java.io.File
import java.util.Calendar
import java.util.Locale

/** What the two screens draw. */
data class UiState(
    val home: HomeRow? = null,
    val privacy: PrivacyState? = null,
    val loading: Boolean = true,
    /** The last failure, for a banner (Hearth's messages carry no personal data). */
    val error: String? = null,
)

/**
 * The screens' state over [DemoModel]. Every Hearth call runs on
 * Dispatchers.IO; after each change both screens are reloaded from the store,
 * so what they show is what Hearth holds.
 */
class DemoViewModel(application: Application) : AndroidViewModel(application) {
    private val app: DemoApplication get() = getApplication()
    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state.asStateFlow()

    init {
        refresh()
    }

    fun refresh() = change { }

    /** The user opened an item: a play is recorded (nothing while history is paused), and the row re-ranks. */
    fun watch(itemId: String) = change { it.watch(itemId, eventContext(), System.currentTimeMillis()) }

    fun setPersonalization(enabled: Boolean) = change { it.setPersonalization(enabled) }

    fun setHistoryPaused(paused: Boolean) = change { it.setHistoryPaused(paused) }

    fun setFederatedOptIn(optIn: Boolean) = change {
        it.setFederatedOptIn(optIn)
        FederatedWorker.schedule(app, optIn)
    }

    fun setBlocked(category: String, blocked: Boolean) = change { it.setBlocked(category, blocked) }

    fun forget(itemId: String) = change { it.forget(itemId) }

    /** Deletes everything (the opt-in goes back to off with the settings), then puts the public catalog back. */
    fun deleteAll() = change {
        it.deleteAll()
        FederatedWorker.schedule(app, optedIn = false)
        it.seedCatalogIfEmpty()
    }

    /**
     * Writes the export to the cache's exports directory (shared through the
     * FileProvider) and returns the file; null if it failed. The file holds
     * the user's history: it is overwritten by the next export.
     */
    suspend fun exportToFile(): File? = withContext(Dispatchers.IO) {
        try {
            val json = app.model().exportJson()
            File(app.cacheDir, "exports").run {
                mkdirs()
                File(this, "hearth-export.json").apply { writeText(json) }
            }
        } catch (e: HearthException) {
            _state.update { it.copy(error = describe(e)) }
            null
        }
    }

    private fun change(action: (DemoModel) -> Unit) {
        viewModelScope.launch {
            _state.update { it.copy(loading = true) }
            val next = withContext(Dispatchers.IO) {
                try {
                    val model = app.model()
                    action(model)
                    UiState(home = model.home(homeOptions()), privacy = model.privacy(conditionsNow()), loading = false)
                } catch (e: HearthException) {
                    _state.value.copy(loading = false, error = describe(e))
                }
            }
            _state.value = next
        }
    }

    private fun describe(e: HearthException): String = when (e) {
        is HearthException.KeyUnavailable -> "The device is locked; try again after unlocking."
        is HearthException.StorageFull -> "The device is out of space."
        else -> "Something went wrong (${e.javaClass.simpleName})."
    }

    private fun deviceClass(): DeviceClass {
        val configuration = app.resources.configuration
        return when {
            configuration.uiMode and Configuration.UI_MODE_TYPE_MASK == Configuration.UI_MODE_TYPE_TELEVISION -> DeviceClass.TV
            configuration.smallestScreenWidthDp >= 600 -> DeviceClass.TABLET
            else -> DeviceClass.PHONE
        }
    }

    private fun hour(): UByte = Calendar.getInstance().get(Calendar.HOUR_OF_DAY).toUByte()

    private fun eventContext() = EventContext(device = deviceClass(), localHour = hour(), locale = Locale.getDefault().toLanguageTag())

    private fun homeOptions() = DemoModel.homeOptions(deviceClass(), hour(), Locale.getDefault().toLanguageTag())

    /** For "why the next round would not start": the device now, in use (so not idle). */
    private fun conditionsNow(): DeviceConditions {
        val battery = app.getSystemService(BatteryManager::class.java)
        val connectivity = app.getSystemService(ConnectivityManager::class.java)
        return DeviceConditions(
            charging = battery?.isCharging == true,
            unmeteredNetwork = connectivity?.isActiveNetworkMetered == false,
            idle = false,
        )
    }
}

package org.hearth.demo

import android.app.Application
import android.util.Log
import org.hearth.Durability
import org.hearth.HearthConfig
import org.hearth.HearthException
import org.hearth.LogLevel
import org.hearth.demo.model.DemoModel
import org.hearth.setLogger
import java.io.File

/** Owns the one Hearth store of the process, shared by the screens and the federated worker. */
class DemoApplication : Application() {
    @Volatile private var store: DemoModel? = null

    override fun onCreate() {
        super.onCreate()
        // Quick (no disk): fine on the main thread.
        try {
            setLogger(LogcatLogger(), if (BuildConfig.DEBUG) LogLevel.DEBUG else LogLevel.INFO)
        } catch (e: HearthException) {
            Log.w(LogcatLogger.TAG, "no Hearth logging: ${e.javaClass.simpleName}")
        }
    }

    /**
     * The store, opened on first use. Blocking (it reads the key and the
     * disk): call it from Dispatchers.IO only. Throws HearthException, e.g.
     * KeyUnavailable; the next call tries again.
     */
    fun model(): DemoModel = store ?: synchronized(this) { store ?: open().also { store = it } }

    private fun open(): DemoModel {
        val config = HearthConfig(
            dataDir = File(noBackupFilesDir, "hearth").path,
            durability = Durability.NORMAL,
        )
        val opened = DemoModel.openOrReset(config, KeystoreKeys(this))
        if (opened.wasReset) Log.w(LogcatLogger.TAG, "the store's key was lost; started a new, empty store")
        val model = DemoModel(opened.hearth)
        // A real app gets the catalog from its backend; the demo ships one.
        model.seedCatalogIfEmpty()
        return model
    }
}

package org.hearth.demo

import android.util.Log
import org.hearth.LogLevel
import org.hearth.HearthLogger

/**
 * Hearth's log lines to logcat, tag "Hearth". Hearth's messages carry no item
 * id, title, category or timestamp. Called on whatever thread logs, possibly
 * while Hearth holds its lock: it must be quick, must not call Hearth, and
 * must not throw (a throwing logger fails the Hearth call with Internal).
 */
class LogcatLogger : HearthLogger {
    override fun log(level: LogLevel, target: String, message: String) {
        val priority = when (level) {
            LogLevel.ERROR -> Log.ERROR
            LogLevel.WARN -> Log.WARN
            LogLevel.INFO -> Log.INFO
            LogLevel.DEBUG -> Log.DEBUG
            LogLevel.TRACE -> Log.VERBOSE
        }
        Log.println(priority, TAG, "$target: $message")
    }

    companion object {
        const val TAG = "Hearth"
    }
}

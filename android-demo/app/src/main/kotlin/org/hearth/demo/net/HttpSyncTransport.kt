// Hearth's SyncTransport over java.net.HttpURLConnection, against the app's
// own backend: a flat store of opaque blobs for the signed-in person. Plain
// Kotlin: the console twin compiles and exercises this same file against a
// local backend (tests/bindings/run.sh, suite kotlin-console).
package org.hearth.demo.net

import org.hearth.SyncBlob
import org.hearth.SyncTransport
import org.hearth.SyncTransportException
import java.io.ByteArrayOutputStream
import java.io.IOException
import java.io.InputStream
import java.net.HttpURLConnection
import java.net.URI

/**
 * The demo backend's blob API, under [baseUrl] (the person's own space,
 * which the bearer [token] of their session with the app opens):
 *
 * - `PUT <base>/<name>` stores the body under the name;
 * - `GET <base>/` lists the blobs, one `<name> <size>` per line;
 * - `GET <base>/<name>` returns one (404: none);
 * - `DELETE <base>/<name>` removes one (404 counts as done).
 *
 * The backend only ever stores and returns bytes sealed on the person's
 * devices. A failure to connect, a timeout or a 5xx/429 is
 * [SyncTransportException.Unavailable] (Hearth stops the sync and the next
 * one goes on); any other status is [SyncTransportException.Refused].
 * [baseUrl] must be `https://` unless [allowCleartext] (a backend on
 * localhost in a test). Each call is bounded by [timeoutMs].
 */
class HttpSyncTransport(
    baseUrl: String,
    private val token: String,
    private val timeoutMs: Int = 15_000,
    allowCleartext: Boolean = false,
) : SyncTransport {
    private val base: String = baseUrl.trimEnd('/')

    init {
        val scheme = URI.create(base).scheme
        require(scheme == "https" || (allowCleartext && scheme == "http")) { "the backend URL must be https://" }
    }

    override fun put(name: String, blob: ByteArray) {
        call("PUT", "/$name", blob)
    }

    override fun list(): List<SyncBlob> {
        val text = call("GET", "/", null) ?: throw SyncTransportException.Refused("no listing")
        return text.decodeToString().lineSequence().filter { it.isNotBlank() }.map { line ->
            val (name, size) = line.trim().split(' ').takeIf { it.size == 2 }
                ?: throw SyncTransportException.Unavailable("a listing line that is not <name> <size>")
            SyncBlob(name = name, size = size.toULongOrNull() ?: throw SyncTransportException.Unavailable("a bad size"))
        }.toList()
    }

    override fun get(name: String): ByteArray? = call("GET", "/$name", null)

    override fun delete(name: String) {
        call("DELETE", "/$name", null)
    }

    /** The reply body of a 2xx; null for a 404 (no such blob). */
    private fun call(method: String, path: String, body: ByteArray?): ByteArray? {
        val connection = try {
            URI.create(base + path).toURL().openConnection() as HttpURLConnection
        } catch (e: IllegalArgumentException) {
            throw SyncTransportException.Refused("bad URL")
        } catch (e: IOException) {
            throw SyncTransportException.Unavailable(reason(e))
        }
        try {
            connection.requestMethod = method
            connection.useCaches = false
            connection.instanceFollowRedirects = false
            connection.connectTimeout = timeoutMs
            connection.readTimeout = timeoutMs
            connection.setRequestProperty("authorization", "Bearer $token")
            if (body != null) {
                connection.doOutput = true
                connection.setFixedLengthStreamingMode(body.size)
                connection.setRequestProperty("content-type", "application/octet-stream")
                connection.outputStream.use { it.write(body) }
            }
            val code = connection.responseCode
            return when {
                code in 200..299 -> connection.inputStream.use { read(it) }
                code == 404 && method != "PUT" -> null
                code == 429 || code >= 500 -> throw SyncTransportException.Unavailable("HTTP $code")
                else -> throw SyncTransportException.Refused("HTTP $code")
            }
        } catch (e: IOException) {
            throw SyncTransportException.Unavailable(reason(e))
        } finally {
            connection.disconnect()
        }
    }

    /** A reply of at most 4 MiB (a record is at most 256 KiB; a listing of 100,000 blobs about 3 MiB). */
    private fun read(input: InputStream): ByteArray {
        val out = ByteArrayOutputStream()
        val chunk = ByteArray(16 * 1024)
        while (true) {
            val n = input.read(chunk)
            if (n < 0) return out.toByteArray()
            if (out.size() + n > MAX_REPLY) throw SyncTransportException.Refused("reply too large")
            out.write(chunk, 0, n)
        }
    }

    /** The exception's kind and the first line of its message (never a body). */
    private fun reason(e: IOException): String =
        e.javaClass.simpleName + (e.message?.lineSequence()?.firstOrNull()?.take(120)?.let { ": $it" } ?: "")

    private companion object {
        const val MAX_REPLY = 4 shl 20
    }
}

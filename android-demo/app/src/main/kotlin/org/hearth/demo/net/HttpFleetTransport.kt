// Hearth's FleetTransport over java.net.HttpURLConnection: the platform's HTTPS
// stack (TLS, proxies, the app's network security config), no extra library.
// Plain Kotlin: the console twin compiles and exercises this same file against
// a local server (tests/bindings/run.sh, suite kotlin-console).
package org.hearth.demo.net

import org.hearth.FleetTransport
import org.hearth.HttpHeader
import org.hearth.TransportFailure
import java.io.ByteArrayOutputStream
import java.io.IOException
import java.io.InputStream
import java.net.HttpURLConnection
import java.net.SocketTimeoutException
import java.net.URI

/**
 * POSTs each Fleet API message to [baseUrl] joined with the path Hearth
 * gives, within the timeout Hearth gives, and maps every failure to a
 * [TransportFailure]. [baseUrl] must be `https://` unless [allowCleartext]
 * (a coordinator on localhost in a test). Replies above [maxReplyBytes] are
 * refused. Redirects are not followed (a 3xx is a failure). Thread-safe: one
 * connection per call (HttpURLConnection pools them underneath).
 */
class HttpFleetTransport(
    baseUrl: String,
    private val maxReplyBytes: Int = 64 shl 20,
    allowCleartext: Boolean = false,
) : FleetTransport {
    private val base: String = baseUrl.trimEnd('/')

    init {
        val scheme = URI.create(base).scheme
        require(scheme == "https" || (allowCleartext && scheme == "http")) { "the coordinator URL must be https://" }
    }

    override fun post(path: String, headers: List<HttpHeader>, body: ByteArray, timeoutMs: ULong): ByteArray {
        val timeout = timeoutMs.coerceIn(1uL, Int.MAX_VALUE.toULong()).toLong()
        val deadline = System.nanoTime() + timeout * 1_000_000
        val connection = try {
            URI.create(base + path).toURL().openConnection() as HttpURLConnection
        } catch (e: IllegalArgumentException) {
            throw TransportFailure.Io("bad URL")
        } catch (e: IOException) {
            throw TransportFailure.Io(reason(e))
        }
        try {
            connection.requestMethod = "POST"
            connection.doOutput = true
            connection.useCaches = false
            connection.instanceFollowRedirects = false
            connection.connectTimeout = timeout.toInt()
            connection.readTimeout = timeout.toInt()
            connection.setFixedLengthStreamingMode(body.size)
            connection.setRequestProperty("content-type", "application/protobuf")
            connection.setRequestProperty("accept", "application/protobuf")
            for (h in headers) connection.setRequestProperty(h.name, h.value)
            connection.outputStream.use { it.write(body) }
            val code = connection.responseCode
            if (code !in 200..299) {
                runCatching { connection.errorStream?.use { drain(it, deadline) } }
                // Retry-After in seconds on 429 / 503: Hearth waits that long (within its bound).
                val retryAfter = connection.getHeaderField("retry-after")?.trim()?.toULongOrNull()
                if (retryAfter != null && (code == 429 || code == 503)) {
                    throw TransportFailure.Throttled(code.toUShort(), minOf(retryAfter, 86_400uL) * 1_000uL)
                }
                throw TransportFailure.Status(code.toUShort())
            }
            if (connection.contentLengthLong > maxReplyBytes) throw TransportFailure.TooLarge()
            return connection.inputStream.use { read(it, deadline) }
        } catch (e: SocketTimeoutException) {
            throw TransportFailure.Timeout()
        } catch (e: IOException) {
            throw TransportFailure.Io(reason(e))
        } finally {
            connection.disconnect()
        }
    }

    /** The body, at most [maxReplyBytes], before [deadline] (readTimeout bounds each read, not the whole). */
    private fun read(input: InputStream, deadline: Long): ByteArray {
        val out = ByteArrayOutputStream()
        val chunk = ByteArray(16 * 1024)
        while (true) {
            val n = input.read(chunk)
            if (n < 0) return out.toByteArray()
            if (out.size() + n > maxReplyBytes) throw TransportFailure.TooLarge()
            out.write(chunk, 0, n)
            if (System.nanoTime() > deadline) throw TransportFailure.Timeout()
        }
    }

    /** Reads an error body away (so the connection can be reused), bounded like a reply. */
    private fun drain(input: InputStream, deadline: Long) {
        val chunk = ByteArray(4 * 1024)
        var total = 0
        while (total < maxReplyBytes && System.nanoTime() < deadline) {
            val n = input.read(chunk)
            if (n < 0) return
            total += n
        }
    }

    /** The exception's kind and the first line of its message (never the body). */
    private fun reason(e: IOException): String =
        e.javaClass.simpleName + (e.message?.lineSequence()?.firstOrNull()?.take(120)?.let { ": $it" } ?: "")
}

package org.hearth

import java.io.File
import java.io.RandomAccessFile
import java.util.Collections

/** Two root keys, as a Keystore-backed provider would hand them over. */
val KEY_A = ByteArray(32) { 0xA1.toByte() }
val KEY_B = ByteArray(32) { 0xB2.toByte() }

class FixedKeys(private val key: ByteArray) : KeyProvider {
    override fun rootKey(): ByteArray = key.copyOf()
}

/** A provider that fails the way a platform keystore does. */
class FailingKeys(private val failure: Exception) : KeyProvider {
    override fun rootKey(): ByteArray = throw failure
}

fun config(dir: File, maxStoreBytes: ULong? = null) =
    HearthConfig(dataDir = dir.path, durability = Durability.NORMAL, maxStoreBytes = maxStoreBytes)

fun openStore(dir: File, key: ByteArray = KEY_A): Hearth = Hearth.open(config(dir), FixedKeys(key))

val NOW: Long = System.currentTimeMillis()
const val DAY_MS = 86_400_000L

fun event(
    item: String,
    kind: EventKind = EventKind.PLAY,
    at: Long = NOW - 60_000,
    hour: UByte = 21u,
    device: DeviceClass = DeviceClass.TV,
) = Event(
    itemId = item,
    kind = kind,
    timestampMs = at,
    positionMs = 60_000uL,
    durationMs = 3_600_000uL,
    context = EventContext(device = device, localHour = hour, locale = "en-GB"),
)

fun item(id: String, title: String, vararg categories: String) = CatalogItem(
    id = id,
    title = title,
    categories = categories.toList(),
    language = "en",
    durationMs = 5_400_000uL,
    releaseYear = 2019u,
    popularity = 12.5,
    contentRating = "PG-13",
)

/** Collects the log lines Hearth hands over. */
class ListLogger : HearthLogger {
    val lines: MutableList<String> = Collections.synchronizedList(mutableListOf())

    override fun log(level: LogLevel, target: String, message: String) {
        lines.add("$level $target $message")
    }
}

/** Drops everything: installed after the logging tests. */
object QuietLogger : HearthLogger {
    override fun log(level: LogLevel, target: String, message: String) = Unit
}

/** Replaces itself from inside `log` (allowed: no lock is held while it runs). */
class SelfReplacingLogger(private val next: HearthLogger) : HearthLogger {
    override fun log(level: LogLevel, target: String, message: String) = setLogger(next, LogLevel.INFO)
}

/** Throws from `log` while armed, once, as a broken app logger would. */
class ThrowingOnceLogger : HearthLogger {
    @Volatile var armed = true
    @Volatile var calls = 0

    override fun log(level: LogLevel, target: String, message: String) {
        calls++
        if (armed) {
            armed = false
            throw IllegalStateException("the app's logger broke")
        }
    }
}

/** Every file under [dir] with its bytes (the store's db, WAL and shm). */
fun filesUnder(dir: File): Map<String, ByteArray> =
    dir.walkTopDown().filter { it.isFile }.associate { it.path to it.readBytes() }

fun ByteArray.contains(needle: ByteArray): Boolean =
    needle.isNotEmpty() && (0..size - needle.size).any { i -> needle.indices.all { this[i + it] == needle[it] } }

/**
 * Finds a sealed row of the `events` table in a SQLite file and returns the
 * offset of its sealed blob. A row of `events (id INTEGER PRIMARY KEY,
 * sealed BLOB)` is stored as a record header `04 00 xx yy` (4 header bytes,
 * NULL for the rowid alias, a 2-byte varint for the blob) followed by the
 * blob, whose own header is format 1 and key epoch 1 (u32 LE): `01 01 00 00 00`.
 */
fun findSealedEvent(db: ByteArray): Int? {
    for (i in 0 until db.size - 9) {
        if (db[i].toInt() != 4 || db[i + 1].toInt() != 0) continue
        val hi = db[i + 2].toInt() and 0xFF
        val lo = db[i + 3].toInt() and 0xFF
        if (hi and 0x80 == 0 || lo and 0x80 != 0) continue
        val serial = ((hi and 0x7F) shl 7) or lo
        if (serial < 12 || serial % 2 != 0 || (serial - 12) / 2 < 64) continue
        val blob = i + 4
        val header = listOf(1, 1, 0, 0, 0)
        if (header.indices.all { db[blob + it].toInt() == header[it] }) return blob
    }
    return null
}

/** Flips one bit in the ciphertext of the first sealed event in `dir/hearth.db`. */
fun tamperFirstEvent(dir: File) {
    val db = File(dir, "hearth.db")
    val blob = findSealedEvent(db.readBytes()) ?: error("no sealed event row in ${db.path}")
    RandomAccessFile(db, "rw").use { f ->
        val at = blob.toLong() + 17 + 8 // past format, epoch and nonce
        f.seek(at)
        val b = f.read()
        f.seek(at)
        f.write(b xor 0x01)
    }
}

/** Writes SQLite's `user_version` (big-endian u32 at offset 60 of the header). */
fun setSchemaVersion(dir: File, version: Int) {
    RandomAccessFile(File(dir, "hearth.db"), "rw").use { f ->
        f.seek(60)
        f.writeInt(version)
    }
}

/** A small JSON reader for checking the export document (no JSON library on the test classpath). */
class Json private constructor(private val s: String) {
    private var i = 0

    companion object {
        fun parse(text: String): Any? = Json(text).run {
            val v = value()
            ws()
            check(i == s.length) { "trailing data at $i" }
            v
        }
    }

    private fun ws() {
        while (i < s.length && s[i].isWhitespace()) i++
    }

    private fun value(): Any? {
        ws()
        return when (val c = s[i]) {
            '{' -> obj()
            '[' -> arr()
            '"' -> str()
            't' -> lit("true", true)
            'f' -> lit("false", false)
            'n' -> lit("null", null)
            else -> if (c == '-' || c.isDigit()) num() else error("unexpected '$c' at $i")
        }
    }

    private fun lit(word: String, v: Any?): Any? {
        check(s.startsWith(word, i)) { "bad literal at $i" }
        i += word.length
        return v
    }

    private fun num(): Number {
        val start = i
        while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++
        val t = s.substring(start, i)
        return if (t.any { it in ".eE" }) t.toDouble() else t.toLong()
    }

    private fun str(): String {
        val sb = StringBuilder()
        i++
        while (s[i] != '"') {
            if (s[i] == '\\') {
                i++
                when (val e = s[i]) {
                    'n' -> sb.append('\n')
                    't' -> sb.append('\t')
                    'r' -> sb.append('\r')
                    'b' -> sb.append('\b')
                    'f' -> sb.append('\u000C')
                    'u' -> {
                        sb.append(s.substring(i + 1, i + 5).toInt(16).toChar())
                        i += 4
                    }
                    else -> sb.append(e)
                }
            } else {
                sb.append(s[i])
            }
            i++
        }
        i++
        return sb.toString()
    }

    private fun arr(): List<Any?> {
        val out = mutableListOf<Any?>()
        i++
        ws()
        if (s[i] == ']') return out.also { i++ }
        while (true) {
            out.add(value())
            ws()
            if (s[i++] == ']') return out
        }
    }

    private fun obj(): Map<String, Any?> {
        val out = linkedMapOf<String, Any?>()
        i++
        ws()
        if (s[i] == '}') return out.also { i++ }
        while (true) {
            ws()
            val k = str()
            ws()
            check(s[i++] == ':') { "expected ':' at $i" }
            out[k] = value()
            ws()
            if (s[i++] == '}') return out
        }
    }
}

@Suppress("UNCHECKED_CAST")
fun Any?.obj(key: String): Map<String, Any?> = (this as Map<String, Any?>)[key] as Map<String, Any?>

@Suppress("UNCHECKED_CAST")
fun Any?.arr(key: String): List<Any?> = (this as Map<String, Any?>)[key] as List<Any?>

@Suppress("UNCHECKED_CAST")
fun Any?.field(key: String): Any? = (this as Map<String, Any?>)[key]

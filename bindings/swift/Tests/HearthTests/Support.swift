import Foundation
import XCTest

import Hearth

/// Two root keys, as a Keychain-backed provider would hand them over.
let keyA = Data(repeating: 0xA1, count: 32)
let keyB = Data(repeating: 0xB2, count: 32)

final class FixedKeys: KeyProvider {
    let key: Data
    init(_ key: Data) { self.key = key }
    func rootKey() throws -> Data { key }
}

/// A provider that fails the way the Keychain does (or with any other error).
final class FailingKeys: KeyProvider {
    let failure: Error
    init(_ failure: Error) { self.failure = failure }
    func rootKey() throws -> Data { throw failure }
}

struct KeychainExploded: Error {}

func config(_ dir: URL, maxStoreBytes: UInt64? = nil, halfLifeDays: Double = 30) -> HearthConfig {
    HearthConfig(
        dataDir: dir.path, durability: .normal, maxStoreBytes: maxStoreBytes, profileHalfLifeDays: halfLifeDays)
}

func openStore(_ dir: URL, key: Data = keyA) throws -> Hearth {
    try Hearth.open(config: config(dir), keys: FixedKeys(key))
}

let now = Int64(Date().timeIntervalSince1970 * 1000)
let dayMs: Int64 = 86_400_000

func event(
    _ item: String, _ kind: EventKind = .play, at: Int64 = now - 60_000, hour: UInt8 = 21,
    device: DeviceClass = .tv, position: UInt64 = 60_000
) -> Event {
    Event(
        itemId: item, kind: kind, timestampMs: at, positionMs: position, durationMs: 3_600_000,
        context: EventContext(device: device, localHour: hour, locale: "en-GB"))
}

func item(_ id: String, _ title: String, _ categories: [String] = [], popularity: Double = 12.5) -> CatalogItem {
    CatalogItem(
        id: id, title: title, categories: categories, language: "en", durationMs: 5_400_000, releaseYear: 2019,
        popularity: popularity, contentRating: "PG-13")
}

/// Collects the log lines Hearth hands over.
final class ListLogger: HearthLogger, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
    func log(level: LogLevel, target: String, message: String) {
        lock.lock()
        defer { lock.unlock() }
        stored.append("\(level) \(target) \(message)")
    }
}

/// Drops everything: installed after each test.
final class QuietLogger: HearthLogger {
    func log(level: LogLevel, target: String, message: String) {}
}

/// Replaces itself from inside `log` (allowed: Hearth holds no lock of the
/// logger's while calling it).
final class SelfReplacingLogger: HearthLogger {
    let next: HearthLogger
    init(next: HearthLogger) { self.next = next }
    func log(level: LogLevel, target: String, message: String) {
        try? setLogger(logger: next, maxLevel: .info)
    }
}

/// The HearthError `body` throws (a failure if it throws nothing or something else).
func hearthError<T>(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) -> HearthError? {
    do {
        _ = try body()
        XCTFail("expected a HearthError", file: file, line: line)
    } catch let error as HearthError {
        return error
    } catch {
        XCTFail("expected a HearthError, got \(error)", file: file, line: line)
    }
    return nil
}

/// The field an `InvalidInput` names.
func invalidField<T>(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) -> String? {
    guard case .InvalidInput(let field, _)? = hearthError(file: file, line: line, body) else {
        XCTFail("expected InvalidInput", file: file, line: line)
        return nil
    }
    return field
}

/// Every file under `dir` with its bytes (the store's db, WAL and shm).
func filesUnder(_ dir: URL) throws -> [String: Data] {
    var out: [String: Data] = [:]
    let names = try FileManager.default.subpathsOfDirectory(atPath: dir.path)
    for name in names {
        let url = dir.appendingPathComponent(name)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue {
            out[url.path] = try Data(contentsOf: url)
        }
    }
    return out
}

/// Finds a sealed row of the `events` table in a SQLite file and returns the
/// offset of its sealed blob. A row of `events (id INTEGER PRIMARY KEY,
/// sealed BLOB)` is a record header `04 00 xx yy` (4 header bytes, NULL for
/// the rowid alias, a 2-byte varint for the blob) and then the blob, whose own
/// header is format 1 and key epoch 1 (u32 LE): `01 01 00 00 00`.
func findSealedEvent(_ db: [UInt8]) -> Int? {
    let sealedHeader: [UInt8] = [1, 1, 0, 0, 0]
    guard db.count > 9 else { return nil }
    for i in 0..<(db.count - 9) where db[i] == 4 && db[i + 1] == 0 {
        let (hi, lo) = (Int(db[i + 2]), Int(db[i + 3]))
        guard hi & 0x80 != 0, lo & 0x80 == 0 else { continue }
        let serial = ((hi & 0x7F) << 7) | lo
        guard serial >= 12, serial % 2 == 0, (serial - 12) / 2 >= 64 else { continue }
        if Array(db[(i + 4)..<(i + 9)]) == sealedHeader { return i + 4 }
    }
    return nil
}

/// Flips one bit in the ciphertext of the first sealed event in `dir/hearth.db`.
func tamperFirstEvent(_ dir: URL) throws {
    let url = dir.appendingPathComponent("hearth.db")
    var bytes = [UInt8](try Data(contentsOf: url))
    guard let blob = findSealedEvent(bytes) else {
        XCTFail("no sealed event row in \(url.path)")
        return
    }
    bytes[blob + 17 + 8] ^= 0x01  // past format, epoch and nonce
    try Data(bytes).write(to: url)
}

/// SQLite's `user_version`: a big-endian u32 at offset 60 of the header.
func schemaVersion(_ dir: URL) throws -> UInt32 {
    let bytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent("hearth.db")))
    return bytes[60..<64].reduce(0) { $0 << 8 | UInt32($1) }
}

func setSchemaVersion(_ dir: URL, _ version: UInt32) throws {
    let url = dir.appendingPathComponent("hearth.db")
    var bytes = [UInt8](try Data(contentsOf: url))
    for k in 0..<4 { bytes[60 + k] = UInt8((version >> (8 * (3 - UInt32(k)))) & 0xFF) }
    try Data(bytes).write(to: url)
}

extension Data {
    func contains(_ needle: String) -> Bool { range(of: Data(needle.utf8)) != nil }
}

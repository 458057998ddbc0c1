import Foundation
import Hearth

/// The process's one Hearth store, shared by the screens and the background
/// task (two handles on one directory would fight over its files).
final class SharedStore: @unchecked Sendable {
    static let shared = SharedStore()

    private let lock = NSLock()  // guards `model`
    private var model: DemoModel?

    /// Opens the store on first use. Blocking (the Keychain, the disk): never
    /// on the main thread. Throws HearthError (KeyUnavailable before the first
    /// unlock); the next call tries again.
    func open() throws -> DemoModel {
        lock.lock()
        defer { lock.unlock() }
        if let model { return model }
        let opened = try DemoModel.openOrReset(config: HearthConfig(dataDir: try Self.dataDir().path, durability: .normal), keys: KeychainKeys())
        let model = DemoModel(hearth: opened.hearth)
        // A real app gets the catalog from its backend; the demo ships one.
        try model.seedCatalogIfEmpty()
        self.model = model
        return model
    }

    /// Application Support/hearth, excluded from backups (the key that opens
    /// it never leaves this device, so a restored copy could not be read).
    private static func dataDir() throws -> URL {
        var dir = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("hearth", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var values = URLResourceValues()
        values.isExcludedFromBackup = true
        try dir.setResourceValues(values)
        return dir
    }
}

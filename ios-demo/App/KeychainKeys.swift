import Foundation
import Hearth
import Security

/// Hearth's root key in the Keychain: 32 random bytes, made once, stored as a
/// generic password that is readable after the first unlock (so the
/// background task can open the store while the device is locked) and never
/// leaves this device (no iCloud Keychain, not in backups).
///
/// Hearth calls `rootKey()` when a store is opened, deleted or re-keyed, on
/// the calling thread (never the main thread here); it must not call back
/// into Hearth.
final class KeychainKeys: KeyProvider {
    private let service = "org.hearth.demo"
    private let account = "hearth-root-key"

    func rootKey() throws -> Data {
        if let key = try read() { return key }
        var key = Data(count: 32)
        let made = key.withUnsafeMutableBytes { SecRandomCopyBytes(kSecRandomDefault, 32, $0.baseAddress!) }
        guard made == errSecSuccess else { throw KeyError.Unavailable(reason: "no random bytes (\(made))") }
        let add: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecAttrAccessible as String: kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
            kSecValueData as String: key,
        ]
        let status = SecItemAdd(add as CFDictionary, nil)
        switch status {
        case errSecSuccess: return key
        // Another thread made it first: use that one.
        case errSecDuplicateItem: if let key = try read() { return key }
        default: break
        }
        throw Self.failure(status)
    }

    /// The stored key, nil when there is none yet.
    private func read() throws -> Data? {
        let query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecReturnData as String: true,
            kSecMatchLimit as String: kSecMatchLimitOne,
        ]
        var item: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &item)
        switch status {
        case errSecSuccess:
            // Anything but 32 bytes is not a key this app wrote: the old store cannot be opened.
            guard let key = item as? Data, key.count == 32 else { throw KeyError.Invalidated }
            return key
        case errSecItemNotFound:
            // A missing item with a store on disk (the Keychain was reset): the store fails
            // with WrongKey and DemoModel.openOrReset starts a new one.
            return nil
        default:
            throw Self.failure(status)
        }
    }

    private static func failure(_ status: OSStatus) -> KeyError {
        if status == errSecInteractionNotAllowed {
            // Before the first unlock after a restart.
            return .Unavailable(reason: "device locked")
        }
        return .Unavailable(reason: "keychain status \(status)")
    }
}

import Combine
import Foundation
import Hearth

#if os(iOS)
    import UIKit
#endif

/// The screens' state over DemoModel. Every Hearth call runs in a detached
/// task, off the main actor; after each change both screens are reloaded from
/// the store, so what they show is what Hearth holds.
@MainActor
final class DemoStore: ObservableObject {
    @Published private(set) var home: HomeRow?
    @Published private(set) var privacy: PrivacyState?
    @Published private(set) var loading = true
    /// The last failure, for a banner (HearthError carries no personal data).
    @Published var error: String?

    func refresh() async { await change { _ in } }

    /// The user opened an item: a play is recorded (nothing while history is paused), and the row re-ranks.
    func watch(_ itemId: String) async {
        let context = EventContext(device: Self.deviceClass, localHour: Self.hour(), locale: Locale.current.identifier)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        await change { _ = try $0.watch(itemId, context: context, nowMs: now) }
    }

    func setPersonalization(_ on: Bool) async { await change { try $0.setPersonalization(on) } }

    func setHistoryPaused(_ on: Bool) async { await change { try $0.setHistoryPaused(on) } }

    func setFederatedOptIn(_ on: Bool) async {
        await change { try $0.setFederatedOptIn(on) }
        FederatedTask.schedule(optedIn: on)
    }

    func setBlocked(_ category: String, _ blocked: Bool) async { await change { try $0.setBlocked(category, blocked) } }

    func forget(_ itemId: String) async { await change { _ = try $0.forget(itemId) } }

    /// Deletes everything (the opt-in goes back to off with the settings), then puts the public catalog back.
    func deleteAll() async {
        await change {
            try $0.deleteAll()
            try $0.seedCatalogIfEmpty()
        }
        FederatedTask.schedule(optedIn: false)
    }

    /// Writes the export to a temporary file for the share sheet; nil if it failed.
    func exportFile() async -> URL? {
        do {
            return try await Task.detached(priority: .userInitiated) {
                let json = try SharedStore.shared.open().exportJson()
                let url = FileManager.default.temporaryDirectory.appendingPathComponent("hearth-export.json")
                try Data(json.utf8).write(to: url, options: [.atomic, .completeFileProtection])
                return url
            }.value
        } catch {
            self.error = Self.describe(error)
            return nil
        }
    }

    /// When the app goes to the background: writes the profile Hearth keeps behind.
    func flush() {
        Task.detached(priority: .utility) { try? SharedStore.shared.open().flush() }
    }

    private func change(_ action: @escaping @Sendable (DemoModel) throws -> Void) async {
        loading = true
        defer { loading = false }
        let options = DemoModel.homeOptions(device: Self.deviceClass, localHour: Self.hour(), locale: Locale.current.identifier)
        let charging = Self.charging()
        do {
            let (home, privacy) = try await Task.detached(priority: .userInitiated) {
                let model = try SharedStore.shared.open()
                try action(model)
                // In use, so not idle; the network as NWPathMonitor sees it.
                let now = DeviceConditions(charging: charging, unmeteredNetwork: NetworkCheck.isUnmetered(), idle: false)
                return (try model.home(options: options), try model.privacy(conditions: now))
            }.value
            self.home = home
            self.privacy = privacy
            self.error = nil
        } catch {
            self.error = Self.describe(error)
        }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case HearthError.KeyUnavailable: return "The device is locked; try again after unlocking."
        case HearthError.StorageFull: return "The device is out of space."
        default: return "Something went wrong (\(error.localizedDescription))."
        }
    }

    private static var deviceClass: DeviceClass {
        #if os(tvOS)
            return .tv
        #else
            return UIDevice.current.userInterfaceIdiom == .pad ? .tablet : .phone
        #endif
    }

    private static func hour() -> UInt8 { UInt8(Calendar.current.component(.hour, from: Date())) }

    private static func charging() -> Bool {
        #if os(iOS)
            UIDevice.current.isBatteryMonitoringEnabled = true
            return [.charging, .full].contains(UIDevice.current.batteryState)
        #else
            return true  // a TV is on mains power
        #endif
    }
}

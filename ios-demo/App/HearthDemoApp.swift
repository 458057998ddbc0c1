import Hearth
import SwiftUI

@main
struct HearthDemoApp: App {
    @StateObject private var store = DemoStore()
    @Environment(\.scenePhase) private var scenePhase

    init() {
        // Quick (no disk): fine here.
        try? setLogger(logger: OSLogLogger(), maxLevel: .info)
        // Before launch finishes, as BGTaskScheduler requires.
        FederatedTask.register()
    }

    var body: some Scene {
        WindowGroup {
            TabView {
                HomeView(store: store).tabItem { Label("Home", systemImage: "house") }
                PrivacyView(store: store).tabItem { Label("Privacy", systemImage: "lock") }
            }
            .task { await store.refresh() }
        }
        .onChange(of: scenePhase) { phase in
            if phase == .background { store.flush() }
        }
    }
}

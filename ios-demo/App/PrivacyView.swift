import Hearth
import SwiftUI

/// Every control Hearth offers the user, the privacy ledger, export and delete.
struct PrivacyView: View {
    @ObservedObject var store: DemoStore
    @State private var confirmDelete = false
    @State private var export: ExportFile?

    var body: some View {
        NavigationView {
            Group {
                if let p = store.privacy {
                    form(p)
                } else if let error = store.error {
                    Text(error).foregroundColor(.red).padding()
                } else {
                    ProgressView()
                }
            }
            .navigationTitle("Privacy")
        }
        .navigationViewStyle(.stack)
        .alert("Delete everything?", isPresented: $confirmDelete) {
            Button("Delete", role: .destructive) { Task { await store.deleteAll() } }
            Button("Cancel", role: .cancel) {}
        } message: {
            Text("Your viewing history, profile, settings and privacy ledger are erased from this device. This cannot be undone.")
        }
        #if os(iOS)
            .sheet(item: $export) { file in ShareSheet(items: [file.url]) }
        #endif
    }

    private func form(_ p: PrivacyState) -> some View {
        Form {
            Section("Your controls") {
                Toggle("Personalized recommendations", isOn: binding(p.settings.personalizationEnabled) { await store.setPersonalization($0) })
                Toggle("Pause viewing history", isOn: binding(p.settings.historyPaused) { await store.setHistoryPaused($0) })
                Toggle("Help improve recommendations", isOn: binding(p.settings.federatedOptIn) { await store.setFederatedOptIn($0) })
                Text("Federated learning: while charging on Wi-Fi, only a clipped model update leaves the device.")
                    .font(.footnote).foregroundColor(.secondary)
            }
            Section("Never show me") {
                ForEach(p.categories, id: \.self) { category in
                    Toggle(category, isOn: binding(p.settings.blockedCategories.contains(category)) { await store.setBlocked(category, $0) })
                }
            }
            Section("Privacy ledger") {
                Text("Updates sent from this device: \(p.ledger.entries.count)")
                Text("Privacy budget spent: ε \(String(format: "%.2f of %.2f (δ = %.0e)", p.ledger.epsilonSpent, p.ledger.epsilonBudget, p.ledger.delta))")
                ProgressView(value: min(p.ledger.epsilonSpent, p.ledger.epsilonBudget), total: p.ledger.epsilonBudget)
                Text("Next round: \(p.nextRoundText)").font(.footnote)
                ForEach(p.ledger.entries, id: \.self) { entry in LedgerRow(entry: entry) }
            }
            if !p.experiments.isEmpty {
                Section("Experiments on this device") {
                    ForEach(p.experiments, id: \.experimentId) { x in
                        Text("\(x.experimentId): your arm is \"\(x.arm)\", drawn on this device")
                        Text("\(x.exposures) rows and \(x.outcomes) plays logged here, sealed; nothing sent"
                            + (x.logging ? "" : " (not logging: history paused or personalization off)"))
                            .font(.footnote)
                    }
                }
            }
            Section("Your history (\(p.eventsHeld) events)") {
                ForEach(p.watched) { item in
                    HStack {
                        Text(item.title)
                        Spacer()
                        Button("Forget") { Task { await store.forget(item.itemId) } }
                    }
                }
            }
            Section {
                #if os(iOS)
                    Button("Export my data") { Task { export = await store.exportFile().map(ExportFile.init) } }
                #endif
                Button("Delete everything", role: .destructive) { confirmDelete = true }
            }
        }
    }

    /// A toggle's binding: shows what the store holds; a flip goes to Hearth, then the screen reloads.
    private func binding(_ value: Bool, _ set: @escaping (Bool) async -> Void) -> Binding<Bool> {
        Binding(get: { value }, set: { newValue in Task { await set(newValue) } })
    }
}

private struct ExportFile: Identifiable {
    let url: URL
    var id: URL { url }
}

private struct LedgerRow: View {
    let entry: LedgerEntry

    var body: some View {
        let sent = Date(timeIntervalSince1970: TimeInterval(entry.atMs) / 1000)
        Text(DemoModel.uploadText(entry, sent: sent.formatted(date: .abbreviated, time: .shortened)))
            .font(.caption)
    }
}

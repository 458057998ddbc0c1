import SwiftUI

/// The home screen: one row ranked on the device, the reason under each item.
struct HomeView: View {
    @ObservedObject var store: DemoStore

    var body: some View {
        NavigationView {
            ScrollView {
                VStack(alignment: .leading, spacing: 12) {
                    // A row that is not personalized says so, and why.
                    if let label = store.home?.notPersonalizedLabel {
                        Text(label).font(.caption).foregroundColor(.red).padding(.horizontal)
                    }
                    if store.loading && store.home == nil { ProgressView().padding() }
                    if let error = store.error { Text(error).foregroundColor(.red).padding(.horizontal) }
                    ScrollView(.horizontal, showsIndicators: false) {
                        HStack(alignment: .top, spacing: 16) {
                            ForEach(store.home?.tiles ?? []) { tile in
                                Button {
                                    Task { await store.watch(tile.itemId) }
                                } label: {
                                    TileView(tile: tile)
                                }
                                .tileButtonStyle()
                            }
                        }
                        .padding(.horizontal)
                    }
                    Text("Ranked on this device from your viewing here; nothing you watch leaves it. Open a title to record a play.")
                        .font(.footnote).foregroundColor(.secondary).padding(.horizontal)
                }
            }
            .navigationTitle(store.home?.personalized == false ? "Popular" : "For you")
        }
        .navigationViewStyle(.stack)
    }
}

private struct TileView: View {
    let tile: Tile

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            Text(tile.title).font(.headline).lineLimit(2)
            Text(tile.reason).font(.caption).foregroundColor(.secondary)
        }
        .frame(width: 168, alignment: .leading)
        .padding(12)
        .background(RoundedRectangle(cornerRadius: 12).fill(Color.gray.opacity(0.15)))
    }
}

extension View {
    /// tvOS's focusable card; a plain button elsewhere.
    @ViewBuilder func tileButtonStyle() -> some View {
        #if os(tvOS)
            buttonStyle(.card)
        #else
            buttonStyle(.plain)
        #endif
    }
}

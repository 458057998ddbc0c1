#if os(iOS)
    import SwiftUI
    import UIKit

    /// The system share sheet (UIActivityViewController): ShareLink needs iOS 16.
    struct ShareSheet: UIViewControllerRepresentable {
        let items: [Any]

        func makeUIViewController(context: Context) -> UIActivityViewController {
            UIActivityViewController(activityItems: items, applicationActivities: nil)
        }

        func updateUIViewController(_ controller: UIActivityViewController, context: Context) {}
    }
#endif

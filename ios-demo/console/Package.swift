// swift-tools-version:5.9
//
// The iOS demo's flow as a command-line program (the "console twin"): the
// same Hearth calls the SwiftUI app makes, printed instead of drawn. It uses
// the Hearth package in bindings/swift, as the app does.
//
// Linux only in practice: tests/bindings/run.sh (suite swift-console) stages
// this package beside bindings/swift with the generated Hearth.swift, builds
// it in the Swift chroot with -warnings-as-errors (libhearth.so found with
// -Xlinker -L<dir>) and runs it; a failed check exits non-zero. On a Mac the
// XCFramework carries iOS and tvOS slices only, so use the SwiftUI app there.
import PackageDescription

let package = Package(
    name: "HearthConsole",
    dependencies: [
        .package(name: "Hearth", path: "../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "HearthConsole",
            dependencies: [.product(name: "Hearth", package: "Hearth")],
            path: "Sources/HearthConsole"
        ),
    ]
)

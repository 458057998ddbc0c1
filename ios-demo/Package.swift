// swift-tools-version:5.9
//
// The iOS demo's Foundation-only code and its console twin, as a Swift package:
//   - HearthDemoKit (App/Shared): the state holder DemoModel, the catalog and
//     the URLSession FleetTransport. The SwiftUI app (project.yml) compiles
//     these same files into the app target.
//   - HearthConsole (console/Sources/HearthConsole): the app's flow as a
//     command-line program over HearthDemoKit.
// Both depend on the Hearth package in ../bindings/swift.
//
// Linux only in practice: tests/bindings/run.sh (suite swift-console) stages
// this package beside bindings/swift with the generated Hearth.swift, builds
// it in the Swift chroot with -warnings-as-errors (libhearth.so found with
// -Xlinker -L<dir>) and runs the console; a failed check exits non-zero. On a
// Mac the XCFramework carries iOS and tvOS slices only: build the SwiftUI app
// there (README.md).
import PackageDescription

let package = Package(
    name: "HearthDemo",
    platforms: [.iOS(.v15), .tvOS(.v15)],
    dependencies: [
        .package(name: "Hearth", path: "../bindings/swift"),
    ],
    targets: [
        .target(
            name: "HearthDemoKit",
            dependencies: [.product(name: "Hearth", package: "Hearth")],
            path: "App/Shared"
        ),
        .executableTarget(
            name: "HearthConsole",
            dependencies: ["HearthDemoKit", .product(name: "Hearth", package: "Hearth")],
            path: "console/Sources/HearthConsole"
        ),
    ]
)

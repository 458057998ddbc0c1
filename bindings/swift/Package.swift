// swift-tools-version:5.9
//
// Hearth for Swift: the generated `Hearth.swift` (module Hearth) over the C
// module `HearthFFI`, which is libhearth's generated header and modulemap.
//
// Apple platforms: `bindings/build-apple.sh` builds HearthFFI.xcframework
// (libhearth.a for iOS, the iOS simulator and tvOS, with the header and
// modulemap) and writes Sources/Hearth/Hearth.swift; the package then links
// the XCFramework as a binary target.
//
// Linux (how tests/bindings/run.sh tests it): HearthFFI is a system library
// target, Sources/HearthFFI/{HearthFFI.h, module.modulemap}, and libhearth.so
// is found with `-Xlinker -L<dir>` (see bindings/README.md).
//
// Every generated file is written at build time and never committed.
import PackageDescription

#if os(Linux)
let ffi: Target = .systemLibrary(name: "HearthFFI", path: "Sources/HearthFFI")
let linkLibhearth: [LinkerSetting] = [.linkedLibrary("hearth")]
#else
let ffi: Target = .binaryTarget(name: "HearthFFI", path: "HearthFFI.xcframework")
let linkLibhearth: [LinkerSetting] = []  // the XCFramework brings libhearth.a
#endif

let package = Package(
    name: "Hearth",
    platforms: [.iOS(.v15), .tvOS(.v15)],
    products: [
        .library(name: "Hearth", targets: ["Hearth"]),
    ],
    targets: [
        ffi,
        .target(
            name: "Hearth",
            dependencies: ["HearthFFI"],
            path: "Sources/Hearth",
            linkerSettings: linkLibhearth
        ),
        .testTarget(name: "HearthTests", dependencies: ["Hearth"], path: "Tests/HearthTests"),
    ]
)

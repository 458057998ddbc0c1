#!/usr/bin/env bash
# Builds what the Swift package (bindings/swift) needs on Apple platforms:
#   - bindings/swift/HearthFFI.xcframework: libhearth.a (release profile) for
#       ios-arm64                    aarch64-apple-ios
#       ios-arm64_x86_64-simulator   aarch64-apple-ios-sim + x86_64-apple-ios (lipo)
#       tvos-arm64                   aarch64-apple-tvos
#       tvos-arm64-simulator         aarch64-apple-tvos-sim
#     each with the C module HearthFFI (generated header + modulemap) in
#     Headers/HearthFFI/;
#   - bindings/swift/Sources/Hearth/Hearth.swift, generated from a debug build
#     for this Mac (UniFFI reads its metadata from a library's symbols).
# Neither is committed. Then add the package to an Xcode project (File > Add
# Package Dependencies > Add Local) or depend on it from another package.
#
# Needs: macOS with Xcode (xcodebuild, lipo, the iOS and tvOS SDKs) and
# rustup (the targets are added when missing). Not runnable on the project's
# Linux test machines. Intel tvOS simulators (x86_64-apple-tvos) are left out:
# rustup ships no standard library for that target.
#
# Environment: HEARTH_IOS_MIN, HEARTH_TVOS_MIN (deployment targets, default
# 15.0, as `platforms` in Package.swift), HEARTH_APPLE_PROFILE (cargo profile,
# default release), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
pkg="$here/swift"
profile="${HEARTH_APPLE_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export IPHONEOS_DEPLOYMENT_TARGET="${HEARTH_IOS_MIN:-15.0}"
export TVOS_DEPLOYMENT_TARGET="${HEARTH_TVOS_MIN:-15.0}"

die() {
    echo "build-apple.sh: $*" >&2
    exit 1
}

[ "$(uname -s)" = Darwin ] || die "needs macOS with Xcode (this is $(uname -s)); the Linux path of the Swift package is tested by tests/bindings/run.sh"
command -v xcodebuild >/dev/null || die "no xcodebuild: install Xcode and run 'sudo xcode-select -s /Applications/Xcode.app'"
for sdk in iphoneos iphonesimulator appletvos appletvsimulator; do
    xcrun --sdk "$sdk" --show-sdk-path >/dev/null 2>&1 ||
        die "no $sdk SDK in the selected Xcode ($(xcode-select -p)); install the iOS and tvOS platforms (Xcode > Settings > Components)"
done
command -v cargo >/dev/null || die "no cargo: install Rust with rustup (https://rustup.rs)"

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-tvos aarch64-apple-tvos-sim)
if command -v rustup >/dev/null; then
    installed="$(rustup target list --installed)"
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
fi

cd "$repo"
for t in "${targets[@]}"; do
    cargo build --locked --profile "$profile" -p hearth-ffi --target "$t"
done
# Cargo names the output folder after the profile, except for dev.
outdir() { [ "$profile" = dev ] && echo "$target_dir/$1/debug" || echo "$target_dir/$1/$profile"; }

work="$target_dir/hearth-apple"
rm -rf "$work"
mkdir -p "$work/ios-sim" "$work/include/HearthFFI" "$work/gen"
lipo -create "$(outdir aarch64-apple-ios-sim)/libhearth.a" "$(outdir x86_64-apple-ios)/libhearth.a" \
    -output "$work/ios-sim/libhearth.a"

# The bindings, from a debug build for this Mac, in two invocations (cargo
# unifies features per invocation: uniffi's `cli` would end up in libhearth).
cargo build --locked -p hearth-ffi
cargo build --locked -p uniffi-bindgen
"$target_dir/debug/uniffi-bindgen" generate "$target_dir/debug/libhearth.dylib" --language swift \
    --out-dir "$work/gen" --no-format
cp "$work/gen/HearthFFI.h" "$work/include/HearthFFI/"
# In a folder named after the module, so that it cannot collide with another
# XCFramework's module.modulemap in an app's build.
cp "$work/gen/HearthFFI.modulemap" "$work/include/HearthFFI/module.modulemap"

rm -rf "$pkg/HearthFFI.xcframework"
xcodebuild -create-xcframework \
    -library "$(outdir aarch64-apple-ios)/libhearth.a" -headers "$work/include" \
    -library "$work/ios-sim/libhearth.a" -headers "$work/include" \
    -library "$(outdir aarch64-apple-tvos)/libhearth.a" -headers "$work/include" \
    -library "$(outdir aarch64-apple-tvos-sim)/libhearth.a" -headers "$work/include" \
    -output "$pkg/HearthFFI.xcframework"

mkdir -p "$pkg/Sources/Hearth"
cp "$work/gen/Hearth.swift" "$pkg/Sources/Hearth/Hearth.swift"
echo "build-apple.sh: $pkg/HearthFFI.xcframework and $pkg/Sources/Hearth/Hearth.swift"

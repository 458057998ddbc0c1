#!/usr/bin/env bash
# Builds what the Android library module (bindings/kotlin) packs into its AAR:
#   - libhearth.so for the four Android ABIs, release profile, with cargo-ndk,
#     into bindings/kotlin/src/main/jniLibs/<abi>/libhearth.so;
#   - the Kotlin bindings, generated from a debug build of libhearth for this
#     machine (the release libraries are stripped, and UniFFI reads its
#     metadata from the symbols), into
#     bindings/kotlin/build/generated/source/uniffi/org/hearth/hearth.kt.
# Neither is committed. The module's Gradle build runs this script before
# every build (task `cargoBuild`); it can also be run by hand.
#
# Needs: the Android NDK (ANDROID_NDK_HOME, or ANDROID_NDK_ROOT; Gradle passes
# its own), cargo-ndk (`cargo install cargo-ndk`), and rustup (the four
# Android targets are added when missing). Not runnable on the project's Linux
# test machines, which have no NDK.
#
# Environment: HEARTH_JNILIBS_DIR, HEARTH_KOTLIN_OUT (output directories),
# HEARTH_ANDROID_API (minimum API level, default 24, as minSdk in
# bindings/kotlin/build.gradle.kts), HEARTH_ANDROID_PROFILE (cargo profile,
# default release), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
jnilibs="${HEARTH_JNILIBS_DIR:-$here/kotlin/src/main/jniLibs}"
kotlin_out="${HEARTH_KOTLIN_OUT:-$here/kotlin/build/generated/source/uniffi}"
api="${HEARTH_ANDROID_API:-24}"
profile="${HEARTH_ANDROID_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

die() {
    echo "build-android.sh: $*" >&2
    exit 1
}

ndk="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}"
[ -n "$ndk" ] || die "no Android NDK: set ANDROID_NDK_HOME (Android Studio: SDK Manager > SDK Tools > NDK; or sdkmanager 'ndk;27.2.12479018')"
[ -f "$ndk/source.properties" ] || die "ANDROID_NDK_HOME=$ndk does not look like an NDK (no source.properties)"
export ANDROID_NDK_HOME="$ndk"
command -v cargo >/dev/null || die "no cargo: install Rust with rustup (https://rustup.rs)"
cargo ndk --version >/dev/null 2>&1 || die "no cargo-ndk: cargo install cargo-ndk"

# ABI (Android's name, the jniLibs folder) and Rust target, in pairs.
abis=(arm64-v8a armeabi-v7a x86_64 x86)
targets=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android i686-linux-android)

if command -v rustup >/dev/null; then
    installed="$(rustup target list --installed)"
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
fi

cd "$repo"
args=()
for abi in "${abis[@]}"; do args+=(-t "$abi"); done
# cargo-ndk picks the NDK's clang for each target, builds, and copies
# libhearth.so to $jnilibs/<abi>/.
cargo ndk "${args[@]}" --platform "$api" -o "$jnilibs" build --locked --profile "$profile" -p hearth-ffi

# The bindings, from a debug build for this machine, in two invocations
# (cargo unifies features per invocation: uniffi's `cli` would end up in
# libhearth). Library mode reads core/uniffi.toml through cargo metadata.
cargo build --locked -p hearth-ffi
cargo build --locked -p uniffi-bindgen
case "$(uname -s)" in
Darwin) host_lib="$target_dir/debug/libhearth.dylib" ;;
*) host_lib="$target_dir/debug/libhearth.so" ;;
esac
rm -rf "$kotlin_out"
"$target_dir/debug/uniffi-bindgen" generate "$host_lib" --language kotlin --out-dir "$kotlin_out" --no-format

for abi in "${abis[@]}"; do
    [ -f "$jnilibs/$abi/libhearth.so" ] || die "missing $jnilibs/$abi/libhearth.so"
done
echo "build-android.sh: libhearth.so for ${abis[*]} in $jnilibs; Kotlin in $kotlin_out"

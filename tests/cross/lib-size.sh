#!/usr/bin/env bash
# Builds the bundle library (the cdylib that apps load) in release for x86_64,
# aarch64 and armv7 Linux and prints a markdown table of its stripped sizes.
#
# Usage: tests/cross/lib-size.sh [ROOT]
#   ROOT   the Cargo workspace or crate (default: this repository).
#
# Environment:
#   HEARTH_SIZE_PACKAGE    package holding the cdylib (default hearth-ffi)
#   HEARTH_SIZE_LIB        its library name (default hearth: libhearth.so)
#   HEARTH_SIZE_FEATURES   features to build with (default: the package's own)
#   HEARTH_SIZE_NO_DEFAULT_FEATURES=1
#                          without the package's default features: for
#                          hearth-ffi, HEARTH_SIZE_FEATURES=onnx with this
#                          measures the ONNX loader instead of NNEF
#   HEARTH_SIZE_TARGETS    targets, space- or comma-separated (default
#                          "x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
#                          armv7-unknown-linux-gnueabihf")
#   HEARTH_CROSS_JOBS      passed to cargo as -j (default: cargo's own)
#   CARGO_TARGET_DIR       as usual
#
# The release profile (LTO, opt-level "s", strip) is the workspace's. The size
# is measured after `strip --strip-all` with the target's binutils, on a copy,
# in case a profile does not strip. The build output goes to stderr, the table
# to stdout. Exits non-zero when a build fails.

set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
root="$repo"
if [ $# -gt 0 ]; then
    root="$(cd "$1" && pwd)" || exit 2
fi

package="${HEARTH_SIZE_PACKAGE:-hearth-ffi}"
lib="${HEARTH_SIZE_LIB:-hearth}"
targets="${HEARTH_SIZE_TARGETS:-x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}"
targets="$(echo "$targets" | tr ',' ' ' | xargs)"
config="$repo/.cargo/config.toml"

# Cross toolchains for the ARM targets asked for.
arm=""
for t in $targets; do
    case "$t" in x86_64-*) ;; *) arm="$arm $t" ;; esac
done
if [ -n "$arm" ]; then
    # shellcheck source=../toolchains/cross.sh
    HEARTH_CROSS_TARGETS="$arm" . "$repo/tests/toolchains/cross.sh" || exit 1
fi

cd "$root" || exit 2
cargo_args=(--config "$config" --release -p "$package" --lib)
[ -n "${HEARTH_CROSS_JOBS:-}" ] && cargo_args+=(-j "$HEARTH_CROSS_JOBS")
[ -n "${HEARTH_SIZE_FEATURES:-}" ] && cargo_args+=(--features "$HEARTH_SIZE_FEATURES")
[ "${HEARTH_SIZE_NO_DEFAULT_FEATURES:-}" = 1 ] && cargo_args+=(--no-default-features)

target_dir="${CARGO_TARGET_DIR:-}"
if [ -z "$target_dir" ]; then
    target_dir="$(cargo metadata --no-deps --format-version 1 |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
fi
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# human BYTES: "12.34 MB (12,345,678 B)"
human() {
    awk -v b="$1" 'BEGIN {
        s = sprintf("%d", b); out = "";
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        printf "%.2f MB (%s%s B)", b / 1e6, s, out }'
}

rows=()
failed=0
for t in $targets; do
    case "$t" in
    x86_64-unknown-linux-gnu) strip="strip" ;;
    aarch64-unknown-linux-gnu) strip="aarch64-linux-gnu-strip" ;;
    armv7-unknown-linux-gnueabihf) strip="arm-linux-gnueabihf-strip" ;;
    *) strip="" ;;
    esac
    echo "== lib-size: $package (lib$lib.so) for $t" >&2
    start=$(date +%s)
    if ! cargo build "${cargo_args[@]}" --target "$t" >&2; then
        rows+=("| $t | build FAILED | |")
        failed=$((failed + 1))
        continue
    fi
    secs=$(($(date +%s) - start))
    so="$target_dir/$t/release/lib$lib.so"
    if [ ! -f "$so" ]; then
        echo "lib-size: $so not found (is $package a cdylib named $lib?)" >&2
        rows+=("| $t | lib$lib.so not built | |")
        failed=$((failed + 1))
        continue
    fi
    cp "$so" "$tmp/lib.so"
    if [ -n "$strip" ] && command -v "$strip" >/dev/null; then
        "$strip" --strip-all "$tmp/lib.so"
    else
        echo "lib-size: no strip for $t; size as built" >&2
    fi
    rows+=("| $t | $(human "$(stat -c %s "$tmp/lib.so")") | $secs s |")
done

echo
echo "lib$lib.so ($package), release, stripped:"
echo
echo "| target | size | build time |"
echo "| --- | ---: | ---: |"
for r in "${rows[@]}"; do
    echo "$r"
done
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs Hearth's core tests on ARM Linux: cross-compiled for each target and run
# under qemu-user (the runner set in .cargo/config.toml).
#
# Usage: tests/cross/run.sh [ROOT] [-- ARGS for the test binaries]
#   ROOT   the Cargo workspace or crate to test (default: this repository).
#
# Environment:
#   HEARTH_CROSS_TARGETS   targets, space- or comma-separated (default
#                          "aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf")
#   HEARTH_CROSS_PACKAGES  packages to test, space-separated (default: hearth-core
#                          hearth-secagg, the crates a device runs)
#   HEARTH_CROSS_RELEASE   1: test with --release (default 0, see below)
#   HEARTH_CROSS_JOBS      passed to cargo as -j (default: cargo's own)
#   HEARTH_CROSS_BUNDLE    1 (default): also build the bundle library (hearth-ffi,
#                          cdylib + staticlib) for each target; 0: skip it
#   HEARTH_CROSS_CARGO_ARGS more cargo test arguments, split on spaces
#                          (e.g. "--features tract" or "--lib --test store")
#   HEARTH_CROSS_AARCH64_CPU  core qemu emulates for aarch64 (default cortex-a76,
#                          a phone core: NEON, no SVE; "max" is qemu's own
#                          default, with SVE, which makes tract pick SVE kernels)
#   HEARTH_CROSS_ARMV7_CPU core for armv7 (default cortex-a7, a TV-class core
#                          with NEON)
#   CARGO_TARGET_DIR       as usual
#
# Why not --release by default: the workspace already builds every dependency
# (SQLite, ring, later tract) at opt-level 3 in test builds, so what runs under
# qemu is mostly optimised already. --release adds fat LTO with one codegen
# unit to every test binary (the lib's and each integration test's), which
# costs far more build time than it saves in emulated run time. Measured on a
# scratch crate with rusqlite, ring, uniffi and tract-onnx, aarch64, after a
# one-line change: rebuild 8 s and tests 0.5 s here, 179 s and 0.5 s with
# --release (one fat-LTO link per test binary, of tract included).
#
# On armv7, tract-linalg chooses its NEON kernels by reading /proc/cpuinfo,
# which qemu-user 7.2 shows as the x86 host's: without help every armv7 run
# would take the VFPv2 fallback. TRACT_CPU_ARM32_NEON=true (unless already set)
# makes the NEON code, which devices run, the code under test.
#
# Tests that start a copy of their own binary (std::env::current_exe()) cannot
# exec it directly under qemu-user: the kernel does not know ARM executables
# here (no binfmt_misc). For them this exports HEARTH_TEST_RUNNER, the emulator
# command to put in front (empty on a native run), and QEMU_LD_PREFIX.
#
# Prints one line per target and a closing "cross: N passed, N failed";
# exits non-zero when any target failed to build or to pass.

set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

root="$repo"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    root="$(cd "$1" && pwd)" || exit 2
    shift
fi
[ "${1:-}" = "--" ] && shift
test_args=("$@")

packages="${HEARTH_CROSS_PACKAGES:-hearth-core hearth-secagg}"
config="$repo/.cargo/config.toml"

# Installs (or checks, in well under a second) the targets, compilers and qemu,
# and normalises HEARTH_CROSS_TARGETS.
# shellcheck source=../toolchains/cross.sh
. "$repo/tests/toolchains/cross.sh" || exit 1

cargo_args=(--config "$config")
for p in $packages; do
    cargo_args+=(-p "$p")
done
[ -n "${HEARTH_CROSS_JOBS:-}" ] && cargo_args+=(-j "$HEARTH_CROSS_JOBS")
# shellcheck disable=SC2206
[ -n "${HEARTH_CROSS_CARGO_ARGS:-}" ] && cargo_args+=($HEARTH_CROSS_CARGO_ARGS)
mode="test profile"
if [ "${HEARTH_CROSS_RELEASE:-0}" = 1 ]; then
    cargo_args+=(--release)
    mode=release
fi

cd "$root" || exit 2

passed=0
failed=0
summary=()
for t in $HEARTH_CROSS_TARGETS; do
    # The same emulator as the runner in .cargo/config.toml.
    neon="${TRACT_CPU_ARM32_NEON:-}"
    case "$t" in
    aarch64-unknown-linux-gnu)
        sysroot=/usr/aarch64-linux-gnu qemu=qemu-aarch64
        cpu="${HEARTH_CROSS_AARCH64_CPU:-cortex-a76}"
        ;;
    armv7-unknown-linux-gnueabihf)
        sysroot=/usr/arm-linux-gnueabihf qemu=qemu-arm
        cpu="${HEARTH_CROSS_ARMV7_CPU:-cortex-a7}"
        neon="${neon:-true}"
        ;;
    esac
    echo "== cross: $packages for $t ($mode, qemu -cpu $cpu) in $root"

    start=$(date +%s)
    if ! cargo test "${cargo_args[@]}" --target "$t" --no-run; then
        failed=$((failed + 1))
        summary+=("cross: $t: FAILED to build ($(($(date +%s) - start)) s)")
        continue
    fi
    # The bundle library apps load (cdylib + staticlib) links for the target
    # too; its release size is tests/cross/lib-size.sh's job.
    if [ "${HEARTH_CROSS_BUNDLE:-1}" = 1 ] &&
        ! cargo build --config "$config" -p hearth-ffi --lib --target "$t" ${HEARTH_CROSS_JOBS:+-j "$HEARTH_CROSS_JOBS"}; then
        failed=$((failed + 1))
        summary+=("cross: $t: hearth-ffi FAILED to build ($(($(date +%s) - start)) s)")
        continue
    fi
    built=$(date +%s)

    # QEMU_CPU and QEMU_LD_PREFIX reach qemu through the runner and through
    # HEARTH_TEST_RUNNER alike.
    # The sync schedules' property test runs its 1,000 schedules natively
    # (the rust lane); under emulation 100 check the same code on ARM.
    run_env=(HEARTH_TEST_RUNNER="$qemu -L $sysroot" QEMU_LD_PREFIX="$sysroot" QEMU_CPU="$cpu"
        HEARTH_SYNC_SCHEDULES="${HEARTH_SYNC_SCHEDULES:-100}")
    [ -n "$neon" ] && run_env+=(TRACT_CPU_ARM32_NEON="$neon")
    if env "${run_env[@]}" cargo test "${cargo_args[@]}" --target "$t" -- "${test_args[@]}"; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        result=FAILED
    fi
    summary+=("cross: $t: $result (build $((built - start)) s, tests under qemu $(($(date +%s) - built)) s)")
done

echo
for line in "${summary[@]}"; do
    echo "$line"
done
echo "cross: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

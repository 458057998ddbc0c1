#!/usr/bin/env bash
# Ensures what cross-compiling and emulating Hearth's ARM Linux targets needs,
# idempotently:
#   - the Rust standard library for each target (`rustup target add`), for the
#     toolchain that is active in the current directory;
#   - Debian's cross compilers and target libc (they link the Rust code and
#     compile the C parts: SQLite, ring's assembly and C);
#   - qemu-user (`qemu-aarch64`, `qemu-arm`), which runs the test binaries.
#
# Targets: $HEARTH_CROSS_TARGETS (space- or comma-separated), by default
#   aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
# The linker and runner for each are set in the repository's .cargo/config.toml.
#
# Run it:     bash tests/toolchains/cross.sh
# Source it:  . tests/toolchains/cross.sh   (also exports HEARTH_CROSS_TARGETS,
#   normalised to space-separated)
#
# Needs root for apt-get (only when a package is missing; `apt-get update` runs
# first then). Quiet on success: one summary line on stderr; the details go to
# $HEARTH_CACHE/logs/cross.log. When everything is present it only asks dpkg and
# looks for the targets' std in the sysroot (well under 1 s).

_hearth_cross_main() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    # shellcheck source=lib.sh
    . "$here/lib.sh"

    local log="$HEARTH_LOG_DIR/cross.log"
    local targets="${HEARTH_CROSS_TARGETS:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}"
    targets="$(echo "$targets" | tr ',' ' ' | xargs)"
    local start state t
    start="$(date +%s)"

    local pkgs="qemu-user"
    for t in $targets; do
        case "$t" in
        aarch64-unknown-linux-gnu)
            pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
            ;;
        armv7-unknown-linux-gnueabihf)
            pkgs="$pkgs gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
            ;;
        *)
            echo "cross: unknown target '$t' (known: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)" >&2
            return 1
            ;;
        esac
    done

    # What is missing? dpkg-query prints "ii " for an installed package and
    # nothing (plus an error on stderr) for an unknown one.
    local missing_pkgs="" missing_targets="" p sysroot
    for p in $pkgs; do
        case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" in
        ii*) ;;
        *) missing_pkgs="$missing_pkgs $p" ;;
        esac
    done
    if ! sysroot="$(rustc --print sysroot 2>/dev/null)"; then
        echo "cross: no working rustc on PATH" >&2
        return 1
    fi
    for t in $targets; do
        [ -d "$sysroot/lib/rustlib/$t/lib" ] || missing_targets="$missing_targets $t"
    done

    if [ -z "$missing_pkgs" ] && [ -z "$missing_targets" ]; then
        state="already installed"
    else
        mkdir -p "$HEARTH_LOG_DIR"
        if ! (
            set -eu
            exec >>"$log" 2>&1
            echo "== $(date -u '+%F %T') cross.sh: packages:${missing_pkgs:- none}; rust targets:${missing_targets:- none}"
            if [ -n "$missing_targets" ]; then
                command -v rustup >/dev/null || {
                    echo "rustup is needed to add the targets$missing_targets"
                    exit 1
                }
                # shellcheck disable=SC2086
                rustup target add $missing_targets
            fi
            if [ -n "$missing_pkgs" ]; then
                if [ "$(id -u)" -ne 0 ]; then
                    echo "need root to apt-get install$missing_pkgs"
                    exit 1
                fi
                export DEBIAN_FRONTEND=noninteractive
                # Other jobs on the machine may hold apt's locks for a while.
                apt-get -o DPkg::Lock::Timeout=300 update
                # shellcheck disable=SC2086
                apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends $missing_pkgs
            fi
            echo "== done"
        ); then
            hearth_fail cross "$log"
            return 1
        fi
        state="installed in $(hearth_elapsed "$start") s"
    fi

    export HEARTH_CROSS_TARGETS="$targets"
    echo "cross: $targets (rust std, cross gcc + libc, qemu-user): $state" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -eu
    _hearth_cross_main
else
    _hearth_cross_main || return 1
fi

#!/usr/bin/env bash
# Ensures a Swift toolchain for the Swift binding tests, idempotently.
#
# Debian 12 has no Swift; Debian 13 ("trixie") has `swiftlang` (swiftc, SwiftPM,
# XCTest, Foundation), which needs trixie's libc. So this builds a minimal
# trixie chroot (debootstrap --variant=minbase) with swiftlang and libc6-dev at
# $HEARTH_CACHE/swift-root (HEARTH_CACHE defaults to ~/.cache/hearth; about
# 3 GB). The file .hearth-complete inside it is written last: a chroot without
# it (an interrupted install) is removed and built again.
#
# Run it:     bash tests/toolchains/swift.sh
# Source it:  . tests/toolchains/swift.sh
#   which also exports SWIFT_ROOT and defines the shell function
#   `hearth_swift HOST_DIR CMD [ARG...]`, the same as swift-run.sh beside this
#   file: it runs CMD in the chroot with HOST_DIR bind-mounted at /work.
#
# Needs root. Quiet on success: one summary line on stderr; the details go to
# $HEARTH_CACHE/logs/swift.log. A second run only checks the marker file.
# HEARTH_DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).

_hearth_swift_main() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    # shellcheck source=lib.sh
    . "$here/lib.sh"

    local root="$HEARTH_CACHE/swift-root"
    local log="$HEARTH_LOG_DIR/swift.log"
    local mirror="${HEARTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    local start state
    start="$(date +%s)"

    if [ -f "$root/.hearth-complete" ]; then
        state="already installed"
    else
        mkdir -p "$HEARTH_LOG_DIR"
        if ! (
            set -eu
            exec >>"$log" 2>&1
            echo "== $(date -u '+%F %T') swift.sh: installing into $root"
            if [ "$(id -u)" -ne 0 ]; then
                echo "needs root (debootstrap, chroot)"
                exit 1
            fi
            command -v debootstrap >/dev/null || hearth_apt_install debootstrap
            if [ -e "$root" ]; then
                echo "removing an incomplete chroot at $root"
                # swift-run.sh mounts only inside private namespaces, so nothing
                # should be mounted here; refuse to delete if something is.
                if awk -v r="$root" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
                    echo "something is still mounted under $root; not deleting it:"
                    grep -F " $root" /proc/self/mounts || true
                    exit 1
                fi
                rm -rf --one-file-system "$root"
            fi
            mkdir -p "$(dirname "$root")"
            # debootstrap mounts /proc and /sys in the target while it works;
            # in a private mount namespace those mounts die with it, however
            # it is stopped.
            unshare --mount --propagation private -- \
                debootstrap --variant=minbase trixie "$root" "$mirror"
            cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
            # Same stance on stale Release dates as the host's apt, if any.
            printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99hearth"
            "$here/swift-run.sh" --installing - /bin/sh -c '
                set -e
                export DEBIAN_FRONTEND=noninteractive
                apt-get update
                apt-get install -y --no-install-recommends swiftlang libc6-dev
                apt-get clean
                rm -rf /var/lib/apt/lists/*
                swift --version'
            mkdir -p "$root/work"
            date -u '+%F %T' >"$root/.hearth-complete"
            echo "== done"
        ); then
            hearth_fail swift "$log"
            return 1
        fi
        state="installed in $(hearth_elapsed "$start") s"
    fi

    export SWIFT_ROOT="$root"
    echo "swift: trixie chroot with swiftlang at $SWIFT_ROOT (run commands with $here/swift-run.sh HOST_DIR CMD...): $state" >&2
}

# hearth_swift HOST_DIR CMD [ARG...]: CMD inside the chroot, HOST_DIR at /work.
hearth_swift() {
    "$_hearth_swift_run" "$@"
}
_hearth_swift_run="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/swift-run.sh"

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -eu
    _hearth_swift_main
else
    _hearth_swift_main || return 1
fi

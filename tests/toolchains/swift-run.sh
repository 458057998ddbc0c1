#!/usr/bin/env bash
# Runs a command inside the Swift chroot that swift.sh prepares, with a host
# directory bind-mounted at /work inside it, and /work as the working directory.
#
#   tests/toolchains/swift-run.sh HOST_DIR CMD [ARG...]
#   e.g. swift-run.sh bindings/swift swift test --scratch-path /tmp/hearth-build
#
# Environment: SWIFT_ROOT (default $HEARTH_CACHE/swift-root). Inside the chroot
# the environment is clean (HOME=/root, a standard PATH, LANG=C.UTF-8); pass
# variables with `env NAME=VALUE CMD ...` as the command.
#
# Mounts (/proc, /dev, the host directory) are made in a private mount
# namespace of their own (`unshare --mount`), with the command in a PID
# namespace of its own: the host never sees the mounts, and the kernel drops
# them, and kills whatever the command left running, when this script ends,
# however it is stopped (Ctrl-C, kill, kill -9, a crash). An EXIT trap also
# unmounts them on the ordinary paths. Several runs may go on at once, each
# with its own /work.
#
# Exit status: the command's.
set -eu

usage() {
    echo "usage: $0 HOST_DIR CMD [ARG...]" >&2
    exit 2
}

root="${SWIFT_ROOT:-${HEARTH_CACHE:-$HOME/.cache/hearth}/swift-root}"
# swift.sh uses --installing while it builds the chroot (no marker yet, and no
# host directory: pass - for HOST_DIR).
installing=0
if [ "${1:-}" = "--installing" ]; then
    installing=1
    shift
fi
[ $# -ge 2 ] || usage
host_dir="$1"
shift

if [ "$installing" -eq 0 ] && [ ! -f "$root/.hearth-complete" ]; then
    echo "swift-run: no complete Swift chroot at $root; run tests/toolchains/swift.sh first" >&2
    exit 1
fi
if [ "$host_dir" != "-" ]; then
    [ -d "$host_dir" ] || { echo "swift-run: no directory $host_dir" >&2; exit 1; }
    host_dir="$(cd "$host_dir" && pwd -P)"
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "swift-run: needs root (mount, chroot)" >&2
    exit 1
fi

# The inner script runs as the first process of the new mount namespace.
# shellcheck disable=SC2016
inner='
set -eu
root="$1"; host_dir="$2"; shift 2
mounted=""
cleanup() {
    # Unmount in reverse order of mounting. Redundant with the namespace
    # ending, but keeps the order clean while the namespace is still alive.
    for m in $mounted; do umount -R -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM HUP
mount -t proc proc "$root/proc" && mounted="$root/proc $mounted"
mount --rbind /dev "$root/dev" && mounted="$root/dev $mounted"
workdir=/
if [ "$host_dir" != "-" ]; then
    mkdir -p "$root/work"
    mount --bind "$host_dir" "$root/work" && mounted="$root/work $mounted"
    workdir=/work
fi
status=0
chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$workdir" "$@" || status=$?
exit "$status"
'
# --pid --fork: the inner script is process 1 of a new PID namespace, so when
# it dies (for whatever reason) the kernel kills everything left in it.
# --kill-child: it dies with unshare; setpriv --pdeathsig: unshare dies with
# this script, even on kill -9. unshare itself ignores INT and TERM, so this
# script stays in between to turn them into a kill of the whole namespace.
setpriv --pdeathsig KILL \
    unshare --mount --propagation private --pid --fork --kill-child=KILL \
    -- /bin/bash -c "$inner" swift-run "$root" "$host_dir" "$@" <&0 &
ns_pid=$!
interrupted=""
# shellcheck disable=SC2317 # called from the traps below
stop() {
    interrupted="$1"
    kill -KILL "$ns_pid" 2>/dev/null || true
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
status=0
while :; do
    if wait "$ns_pid"; then status=0; else status=$?; fi
    kill -0 "$ns_pid" 2>/dev/null || break
done
exit "${interrupted:-$status}"

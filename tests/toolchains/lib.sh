# shellcheck shell=bash
# Shared helpers for the toolchain installers in this folder. Sourced, never run.
#
# Everything here is meant to be called from inside a subshell with `set -eu`,
# so that a failure stops the install without touching the caller's shell.

HEARTH_CACHE="${HEARTH_CACHE:-$HOME/.cache/hearth}"
# shellcheck disable=SC2034 # used by the scripts that source this file
HEARTH_LOG_DIR="$HEARTH_CACHE/logs"

# hearth_apt_install PKG...: installs Debian packages, running `apt-get update`
# once (per installer run) if the first attempt cannot find them.
hearth_apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to apt-get install $*" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y --no-install-recommends "$@"; then
        return 0
    fi
    apt-get update
    apt-get install -y --no-install-recommends "$@"
}

# hearth_elapsed START: seconds since START (a `date +%s` value).
hearth_elapsed() {
    echo $(($(date +%s) - $1))
}

# hearth_fail NAME LOG: one-line failure message pointing at the log.
hearth_fail() {
    echo "$1: install FAILED; see $2 (last lines below)" >&2
    tail -n 15 "$2" >&2 || true
}

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

# hearth_python_venv VENV: makes a Python venv at VENV unless one is there.
# Debian ships ensurepip separately: when `python3 -m venv` fails, installs
# python3-venv (root only) and tries again.
hearth_python_venv() {
    [ -x "$1/bin/python" ] && return 0
    mkdir -p "$(dirname "$1")"
    python3 -m venv "$1" >/dev/null 2>&1 && return 0
    rm -rf "$1"
    echo "installing python3-venv" >&2
    hearth_apt_install python3-venv >/dev/null
    python3 -m venv "$1"
}

# hearth_pip_requirements VENV REQUIREMENTS [PIP_ARG...]: installs the
# requirements file into VENV when it changed since the last time (the
# file's SHA-256 is kept in the venv).
hearth_pip_requirements() {
    local venv="$1" req="$2"
    shift 2
    local stamp="$venv/.hearth-requirements.sha256" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "installing $req into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" -r "$req"
    echo "$want" >"$stamp"
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

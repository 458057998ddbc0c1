#!/usr/bin/env bash
# Ensures the WebDAV server the sync tests store records on: Debian's
# lighttpd with mod_webdav (core/tests/sync_webdav.rs starts its own
# instance on 127.0.0.1 with a temporary root; nothing is left running).
# Needs root for apt-get, only when a package is missing. Quiet on success.
(
    set -eu
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    # shellcheck source=lib.sh
    . "$here/lib.sh"
    if [ -x /usr/sbin/lighttpd ] && [ -e /usr/lib/lighttpd/mod_webdav.so ]; then
        exit 0
    fi
    mkdir -p "$HEARTH_LOG_DIR"
    echo "webdav: installing lighttpd and mod_webdav" >&2
    hearth_apt_install lighttpd lighttpd-mod-webdav >"$HEARTH_LOG_DIR/webdav.log" 2>&1
    # The package's own service, where an init system started it, is not
    # the one the tests use.
    if command -v service >/dev/null 2>&1; then
        service lighttpd stop >/dev/null 2>&1 || true
    fi
)

#!/usr/bin/env bash
# Ensures what the Kotlin binding tests need, idempotently:
#   - kotlinc, from the npm package `kotlin-compiler` (the whole kotlinc
#     distribution), unpacked under $HEARTH_CACHE (default ~/.cache/hearth);
#   - JNA (Debian `libjna-java`, /usr/share/java/jna.jar), which UniFFI's
#     generated Kotlin uses to load the native library;
#   - JUnit 4 (Debian `junit4`, /usr/share/java/junit4.jar) for JVM tests;
#   - a JDK (`java`; Debian's OpenJDK 17 if none is on PATH).
#
# Run it:     bash tests/toolchains/kotlin.sh
# Source it:  . tests/toolchains/kotlin.sh
#   which also exports KOTLINC (the kotlinc launcher), KOTLIN_HOME,
#   KOTLIN_LIB (its lib/: kotlin-stdlib, kotlin-test, kotlinx-coroutines jars),
#   JNA_JAR and JUNIT_JAR (junit4 + hamcrest, as a classpath).
#
# Quiet on success: one summary line on stderr; the details go to
# $HEARTH_CACHE/logs/kotlin.log. A second run only checks files (well under 1 s).

_hearth_kotlin_main() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    # shellcheck source=lib.sh
    . "$here/lib.sh"

    local version="${HEARTH_KOTLIN_VERSION:-2.4.20}"
    local home="$HEARTH_CACHE/kotlin-$version"
    local log="$HEARTH_LOG_DIR/kotlin.log"
    local jna=/usr/share/java/jna.jar
    local junit=/usr/share/java/junit4.jar
    local hamcrest=/usr/share/java/hamcrest-core.jar
    local start state
    start="$(date +%s)"

    if [ -f "$home/.hearth-complete" ] && [ -f "$jna" ] && [ -f "$junit" ] &&
        command -v java >/dev/null 2>&1; then
        state="already installed"
    else
        mkdir -p "$HEARTH_LOG_DIR"
        if ! (
            set -eu
            exec >>"$log" 2>&1
            echo "== $(date -u '+%F %T') kotlin.sh: installing into $home"
            if ! command -v java >/dev/null 2>&1; then
                hearth_apt_install openjdk-17-jdk-headless
            fi
            if [ ! -f "$jna" ] || [ ! -f "$junit" ]; then
                hearth_apt_install libjna-java junit4
            fi
            if [ ! -f "$home/.hearth-complete" ]; then
                command -v npm >/dev/null || hearth_apt_install npm
                tmp="$(mktemp -d "$HEARTH_CACHE/.kotlin-tmp.XXXXXX")"
                trap 'rm -rf "$tmp"' EXIT
                (cd "$tmp" && npm pack --silent "kotlin-compiler@$version")
                tar -xzf "$tmp"/kotlin-compiler-*.tgz -C "$tmp"
                test -f "$tmp/package/bin/kotlinc"
                chmod +x "$tmp"/package/bin/*
                # An interrupted earlier attempt may have left a partial copy.
                rm -rf "$home"
                mv "$tmp/package" "$home"
                touch "$home/.hearth-complete"
            fi
            echo "== done"
        ); then
            hearth_fail kotlin "$log"
            return 1
        fi
        state="installed in $(hearth_elapsed "$start") s"
    fi

    export KOTLIN_HOME="$home"
    export KOTLINC="$home/bin/kotlinc"
    export KOTLIN_LIB="$home/lib"
    export JNA_JAR="$jna"
    export JUNIT_JAR="$junit:$hamcrest"
    echo "kotlin: kotlinc $version ($KOTLINC), JNA $JNA_JAR, JUnit $junit, java $(readlink -f "$(command -v java)"): $state" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -eu
    _hearth_kotlin_main
else
    _hearth_kotlin_main || return 1
fi

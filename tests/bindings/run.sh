#!/usr/bin/env bash
# The Kotlin and Swift bindings, tested here against the real libhearth, from a
# fresh machine:
#   1. installs what is missing (tests/toolchains/kotlin.sh, swift.sh);
#   2. builds hearth-ffi (debug: the generator reads the UniFFI metadata that a
#      stripped release library no longer has) and uniffi-bindgen, in two
#      cargo invocations so that the `cli` feature stays out of libhearth;
#   3. generates the Kotlin and Swift code into $CARGO_TARGET_DIR/hearth-bindings
#      (never into the repository);
#   4. suite kotlin: kotlinc -Werror, then the JUnit tests on the JVM;
#   5. suite kotlin-console: the Android demo's console twin
#      (android-demo/console) with the app's plain-Kotlin files it drives
#      (android-demo/app/.../demo/model and .../demo/net), kotlinc -Werror,
#      run on the JVM;
#   6. suite swift: `swift test` (XCTest) in the Debian 13 chroot;
#   7. suite swift-console: the iOS demo's console twin (ios-demo/console)
#      with the app's Foundation-only files it drives (ios-demo/App/Shared),
#      as the package ios-demo/Package.swift: `swift build` and run in the chroot;
#   8. suite coverage: every function, constructor, method, foreign-trait
#      method and error variant the library exports must be used by the
#      Kotlin tests and by the Swift tests, under its name in that language.
# The console twins print their whole output (the ranked rows with reasons);
# they check what they print and exit non-zero on a failed check.
# The last line counts the suites: "bindings: N passed, N failed".
#
# Incremental: cargo, the generated files (rewritten only when they change),
# the compiled Kotlin (rebuilt when the hash of its sources changes) and
# SwiftPM's build directories are all kept in the output directory between runs.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
out="$CARGO_TARGET_DIR/hearth-bindings"
lib="$CARGO_TARGET_DIR/debug/libhearth.so"
bindgen="$CARGO_TARGET_DIR/debug/uniffi-bindgen"
mkdir -p "$out"
started=$(date +%s)

passed=0
failed=0
failed_names=()
pass() {
    passed=$((passed + 1))
    echo "--- $1 passed ($(($(date +%s) - $2)) s)"
}
fail() {
    failed=$((failed + 1))
    failed_names+=("$1")
    echo "--- $1 FAILED ($(($(date +%s) - $2)) s)"
}
finish() {
    echo "bindings: total $(($(date +%s) - started)) s"
    [ $failed -eq 0 ] || echo "failed suites: ${failed_names[*]}"
    echo "bindings: $passed passed, $failed failed"
    [ $failed -eq 0 ]
    exit
}

# sync SRC DST: makes DST hold exactly SRC's files, rewriting only those that
# differ (unchanged files keep their mtime, so the builds stay incremental).
sync() {
    local src="$1" dst="$2" f
    mkdir -p "$dst"
    (cd "$src" && find . -type f) | while read -r f; do
        if ! cmp -s "$src/$f" "$dst/$f"; then
            mkdir -p "$(dirname "$dst/$f")"
            cp "$src/$f" "$dst/$f"
        fi
    done
    (cd "$dst" && find . -type f) | while read -r f; do
        [ -e "$src/$f" ] || rm -f "$dst/$f"
    done
}

suites="kotlin kotlin-console swift swift-console coverage"

# ---- build and generate (every suite needs them)
t=$(date +%s)
echo "--- build: hearth-ffi, uniffi-bindgen; generate Kotlin and Swift"
if ! cargo build -j2 --locked -p hearth-ffi || ! cargo build -j2 --locked -p uniffi-bindgen; then
    for s in $suites; do fail "$s" "$t"; done
    finish
fi
rm -rf "$out/gen.new"
# Library mode; run inside the workspace (it reads core/uniffi.toml through cargo metadata).
if ! RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$bindgen" generate "$lib" --language kotlin --language swift --out-dir "$out/gen.new" --no-format >"$out/generate.log" 2>&1; then
    cat "$out/generate.log"
    echo "uniffi-bindgen generate failed"
    for s in $suites; do fail "$s" "$t"; done
    finish
fi
sync "$out/gen.new" "$out/gen"
rm -rf "$out/gen.new"
kotlin_gen="$out/gen/org/hearth/hearth.kt"
swift_gen="$out/gen/Hearth.swift"
echo "generated in $(($(date +%s) - t)) s: $kotlin_gen, $swift_gen"

# ---- kotlin
# Compiled Kotlin is rebuilt when what goes in changes (content hashes, so a
# checkout or a regeneration that changes nothing costs nothing). The
# generated code changes only with the library's interface: it gets a jar of
# its own, $out/kotlin/hearth.jar, which the tests and the console twin share.
kotlin_hearth_jar() {
    local k="$out/kotlin" gen_sig
    mkdir -p "$k"
    gen_sig="$(sha256sum <"$kotlin_gen")"
    if [ ! -f "$k/hearth.jar" ] || [ "$(cat "$k/hearth.sig" 2>/dev/null)" != "$gen_sig" ]; then
        echo "kotlinc -Werror: generated bindings"
        rm -f "$k/hearth.jar" "$k/tests.jar"
        "$KOTLINC" -Werror -cp "$JNA_JAR" "$kotlin_gen" -d "$k/hearth.jar" || return 1
        echo "$gen_sig" >"$k/hearth.sig"
    fi
}
suite_kotlin() {
    # shellcheck source=../toolchains/kotlin.sh
    . tests/toolchains/kotlin.sh || return 1
    kotlin_hearth_jar || return 1
    local k="$out/kotlin" tests_src=bindings/kotlin/src/test/kotlin
    local cp="$JNA_JAR:$JUNIT_JAR:$KOTLIN_LIB/kotlin-test.jar:$KOTLIN_LIB/kotlin-test-junit.jar"
    local gen_sig tests_sig
    gen_sig="$(cat "$k/hearth.sig")"
    local sources
    mapfile -t sources < <(find "$tests_src" -name '*.kt' | sort)
    tests_sig="$( (echo "$gen_sig" "${sources[@]}" && cat "${sources[@]}") | sha256sum)"
    if [ ! -f "$k/tests.jar" ] || [ "$(cat "$k/tests.sig" 2>/dev/null)" != "$tests_sig" ]; then
        echo "kotlinc -Werror: tests"
        rm -f "$k/tests.jar"
        "$KOTLINC" -Werror -cp "$k/hearth.jar:$cp" "${sources[@]}" -d "$k/tests.jar" || return 1
        echo "$tests_sig" >"$k/tests.sig"
    fi
    # The JUnit run: one JVM, the native library found through JNA's path;
    # HEARTH_MODEL_DIR is the built-in model package, for the install tests.
    # Every class of a *Test.kt file runs (its name is the file's).
    local classes
    mapfile -t classes < <(printf '%s\n' "${sources[@]}" | grep -E 'Test\.kt$' | sed -E 's:.*/(.*)\.kt$:org.hearth.\1:')
    HEARTH_MODEL_DIR="$repo/models/ranker-v1" \
        java -Djna.library.path="$(dirname "$lib")" -cp "$k/tests.jar:$k/hearth.jar:$cp:$KOTLIN_LIB/kotlin-stdlib.jar" \
        org.junit.runner.JUnitCore "${classes[@]}" >"$k/junit.log" 2>&1
    local status=$?
    if [ $status -ne 0 ]; then
        cat "$k/junit.log"
    else
        grep -E '^(OK \(|Tests run:|Time:)' "$k/junit.log"
    fi
    return $status
}
t=$(date +%s)
echo "--- kotlin"
if suite_kotlin; then pass kotlin "$t"; else fail kotlin "$t"; fi

# ---- kotlin-console: the Android demo's flow on the JVM (android-demo/console)
# The console is compiled with the app's own plain-Kotlin files (no android.*
# imports: the state holder DemoModel, the catalog, the HttpURLConnection
# FleetTransport), so what the Compose app runs is compiled and run here too.
suite_kotlin_console() {
    # shellcheck source=../toolchains/kotlin.sh
    . tests/toolchains/kotlin.sh || return 1
    kotlin_hearth_jar || return 1
    local k="$out/kotlin" c="$out/kotlin-console" src sources sig
    local app=android-demo/app/src/main/kotlin/org/hearth/demo
    mkdir -p "$c"
    for src in android-demo/console/src "$app/model" "$app/net"; do
        [ -n "$(find "$src" -name '*.kt' -print -quit)" ] || { echo "no Kotlin sources in $src"; return 1; }
    done
    mapfile -t sources < <(find android-demo/console/src "$app/model" "$app/net" -name '*.kt' | sort)
    sig="$( (cat "$k/hearth.sig" && echo "${sources[@]}" && cat "${sources[@]}") | sha256sum)"
    if [ ! -f "$c/console.jar" ] || [ "$(cat "$c/console.sig" 2>/dev/null)" != "$sig" ]; then
        echo "kotlinc -Werror: android-demo/console/src, $app/{model,net}"
        rm -f "$c/console.jar"
        "$KOTLINC" -Werror -cp "$k/hearth.jar:$JNA_JAR" "${sources[@]}" -d "$c/console.jar" || return 1
        echo "$sig" >"$c/console.sig"
    fi
    java -Djna.library.path="$(dirname "$lib")" \
        -cp "$c/console.jar:$k/hearth.jar:$JNA_JAR:$KOTLIN_LIB/kotlin-stdlib.jar" \
        org.hearth.console.MainKt >"$c/output.log" 2>&1
    local status=$?
    cat "$c/output.log"
    return $status
}
t=$(date +%s)
echo "--- kotlin-console"
if suite_kotlin_console; then pass kotlin-console "$t"; else fail kotlin-console "$t"; fi

# ---- swift
suite_swift() {
    # shellcheck source=../toolchains/swift.sh
    . tests/toolchains/swift.sh || return 1
    local pkg="$out/swift" stage="$out/swift.stage"
    # The package as the chroot sees it (only this directory is mounted, at
    # /work): the repository's manifest and tests, the generated sources,
    # libhearth.so, and the built-in model package (fixtures/ranker-v1, which
    # the tests find through HEARTH_MODEL_DIR).
    rm -rf "$stage"
    mkdir -p "$stage/Sources/Hearth" "$stage/Sources/HearthFFI" "$stage/lib" "$stage/fixtures"
    cp -R models/ranker-v1 "$stage/fixtures/ranker-v1"
    cp bindings/swift/Package.swift "$stage/"
    cp -R bindings/swift/Tests "$stage/"
    cp "$swift_gen" "$stage/Sources/Hearth/Hearth.swift"
    cp "$out/gen/HearthFFI.h" "$stage/Sources/HearthFFI/HearthFFI.h"
    cp "$out/gen/HearthFFI.modulemap" "$stage/Sources/HearthFFI/module.modulemap"
    cp "$lib" "$stage/lib/libhearth.so"
    mkdir -p "$pkg"
    for d in Sources Tests lib fixtures; do sync "$stage/$d" "$pkg/$d"; done
    cmp -s "$stage/Package.swift" "$pkg/Package.swift" || cp "$stage/Package.swift" "$pkg/Package.swift"
    rm -rf "$stage"
    # --disable-swift-testing: XCTest only (otherwise the closing line is the
    # empty swift-testing run's). The build directory stays in $pkg/.build.
    hearth_swift "$pkg" env HEARTH_MODEL_DIR=/work/fixtures/ranker-v1 swift test --scratch-path /work/.build -j 2 --disable-swift-testing \
        -Xswiftc -warnings-as-errors \
        -Xlinker -L/work/lib -Xlinker -rpath -Xlinker /work/lib >"$pkg/test.log" 2>&1
    local status=$?
    if [ $status -ne 0 ]; then
        cat "$pkg/test.log"
    else
        grep -E "^Test Suite 'All tests'|Executed [0-9]+ tests?" "$pkg/test.log" | tail -n 2
    fi
    return $status
}
t=$(date +%s)
echo "--- swift"
if suite_swift; then pass swift "$t"; else fail swift "$t"; fi

# ---- swift-console: the iOS demo's flow (ios-demo/console) in the chroot
suite_swift_console() {
    # shellcheck source=../toolchains/swift.sh
    . tests/toolchains/swift.sh || return 1
    local pkg="$out/swift-console" stage="$out/swift-console.stage"
    # The repository's layout as the demo's manifest (ios-demo/Package.swift)
    # expects it (it depends on ../bindings/swift; its targets are the app's
    # Foundation-only files in App/Shared and the console in console/Sources),
    # with the generated sources and libhearth.so; only this directory is
    # mounted, at /work. The build directory stays in $pkg/.build.
    rm -rf "$stage"
    mkdir -p "$stage/bindings/swift/Sources/Hearth" "$stage/bindings/swift/Sources/HearthFFI" \
        "$stage/ios-demo/App" "$stage/ios-demo/console" "$stage/lib"
    cp bindings/swift/Package.swift "$stage/bindings/swift/"
    cp "$swift_gen" "$stage/bindings/swift/Sources/Hearth/Hearth.swift"
    cp "$out/gen/HearthFFI.h" "$stage/bindings/swift/Sources/HearthFFI/HearthFFI.h"
    cp "$out/gen/HearthFFI.modulemap" "$stage/bindings/swift/Sources/HearthFFI/module.modulemap"
    cp ios-demo/Package.swift "$stage/ios-demo/"
    cp -R ios-demo/App/Shared "$stage/ios-demo/App/Shared"
    cp -R ios-demo/console/Sources "$stage/ios-demo/console/Sources"
    cp "$lib" "$stage/lib/libhearth.so"
    mkdir -p "$pkg"
    for d in bindings ios-demo lib; do sync "$stage/$d" "$pkg/$d"; done
    rm -rf "$stage"
    hearth_swift "$pkg" swift build --package-path /work/ios-demo --scratch-path /work/.build -j 2 \
        -Xswiftc -warnings-as-errors \
        -Xlinker -L/work/lib -Xlinker -rpath -Xlinker /work/lib >"$pkg/build.log" 2>&1 || {
        cat "$pkg/build.log"
        return 1
    }
    hearth_swift "$pkg" /work/.build/debug/HearthConsole >"$pkg/output.log" 2>&1
    local status=$?
    cat "$pkg/output.log"
    return $status
}
t=$(date +%s)
echo "--- swift-console"
if suite_swift_console; then pass swift-console "$t"; else fail swift-console "$t"; fi

# ---- coverage: every export used by both test suites
suite_coverage() {
    local exports kotlin_tests swift_tests missing=0
    exports="$("$bindgen" exports "$lib" core/uniffi.toml)" || return 1
    # Test sources without // comments, so a name in a comment does not count.
    kotlin_tests="$(find bindings/kotlin/src/test -name '*.kt' -exec cat {} + | sed 's://.*$::')"
    swift_tests="$(find bindings/swift/Tests -name '*.swift' -exec cat {} + | sed 's://.*$::')"
    local kind owner name kt sw n=0 declared_kt declared_sw used_kt used_sw
    while read -r kind owner name kt sw; do
        n=$((n + 1))
        case "$kind" in
        function | method | trait_method)
            declared_kt="fun \`$kt\`\("
            declared_sw="func \`?$sw\`?\("
            used_kt="(^|[^A-Za-z0-9_])$kt\("
            used_sw="(^|[^A-Za-z0-9_])$sw\("
            ;;
        constructor)
            declared_kt="fun \`${kt#*.}\`\("
            declared_sw="static func \`?${sw#*.}\`?\("
            used_kt="(^|[^A-Za-z0-9_])${kt//./\\.}\("
            used_sw="(^|[^A-Za-z0-9_])${sw//./\\.}\("
            ;;
        variant)
            declared_kt="class ${kt#*.}\("
            declared_sw="case ${sw#*.}([^A-Za-z0-9_]|$)"
            used_kt="(^|[^A-Za-z0-9_])${kt//./\\.}([^A-Za-z0-9_]|$)"
            used_sw="\.${sw#*.}([^A-Za-z0-9_]|$)"
            ;;
        *)
            echo "coverage: unknown kind '$kind'"
            return 1
            ;;
        esac
        if ! grep -Eq "$declared_kt" "$kotlin_gen"; then
            echo "coverage: $kind $owner::$name: '$kt' is not declared in the generated Kotlin (naming rule drift?)"
            missing=$((missing + 1))
        elif ! grep -Eq "$used_kt" <<<"$kotlin_tests"; then
            echo "coverage: $kind $owner::$name: '$kt' is not used by the Kotlin tests"
            missing=$((missing + 1))
        fi
        if ! grep -Eq "$declared_sw" "$swift_gen"; then
            echo "coverage: $kind $owner::$name: '$sw' is not declared in the generated Swift (naming rule drift?)"
            missing=$((missing + 1))
        elif ! grep -Eq "$used_sw" <<<"$swift_tests"; then
            echo "coverage: $kind $owner::$name: '$sw' is not used by the Swift tests"
            missing=$((missing + 1))
        fi
    done <<<"$exports"
    echo "coverage: $n exports (functions, constructors, methods, foreign-trait methods, error variants), $missing gaps"
    [ "$n" -gt 0 ] && [ $missing -eq 0 ]
}
t=$(date +%s)
echo "--- coverage"
if suite_coverage; then pass coverage "$t"; else fail coverage "$t"; fi

finish

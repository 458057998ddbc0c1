#!/usr/bin/env bash
# Hearth's whole test suite, from a fresh machine: installs what is missing
# (Rust targets, Kotlin, Swift, cross compilers, qemu, Python venvs) and runs
# every lane. This is the command README.md gives; .ci/run calls it.
#
#   tests/run.sh              every lane
#   tests/run.sh rust models  only the lanes named
#
# Lanes: rust, models, bindings, cross, federated, fuzz. Each prints its own results; the last
# line counts the lanes: "lanes: N passed, N failed".
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# One target directory for every lane (and for repeated runs on one machine).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"
# Earlier checkouts' outputs of the workspace's own crates fill the disk.
bash tests/toolchains/prune-target.sh || true

lane_rust() {
    command -v cargo >/dev/null || { echo "cargo is required (rustup)"; return 1; }
    rustup component add rustfmt >/dev/null 2>&1 || true
    cargo fmt --all -- --check || { echo "rust: cargo fmt --check failed"; return 1; }
    # The sync tests' WebDAV server (lighttpd).
    bash tests/toolchains/webdav.sh || return 1
    # --all-targets also runs each criterion benchmark once, in test mode.
    cargo test --workspace --exclude uniffi-bindgen --all-targets --locked &&
        cargo test --workspace --exclude uniffi-bindgen --doc --locked &&
        # The workspace build loads ONNX (the CLI's feature wins); the library
        # apps ship loads NNEF: hearth-core's tests again with that alone.
        cargo test -p hearth-core --no-default-features --features nnef --all-targets --locked
}

lane_models() {
    bash models/check.sh
}

lane_bindings() {
    bash tests/bindings/run.sh
}

lane_cross() {
    bash tests/toolchains/webdav.sh || return 1
    # ARM runs what phones and TVs ship: the NNEF loader (bindings' feature).
    HEARTH_CROSS_CARGO_ARGS="${HEARTH_CROSS_CARGO_ARGS:---no-default-features --features hearth-core/nnef}" bash tests/cross/run.sh
}

lane_federated() {
    bash tests/federated/run.sh
}

lane_fuzz() {
    # A smoke run of every fuzz target from its seeds (docs/fuzzing.md has
    # the long runs, which keep their corpora elsewhere).
    local corpus status
    corpus="$(mktemp -d)"
    HEARTH_FUZZ_CORPUS="$corpus" bash fuzz/run.sh "${HEARTH_FUZZ_SECONDS:-10}"
    status=$?
    rm -rf "$corpus"
    return $status
}

all=(rust models bindings cross federated fuzz)
lanes=("$@")
[ ${#lanes[@]} -gt 0 ] || lanes=("${all[@]}")

passed=0
failed=0
failed_names=()
for lane in "${lanes[@]}"; do
    if ! declare -F "lane_$lane" >/dev/null; then
        echo "unknown lane: $lane (lanes: ${all[*]})" >&2
        exit 2
    fi
    start=$(date +%s)
    echo "=== lane $lane"
    if "lane_$lane"; then
        passed=$((passed + 1))
        echo "=== lane $lane passed in $(($(date +%s) - start)) s"
    else
        failed=$((failed + 1))
        failed_names+=("$lane")
        echo "=== lane $lane FAILED after $(($(date +%s) - start)) s"
    fi
done
[ $failed -eq 0 ] || echo "failed lanes: ${failed_names[*]}"
echo "lanes: $passed passed, $failed failed"
[ $failed -eq 0 ]

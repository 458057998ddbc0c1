#!/usr/bin/env bash
# Runs every fuzz target for a set time and prints, per target, the
# executions reached, the peak memory and the crashes found.
#
#   fuzz/run.sh                 60 s per target
#   fuzz/run.sh 10              the smoke run tests/run.sh makes
#   fuzz/run.sh 600 npy movielens
#   HEARTH_FUZZ_RUNS=1000000 fuzz/run.sh 7200 model_manifest
#                               stop a target at a million executions or
#                               after two hours, whichever comes first
#
# Installs what is missing (a nightly toolchain through rustup, cargo-fuzz
# from crates.io), writes the seed corpora from real messages, packages and
# documents (`cargo run -p hearth-core --example fuzz_seeds`), and keeps the
# corpora it grows under ~/.cache/hearth/fuzz/corpus (or $HEARTH_FUZZ_CORPUS:
# the smoke run starts from the seeds alone, so its time stays bounded). Each input may allocate at
# most 256 MB (-malloc_limit_mb, -rss_limit_mb): more is a finding. A crash
# leaves its input in fuzz/artifacts/<target>/ and fails the run. The last
# line counts the targets: "fuzz: N passed, N failed".
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-60}"
shift || true
all=(fleet_message fleet_replies secagg_messages pairing_messages sync_records webdav_listing npy model_manifest nnef_graph export_document sealed_record movielens)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
cache="$HOME/.cache/hearth/fuzz"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
fuzz_target_dir="$HOME/.cache/hearth/fuzz-target"
mkdir -p "$cache"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing a nightly toolchain"
    rustup toolchain install nightly --profile minimal || exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz || exit 1
fi

corpora="${HEARTH_FUZZ_CORPUS:-$cache/corpus}"
echo "fuzz: seed corpora"
seeds="$corpora/.seeds"
rm -rf "$seeds"
cargo run -q --locked -p hearth-core --example fuzz_seeds -- "$seeds" || exit 1

echo "fuzz: building ${#targets[@]} targets"
# No sanitizer: the code fuzzed is safe Rust (the sanitizers guard unsafe
# code); this keeps builds and executions fast. Debug assertions stay on.
(cd fuzz && CARGO_TARGET_DIR="$fuzz_target_dir" cargo +nightly fuzz build --sanitizer none 2>&1 |
    tail -3) || exit 1
build="$fuzz_target_dir/x86_64-unknown-linux-gnu/release"

passed=0
failed=0
for t in "${targets[@]}"; do
    corpus="$corpora/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    # Beside the corpus: two runs at once (a long one and the test
    # command's smoke run) keep their own logs.
    log="$corpora/$t.log"
    runs=()
    [ -z "${HEARTH_FUZZ_RUNS:-}" ] || runs=(-runs="$HEARTH_FUZZ_RUNS")
    # A target that opens a store (sync_records) makes it under TMPDIR and
    # cannot remove it when libFuzzer exits: each run gets its own, removed
    # after it.
    scratch="$(mktemp -d)"
    started=$SECONDS
    TMPDIR="$scratch" "$build/$t" "$corpus" "$seeds/$t" -max_total_time="$seconds" -max_len=1048576 -timeout=10 \
        -malloc_limit_mb=256 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "${runs[@]}" >"$log" 2>&1
    status=$?
    rm -rf "$scratch"
    elapsed=$((SECONDS - started))
    # -a: a log may quote an input's bytes.
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rss=$(grep -ao 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ $status -eq 0 ] && [ "$crashes" -eq 0 ]; then
        passed=$((passed + 1))
        echo "fuzz: $t: ${execs:-0} executions in $elapsed s, peak RSS ${rss:-?} MB, 0 crashes"
    else
        failed=$((failed + 1))
        echo "fuzz: $t FAILED (exit $status): ${execs:-0} executions, $crashes inputs in fuzz/artifacts/$t"
        grep -aE 'ERROR|panicked|malloc|SUMMARY' "$log" | head -5
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]

#!/usr/bin/env bash
# The load test of secure aggregation: HEARTH_DEVICES (1,000) lightweight
# devices (real Fleet clients with a synthetic update of the model's size,
# no store, no training; core/tests/load.rs), 5% of them dropping at a
# stage each round, through one real SuperLink and the ServerApp in secure
# mode for HEARTH_ROUNDS (2) rounds. Prints each round's time and dropouts
# (the coordinator's summary), every failure the devices saw, and the peak
# memory of the SuperLink and of the ServerApp. Not part of the test
# command (it takes a while): a measurement, for README and docs.
#
#   tests/federated/load.sh
#   HEARTH_DEVICES=200 tests/federated/load.sh
#   HEARTH_POLL_S=10 tests/federated/load.sh    devices poll every 10 s (3)
#   HEARTH_LINGER_S=300 tests/federated/load.sh   devices stay online 300 s
#       after their last reply, for the ServerApp to pull it (120)
#   HEARTH_ROUND_WAIT_S=3600 tests/federated/load.sh  devices and the
#       coordinator wait up to an hour for a round's stage (900 s)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
devices="${HEARTH_DEVICES:-1000}"
rounds="${HEARTH_ROUNDS:-2}"
# How long a device waits for a stage, and the coordinator for a stage's replies.
export HEARTH_ROUND_WAIT_S="${HEARTH_ROUND_WAIT_S:-900}"
# How long a device stays online after its last reply (core/tests/load.rs);
# the coordinator waits longer than that between rounds, or it samples the
# last round's lingering nodes, which never answer.
export HEARTH_LINGER_S="${HEARTH_LINGER_S:-120}"
round_gap=$((HEARTH_LINGER_S + 15))

# shellcheck source=flower.sh
. tests/federated/flower.sh
flower_venv
flower_workdir load
flower_keep_logs=1
echo "load: building the device test"
cargo test -p hearth-core --test load --locked --no-run 2>&1 | tail -1
flower_superlink_start

flwr run coordinator local --run-config \
    "model-dir='$repo/models/ranker-v1' out-dir='$work/out' min-nodes=$devices num-server-rounds=$rounds \
clip-norm=1.0 noise-multiplier=1.0 round-timeout=$HEARTH_ROUND_WAIT_S.0 round-gap=$round_gap.0 secure-aggregation=true" | tail -1

# The peak resident memory of the SuperLink and of the ServerApp processes,
# sampled every 2 s while the devices run.
peaks="$work/peaks"
(
    while sleep 2; do
        # The SuperLink's group, and the ServerApp it starts (in a session
        # of its own).
        for pid in $(pgrep -g "$superlink_pid" 2>/dev/null) $(pgrep -f flwr-serverapp 2>/dev/null); do
            # The program a python3 runs (flower-superlink, flwr-serverapp, ...).
            name="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 2p | xargs -r basename)"
            hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
            [ -n "$hwm" ] && echo "$pid $hwm $name"
        done >>"$peaks"
    done
) &
sampler=$!

start=$(date +%s)
HEARTH_SUPERLINK="http://127.0.0.1:$port" HEARTH_DEVICES="$devices" HEARTH_ROUNDS="$rounds" \
    cargo test -p hearth-core --test load --locked -- --ignored --nocapture 2>&1 |
    tee "$work/devices.log" | grep -E "^load|^test |test result|panicked|overflow" || true
elapsed=$(($(date +%s) - start))
for _ in $(seq 1 120); do
    [ -f "$work/out/summary.json" ] && break
    sleep 1
done
kill "$sampler" 2>/dev/null || true
echo "load: $devices devices x $rounds rounds in $elapsed s"
"$py" - "$work/out/summary.json" <<'PY' || true
import json, sys
for r in json.load(open(sys.argv[1]))["rounds"]:
    print(f"load: round {r['round']}: {r.get('participants', 0)} of {r.get('sampled')} in the sum, "
          f"dropped {r.get('dropped_at')}, {r.get('seconds')} s, applied {r['applied']}"
          + (f", failed: {r['failed']}" if "failed" in r else "")
          + (f", reasons {r['drop_reasons']}" if "drop_reasons" in r else ""))
PY
echo "load: peak resident memory (kB, process):"
# VmHWM only grows: a process's last sample is its peak.
awk '{ last[$1] = $0 } END { for (p in last) print last[p] }' "$peaks" 2>/dev/null | sort -k2 -n -r |
    awk '{ printf "load:   %8d kB  %s\n", $2, substr($0, index($0, $3)) }' | head -5

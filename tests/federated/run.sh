#!/usr/bin/env bash
# Flower end to end: Hearth devices (the Rust Fleet client in hearth-core,
# each with its own encrypted store and history) take part in FedAvg rounds
# run by Hearth's ServerApp (coordinator/) on a real `flower-superlink`.
#
#   tests/federated/run.sh                    10 devices, 3 rounds
#   HEARTH_DEVICES=3 HEARTH_ROUNDS=2 tests/federated/run.sh
#
# Makes (once) a venv with the pinned flwr under ~/.cache/hearth, starts a
# SuperLink on a free 127.0.0.1 port, submits the ServerApp with `flwr run`,
# runs the `#[ignore]`d device test against it, checks the coordinator's
# summary, and stops the SuperLink (and the ServerApp it started).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
devices="${HEARTH_DEVICES:-10}"
rounds="${HEARTH_ROUNDS:-3}"
clip="${HEARTH_CLIP:-1.0}"
noise="${HEARTH_NOISE:-0.05}"
lr="${HEARTH_LR:-0.5}"
# The bits of a device's segment report (hearth-core's default SegmentConfig,
# SegmentConfig::report_labels): the run asks every device for one.
segment_labels="lifecycle.new,lifecycle.active,lifecycle.at_risk,lifecycle.dormant,engagement.light,\
engagement.regular,engagement.power,daypart.night,daypart.morning,daypart.afternoon,daypart.evening,\
device.phone,device.tablet,device.tv,device.car,device.speaker,binge_watcher,abandoner"

# The device's RDP accountant is tested (core/tests/accountant.rs) against
# epsilons from Google's dp_accounting; prove that fixture current: regenerate
# it with the pinned dp_accounting (its own venv, made once) and compare.
echo "federated: dp_accounting fixture of the privacy accountant"
python3 tests/federated/accountant_fixture.py --check
python3 tests/federated/ddg_fixture.py --check

# shellcheck source=flower.sh
. tests/federated/flower.sh
flower_venv

echo "federated: coordinator unit checks"
(cd coordinator && "$py" tests/test_strategy.py)
(cd coordinator && "$py" tests/test_segments.py)
(cd coordinator && "$py" tests/test_secure.py)
(cd coordinator && "$py" tests/test_adaptive_clip.py)
(cd coordinator && "$py" tests/test_gate.py)
(cd coordinator && "$py" tests/test_estimate.py)
(cd coordinator && "$py" tests/test_evaluation.py)

flower_workdir federated

# The ServerApp writes summary.json in its out-dir once the run is over:
# wait up to a minute for it after the devices are done.
wait_for_summary() {
    for _ in $(seq 1 60); do
        [ -f "$1/summary.json" ] && return 0
        sleep 1
    done
}

# The coordinator's model-signing key for this run; devices trust its public half.
"$py" - "$work" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.generate()
open(f"{sys.argv[1]}/coordinator.key", "wb").write(key.private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(f"{sys.argv[1]}/coordinator.pub", "w").write(key.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex())
PY

echo "federated: building the device tests"
cargo test -p hearth-core --test fleet --test secure_rounds --test evaluation_rounds --locked --no-run 2>&1 | tail -1

flower_superlink_start

flwr run coordinator local --run-config \
    "model-dir='$repo/models/ranker-v1' signing-key='$work/coordinator.key' out-dir='$work/out' \
min-nodes=$devices num-server-rounds=$rounds clip-norm=$clip noise-multiplier=$noise learning-rate=$lr \
segment-report-labels='$segment_labels' round-timeout=600.0 secure-aggregation=false" \
    | tail -1

start=$(date +%s)
HEARTH_SUPERLINK="http://127.0.0.1:$port" HEARTH_DEVICES="$devices" HEARTH_ROUNDS="$rounds" \
    HEARTH_COORDINATOR_PUBKEY="$(cat "$work/coordinator.pub")" HEARTH_ROUND_WAIT_S=600 \
    cargo test -p hearth-core --test fleet --locked -- --ignored --nocapture devices_take_part 2>&1 |
    tee "$work/devices.log" |
    grep -E "^device|devices x|^test |test result|panicked"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
echo "federated: $devices devices x $rounds rounds in $(($(date +%s) - start)) s"

wait_for_summary "$work/out"
"$py" - "$work/out/summary.json" "$devices" "$rounds" "$clip" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
devices, rounds, clip = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
got = summary["rounds"]
assert len(got) == rounds, f"{len(got)} rounds aggregated, expected {rounds}"
for r in got:
    assert r["participants"] == devices and r["dropped"] == 0, r
    assert r["max_norm"] <= clip * (1 + 1e-5), r
    seg = r["segments"]
    assert seg["reports"] == devices, r
    print(f"  round {r['round']}: {r['participants']} updates, max norm {r['max_norm']:.4f}, "
          f"noise std {r['noise_std']:.4f}, examples (coarse) {r['examples']}; segment reports {seg['reports']}, "
          f"std error {seg['std_error']:.1f}: " + ", ".join(f"{k} {v:.1f}" for k, v in seg["sizes"].items() if v > 0.5))
PY

# The global model the rounds made ranks each device's held-out item (an
# unwatched item of the genre it watches) better than the initial model.
HEARTH_DEVICES="$devices" HEARTH_GLOBAL_WEIGHTS="$work/out/weights.bin" HEARTH_COORDINATOR_KEY="$work/coordinator.key" \
    HEARTH_COORDINATOR_PUBKEY="$(cat "$work/coordinator.pub")" \
    cargo test -p hearth-core --test fleet --locked -- --ignored --nocapture global_model_ranks 2>&1 |
    tee "$work/quality.log" | grep -E "^held-out|^mean rank|^test |test result|panicked"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# The command line's simulator against the same SuperLink: a second run of
# the ServerApp, with FedAdam on the server, adaptive clipping (a plain
# round's count is the coordinator's own, from the updates it sees) and a
# dense weight (the devices scale the dense part of their update before
# clipping, the coordinator divides it out), 3 synthetic devices from
# `hearth simulate --flower`.
echo "federated: hearth simulate --flower (3 devices, 2 rounds)"
cargo build -p hearth-cli --locked 2>&1 | tail -1
flwr run coordinator local --run-config \
    "model-dir='$repo/models/ranker-v1' signing-key='$work/coordinator.key' out-dir='$work/out-cli' \
min-nodes=3 num-server-rounds=2 clip-norm=$clip noise-multiplier=$noise learning-rate=$lr round-timeout=600.0 \
server-optimizer='fedadam' server-learning-rate=0.02 secure-aggregation=false adaptive-clip-quantile=0.5 \
dense-weight=0.5" \
    | tail -1
"$CARGO_TARGET_DIR/debug/hearth" simulate --devices 3 --rounds 2 --flower "http://127.0.0.1:$port" \
    --trust-key "$(cat "$work/coordinator.pub")" --round-wait 600 | tee "$work/cli.log" | grep -E "^ {4}|federated rounds"
grep -Eq "^ +2 +3 " "$work/cli.log" || { echo "federated: the simulator's round 2 did not have 3 participants"; exit 1; }
grep -q "global model, as the devices installed it" "$work/cli.log"
"$py" - "$work/out-cli/summary.json" <<'PY' || { echo "federated: the FedAdam run's summary is not as asked"; exit 1; }
import json, sys
s = json.load(open(sys.argv[1]))
assert s["server_optimizer"] == "fedadam" and s["server_learning_rate"] == 0.02, s
assert [r["participants"] for r in s["rounds"]] == [3, 3], s["rounds"]
first, second = s["rounds"]
assert first["clip_norm"] == s["clip_norm"] and second["clip_norm"] == first["next_clip_norm"], s["rounds"]
assert all(r["dense_weight"] == 0.5 for r in s["rounds"]), s["rounds"]
PY
# Secure aggregation with distributed noise: the same devices in secure
# rounds, some dropping at each stage, each adding its share of the noise
# before masking. The devices keep a test-only record of each quantized
# update, with and without their noise share, and of the global parameters
# each round sent (never sent back); the coordinator's sum must equal the
# survivors' noised records, and what it applied must differ from their
# noiseless sum by noise of the announced size and nothing else. Each
# device flips its own coin (device-sampling-rate): a device it leaves out
# sends its noise share over zeros, and its record says so. The clip norm
# is adaptive (adaptive-clip-quantile): each device's bit, whether its
# update was within C, rides in the masked sum as one more value, and C
# moves between rounds by the noisy count.
coin=0.7
echo "federated: secure aggregation, distributed noise ($devices devices, $rounds rounds, drops at each stage, coins at $coin)"
flwr run coordinator local --run-config \
    "model-dir='$repo/models/ranker-v1' signing-key='$work/coordinator.key' out-dir='$work/out-secure' \
min-nodes=$devices num-server-rounds=$rounds clip-norm=$clip noise-multiplier=$noise learning-rate=$lr \
round-timeout=300.0 secure-aggregation=true noise-mode='distributed' device-sampling-rate=$coin \
adaptive-clip-quantile=0.5" \
    | tail -1
mkdir -p "$work/witness"
start=$(date +%s)
HEARTH_SUPERLINK="http://127.0.0.1:$port" HEARTH_DEVICES="$devices" HEARTH_ROUNDS="$rounds" \
    HEARTH_COORDINATOR_PUBKEY="$(cat "$work/coordinator.pub")" HEARTH_ROUND_WAIT_S=300 HEARTH_WITNESS_DIR="$work/witness" \
    HEARTH_NOISE_MODE=distributed HEARTH_DEVICE_SAMPLING_RATE=$coin HEARTH_ADAPTIVE_CLIP=1 cargo test -p hearth-core --test secure_rounds --locked -- --ignored --nocapture 2>&1 |
    tee "$work/secure.log" | grep -E "^secure|^test |test result|panicked"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
echo "federated: secure rounds in $(($(date +%s) - start)) s"
wait_for_summary "$work/out-secure"
"$py" - "$work/out-secure/summary.json" "$work/witness" "$rounds" "$work/out-secure/weights.bin" "$coin" <<'PY'
import hashlib, json, sys
from pathlib import Path
import numpy as np
summary = json.load(open(sys.argv[1]))
witness = Path(sys.argv[2])
rounds = int(sys.argv[3])
final = np.fromfile(sys.argv[4], dtype="<f4").astype(np.float64)
assert summary["mode"] == "secure", summary
got = summary["rounds"]
assert len(got) == rounds and all(r["applied"] for r in got), got
assert all(r["noise_mode"] == "distributed" for r in got), got
assert all(r["device_sampling_rate"] == float(sys.argv[5]) for r in got), got


def total(r, suffix):
    out = None
    for node in r["survivors"]:
        [f] = witness.glob(f"r{r['round']}-n{node}-b{r['bits']}.{suffix}")
        q = np.fromfile(f, dtype="<u4").astype(np.uint64)
        out = q if out is None else out + q
    return out % (1 << r["bits"])


def signed(v, bits):
    v = v.astype(np.int64)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


stages = set()
for earlier, later in zip(got, got[1:]):
    # Adaptive clipping: each round's C is where the one before moved it.
    assert later["clip_norm"] == earlier["next_clip_norm"], (earlier, later)
for r in got:
    # The mean is over the coin's rate times the survivors.
    bits, scale, n = r["bits"], r["scale"], r["device_sampling_rate"] * len(r["survivors"])
    noised, clean = total(r, "u32"), total(r, "clean.u32")
    assert hashlib.sha256(noised.astype("<u4").tobytes()).hexdigest() == r["sum_sha256"], \
        f"round {r['round']}: the sum is not the survivors'"
    # The noise in the mean: what the devices added, nothing removed.
    noise = signed((noised + (1 << bits) - clean) % (1 << bits), bits) / scale / n
    std = noise.std()
    assert abs(std / r["noise_std"] - 1) < 0.05, f"round {r['round']}: noise std {std} where {r['noise_std']} was announced"
    # What the coordinator applied (FedAvg, rate 1): exactly the noised
    # mean, no noise of its own.
    start = np.fromfile(witness / f"g{r['round']}.f32", dtype="<f4").astype(np.float64)
    nxt = witness / f"g{r['round'] + 1}.f32"
    after = np.fromfile(nxt, dtype="<f4").astype(np.float64) if nxt.exists() else final
    applied = after - start
    # The last value is the count of unclipped updates: each included
    # device's +-beta/2, quantized. The coordinator's noisy count is the
    # exact one within the devices' noise on it, and what its estimate of
    # the included (rate times survivors) misses.
    beta = r["count_weight"]
    last = signed(clean[-1:], bits)[0] / scale
    included = 0
    for node in r["survivors"]:
        [f] = witness.glob(f"r{r['round']}-n{node}-b{bits}.clean.u32")
        included += int(np.fromfile(f, dtype="<u4")[-1] != 0)
    exact = last / beta + included / 2
    noisy = r["unclipped_share"] * n
    count_std = r["noise_std"] * n / beta
    assert abs(noisy - exact) <= 5 * count_std + abs(n - included) / 2 + len(r["survivors"]) / (beta * scale), \
        f"round {r['round']}: a count of {noisy} where {exact} were unclipped (noise std {count_std})"
    assert abs(r["next_clip_norm"] / r["clip_norm"] - np.exp(-0.2 * (r["unclipped_share"] - 0.5))) < 1e-9, r
    noised, clean = noised[:-1], clean[:-1]
    gap = np.abs(applied - signed(noised, bits) / scale / n).max()
    assert gap < 1e-5, f"round {r['round']}: the applied update is {gap} away from the devices' noised mean"
    stages |= {s for s, k in r["dropped_at"].items() if k}
    print(f"  round {r['round']}: {r['participants']} of {r['sampled']} in the sum (equal to their own records), "
          f"dropped {r['dropped_at']}, {bits} bits, scale {scale:.1f}; devices' noise in the mean std {std:.5f} "
          f"(announced {r['noise_std']:.5f}), applied = noised mean within {gap:.1e}, {r['seconds']:.1f} s; "
          f"C {r['clip_norm']:.4f}, {exact:.1f} of {included} included unclipped, counted {noisy:.2f}")
# A device that stops after its keys is lost at the share-keys stage, after
# its shares at the masked-input stage, after its masked vector at unmask.
assert {"share-keys", "masked-input", "unmask"} <= stages, f"drops seen only at {stages}"
PY
HEARTH_DEVICES="$devices" HEARTH_GLOBAL_WEIGHTS="$work/out-secure/weights.bin" HEARTH_COORDINATOR_KEY="$work/coordinator.key" \
    HEARTH_COORDINATOR_PUBKEY="$(cat "$work/coordinator.pub")" \
    cargo test -p hearth-core --test fleet --locked -- --ignored --nocapture global_model_ranks 2>&1 |
    tee "$work/quality-secure.log" | grep -E "^held-out|^mean rank|^test |test result|panicked"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# The release gate: after each secure training round (distributed noise),
# the devices evaluate the round's model, sent as a signed candidate, on an
# engagement each recorded after training, against the model they rank
# with and the fallback; the coordinator gets only the noisy sums and
# decides. The devices' records of what they quantized must add up to the
# coordinator's sums, and a training round sends its model as published
# only when the gate passed it. The run ends with an experiment-report
# round: each device's report of the two-arm experiment it is in, summed
# with the devices' noise into per-arm estimates.
gate_rounds=2
echo "federated: release gate ($devices devices, $gate_rounds rounds, each followed by an evaluation)"
flwr run coordinator local --run-config \
    "model-dir='$repo/models/ranker-v1' signing-key='$work/coordinator.key' out-dir='$work/out-gate' \
min-nodes=$devices num-server-rounds=$gate_rounds clip-norm=$clip noise-multiplier=$noise learning-rate=$lr \
round-timeout=300.0 secure-aggregation=true noise-mode='distributed' release-gate=true \
experiment-report='home-row.v1:model,popular'" \
    | tail -1
mkdir -p "$work/witness-gate"
start=$(date +%s)
HEARTH_SUPERLINK="http://127.0.0.1:$port" HEARTH_DEVICES="$devices" HEARTH_ROUNDS="$gate_rounds" \
    HEARTH_COORDINATOR_PUBKEY="$(cat "$work/coordinator.pub")" HEARTH_ROUND_WAIT_S=300 \
    HEARTH_WITNESS_DIR="$work/witness-gate" cargo test -p hearth-core --test evaluation_rounds --locked -- \
    --ignored --nocapture 2>&1 | tee "$work/gate.log" | grep -E "^evaluation|^test |test result|panicked"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
echo "federated: release gate rounds in $(($(date +%s) - start)) s"
wait_for_summary "$work/out-gate"
(cd coordinator && "$py" - "$work/out-gate" "$work/witness-gate" "$gate_rounds" "$devices") <<'PY'
import hashlib, json, sys
from pathlib import Path
import numpy as np
from hearth_coordinator.gate import decide
out, witness, rounds, devices = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = json.loads((out / "summary.json").read_text())
trained, evaluated = summary["rounds"], summary["evaluations"]
assert len(trained) == rounds and all(r["applied"] for r in trained), trained
assert [e["round"] for e in evaluated] == list(range(1, rounds + 1)), evaluated
# Round 1 sends the shipped model as published; each later round sends
# its model as published only when the gate passed it.
assert trained[0]["model_release"] == "published", trained[0]
for e, nxt in zip(evaluated, trained[1:]):
    assert nxt["model_release"] == ("published" if e["gate"]["publish"] else "candidate"), (e, nxt)


def witness_sums(kind, r):
    """The survivors' own records of round r's vectors of `kind` ("e"
    evaluations, "x" experiment reports), summed modulo 2^bits, with and
    without their noise shares, checked against the coordinator's digest;
    as signed integers."""
    bits = r["bits"]
    out = []
    for suffix in ("u32", "clean.u32"):
        t = None
        for node in r["survivors"]:
            [f] = witness.glob(f"{kind}{r['round']}-n{node}-b{bits}.{suffix}")
            q = np.fromfile(f, dtype="<u4").astype(np.uint64)
            t = q if t is None else t + q
        out.append(t % (1 << bits))
    assert hashlib.sha256(out[0].astype("<u4").tobytes()).hexdigest() == r["sum_sha256"], \
        f"{r['task']} of round {r['round']}: the sum is not the survivors'"
    return [np.where(v >= 1 << (bits - 1), v.astype(np.int64) - (1 << bits), v.astype(np.int64)) for v in out]


for e in evaluated:
    scale = e["scale"]
    assert e["noise_mode"] == "distributed" and e["task"] == "evaluate-model", e
    noised, clean = witness_sums("e", e)
    # The coordinator's sums: the survivors' noised contributions, and the
    # noise in them the devices' shares (nothing taken out, nothing added).
    sums = np.array(e["sums"])
    assert np.abs(sums - noised / scale).max() < 1e-9, (sums, noised / scale)
    noise = sums - clean / scale
    assert np.abs(noise).max() < 6 * e["sigma"], (noise, e["sigma"])
    # Every survivor had a held-out engagement: the count is theirs.
    exact = clean / scale
    assert abs(exact[0] - len(e["survivors"])) < 1e-3 * len(e["survivors"]), exact
    assert e["gate"] == decide(e["sums"], e["sigma"], summary["release_gate"]["z"]), e
    g = e["gate"]
    print(f"  evaluation {e['round']}: {len(e['survivors'])} of {e['sampled']} devices, NDCG@10 candidate "
          f"{exact[1] / exact[0]:.4f}, published {exact[2] / exact[0]:.4f}, fallback {exact[3] / exact[0]:.4f} "
          f"(noisy: {g['candidate']:.4f} / {g['published']:.4f} / {g['fallback']:.4f}, sigma {e['sigma']:.3f}); "
          f"{'published' if g['publish'] else 'kept'}")
# The experiment: the per-arm sums are the devices' reports (each in its
# own arm's place) plus their noise, and the estimates are the rule's.
from hearth_coordinator.estimate import estimate_arms
[x] = summary["experiment_reports"]
scale = x["scale"]
assert x["experiment"] == "home-row.v1" and x["task"] == "experiment-report", x
noised, clean = witness_sums("x", x)
assert np.abs(np.array(x["sums"]) - noised / scale).max() < 1e-9, x
exact = clean / scale
assert abs(exact[0] + exact[5] - len(x["survivors"])) < 1e-3 * len(x["survivors"]), exact
assert [a["arm"] for a in x["arms"]] == ["model", "popular"], x
assert [{k: v for k, v in a.items() if k != "arm"} for a in x["arms"]] == \
    estimate_arms(x["sums"], x["sigma"], summary["release_gate"]["z"]), x
for a, at in zip(x["arms"], (0, 5)):
    m = a["ndcg_at_10"]
    print(f"  experiment arm {a['arm']}: {exact[at]:.0f} devices, NDCG@10 of their rows {exact[at + 1] / max(exact[at], 1):.4f}, "
          f"estimate {m['estimate']:.4f} [{m['low']:.4f}, {m['high']:.4f}] (sigma {x['sigma']:.3f})")
page = (out / "report.html").read_text()
assert "Release gate" in page and "Experiment home-row.v1" in page and page.count("<tr>") >= 2 * rounds + 4, page
PY
echo "federated: passed"

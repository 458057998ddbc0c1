#!/usr/bin/env bash
# MovieLens-100K, federated: one simulated device per user (943 encrypted
# stores), trained by `hearth simulate --movielens` from the built-in model,
# without noise and with the coordinator's Gaussian noise, beside the same
# model trained centrally (models/movielens/run.sh).
#
#   models/movielens/federated.sh                  run, print the tables
#   models/movielens/federated.sh --update-docs    also rewrite the block between
#                                                  <!-- federated-movielens:begin --> and
#                                                  <!-- federated-movielens:end --> in docs/federated.md
#                                                  and the chart models/movielens/federated-ndcg.png
#
# `hearth simulate` processes run side by side, one thread each, on the
# same fleet, seed and samples: the long run without noise (ROUNDS), the
# noise sweep (one run of SWEEP_ROUNDS per multiplier in NOISE, each from the
# built-in model, at C = SWEEP_CLIP), and a check started from the central
# model. `hearth chart` then draws them. Settings (environment; the defaults
# are the run in docs/federated.md):
#   ROUNDS=400 CLIENTS=100 LR=0.3 NEGATIVES=32 EPOCHS=1 CLIP=10
#   SERVER_OPT=adam SERVER_LR=0.1 SERVER_LR_FINAL=0.01 (the server rate falls
#   linearly over the rounds of each run) EVAL_EVERY=25 SEED=42
#   SWEEP_ROUNDS=60 NOISE=0,0.05,0.3,1 SWEEP_CLIP=0.1 SWEEP_EVAL_EVERY=20
#   CHECK_ROUNDS=1 (the same training started from the central model, whose
#   round 0 must reproduce the central row)
#
# Needs run.sh's outputs (the data in ~/.cache/hearth/data/ml-100k and the
# central numbers in $HEARTH_MOVIELENS_OUT/results.json) and runs run.sh when
# they are absent. Writes, outside the repository:
#   $HEARTH_MOVIELENS_OUT/federated/{no-noise,noise,from-central}.json   every number of every round
#   $HEARTH_MOVIELENS_OUT/federated/federated-ndcg.png
#   ~/.cache/hearth/logs/federated-movielens-{no-noise,noise,from-central}.log
# Runs under `nice -n 10`: the machine's two cores are shared. About 21
# minutes with the defaults on this 2-core machine (with other work on it).
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
movielens_options "$@"

ROUNDS="${ROUNDS:-400}" CLIENTS="${CLIENTS:-100}" LR="${LR:-0.3}" NEGATIVES="${NEGATIVES:-32}" EPOCHS="${EPOCHS:-1}"
CLIP="${CLIP:-10}" SERVER_OPT="${SERVER_OPT:-adam}" SERVER_LR="${SERVER_LR:-0.1}" SERVER_LR_FINAL="${SERVER_LR_FINAL:-0.01}"
EVAL_EVERY="${EVAL_EVERY:-25}" SEED="${SEED:-42}"
SWEEP_ROUNDS="${SWEEP_ROUNDS:-60}" NOISE="${NOISE:-0,0.05,0.3,1}" SWEEP_CLIP="${SWEEP_CLIP:-0.1}"
SWEEP_EVAL_EVERY="${SWEEP_EVAL_EVERY:-20}" CHECK_ROUNDS="${CHECK_ROUNDS:-1}"

if [ ! -f "$data/ml-100k.inter" ] || [ ! -f "$out/results.json" ]; then
  echo "federated.sh: no MovieLens data or central results yet; running run.sh first" >&2
  "$here/run.sh"
fi
central="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); m=(r.get("device") or {}).get("metrics") or r["hearth"]["test"]; print(m["ndcg_at_10"])' "$out/results.json")"

movielens_hearth

mkdir -p "$out/federated" "$logs"
common=(--movielens "$data" --seed "$SEED" --clients-per-round "$CLIENTS" --lr "$LR" --negatives "$NEGATIVES"
  --local-epochs "$EPOCHS" --server-opt "$SERVER_OPT" --server-lr "$SERVER_LR" --server-lr-final "$SERVER_LR_FINAL"
  --threads 1)
start=$(date +%s)
echo "federated.sh: hearth simulate ${common[*]} --rounds $ROUNDS / $SWEEP_ROUNDS (logs in $logs)" >&2
nice -n 10 "$hearth" simulate "${common[@]}" --clip "$CLIP" --rounds "$ROUNDS" --noise-multiplier 0 \
  --eval-every "$EVAL_EVERY" --json "$out/federated/no-noise.json" >"$logs/federated-movielens-no-noise.log" 2>&1 &
main=$!
nice -n 10 "$hearth" simulate "${common[@]}" --clip "$SWEEP_CLIP" --rounds "$SWEEP_ROUNDS" --noise-multiplier "$NOISE" \
  --eval-every "$SWEEP_EVAL_EVERY" --json "$out/federated/noise.json" >"$logs/federated-movielens-noise.log" 2>&1 &
sweep=$!
wait "$sweep" || { tail -n 20 "$logs/federated-movielens-noise.log" >&2; exit 1; }
# A check: the same training started from the central model (run.sh's
# package, re-signed by the coordinator), whose round 0 must equal the
# central row.
nice -n 10 "$hearth" simulate "${common[@]}" --clip "$CLIP" --rounds "$CHECK_ROUNDS" --eval-every 1 \
  --initial-model "$out/ranker-movielens" --json "$out/federated/from-central.json" \
  >"$logs/federated-movielens-from-central.log" 2>&1
wait "$main" || { tail -n 20 "$logs/federated-movielens-no-noise.log" >&2; exit 1; }
cat "$logs"/federated-movielens-{no-noise,noise,from-central}.log
"$hearth" chart --json "$out/federated/no-noise.json" --json "$out/federated/noise.json" \
  --reference "central (same model, Adam)=$central" --out "$out/federated/federated-ndcg.png"
echo "federated.sh: done in $(($(date +%s) - start))s" >&2

if [ "$update" = 1 ]; then
  cp "$out/federated/federated-ndcg.png" "$here/federated-ndcg.png"
  python3 "$here/federated_table.py" "$out/federated/no-noise.json" "$out/federated/noise.json" "$out/results.json" \
    --from-central "$out/federated/from-central.json" \
    --command "models/movielens/federated.sh --update-docs" --page "$repo/docs/federated.md"
fi

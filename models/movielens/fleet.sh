#!/usr/bin/env bash
# MovieLens-100K at fleet scale (issue 18): NDCG@10 against epsilon for
# simulated fleets of N devices with cohorts of K, the way McMahan et al.
# (ICLR 2018) and Apple's pfl-research estimate it: the rounds train on the
# 943 real devices (CLIENTS drawn a round), but the coordinator's noise on
# the mean is z*C/K and the accountant's sampling rate K/N, at delta 1/N^1.1
# (`hearth simulate --population N --cohort K`, docs/simulate.md). For each
# fleet, z is chosen (match_epsilon.py --for-epsilon) so that ROUNDS rounds
# spend each epsilon of EPSILONS exactly; a run without noise is the
# reference.
#
#   models/movielens/fleet.sh                 run, print the table
#   models/movielens/fleet.sh --update-docs   also rewrite the block between
#                                             <!-- fleet-movielens:begin --> and
#                                             <!-- fleet-movielens:end --> in docs/federated.md
#
# Settings (environment): FLEETS="943:100 100000:1000 1000000:10000"
# EPSILONS=1,2,4,8 ROUNDS=60 CLIENTS=100 LR=0.3 NEGATIVES=32 EPOCHS=1
# CLIP=0.1 SERVER_OPT=adam SERVER_LR=0.1 SERVER_LR_FINAL=0.01 EVAL_EVERY=20
# SEED=42 EXTRA="" (more `hearth simulate` options, e.g. "--adaptive-clip
# 0.5"). One `hearth simulate` process per fleet, two at a time, one thread
# each; each fleet is 1 + |EPSILONS| runs of ROUNDS rounds (about 2 hours
# a fleet at the defaults on this 2-core machine). Writes
# $HEARTH_MOVIELENS_OUT/fleet/N-K.json and ~/.cache/hearth/logs/fleet-N-K.log.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
movielens_options "$@"
out="$out/fleet"
FLEETS="${FLEETS:-943:100 100000:1000 1000000:10000}" EPSILONS="${EPSILONS:-1,2,4,8}"
ROUNDS="${ROUNDS:-60}" CLIENTS="${CLIENTS:-100}" LR="${LR:-0.3}" NEGATIVES="${NEGATIVES:-32}" EPOCHS="${EPOCHS:-1}"
CLIP="${CLIP:-0.1}" SERVER_OPT="${SERVER_OPT:-adam}" SERVER_LR="${SERVER_LR:-0.1}" SERVER_LR_FINAL="${SERVER_LR_FINAL:-0.01}"
EVAL_EVERY="${EVAL_EVERY:-20}" SEED="${SEED:-42}" EXTRA="${EXTRA:-}"

if [ ! -f "$data/ml-100k.inter" ]; then
  echo "fleet.sh: no MovieLens data yet; running run.sh first" >&2
  "$here/run.sh"
fi
movielens_hearth
mkdir -p "$out" "$logs"
common=(--movielens "$data" --seed "$SEED" --clients-per-round "$CLIENTS" --lr "$LR" --negatives "$NEGATIVES"
  --local-epochs "$EPOCHS" --server-opt "$SERVER_OPT" --server-lr "$SERVER_LR" --server-lr-final "$SERVER_LR_FINAL"
  --clip "$CLIP" --rounds "$ROUNDS" --eval-every "$EVAL_EVERY" --threads 1)
# shellcheck disable=SC2206
extra=($EXTRA)
start=$(date +%s)
records=()
pids=()
for fleet in $FLEETS; do
  n="${fleet%%:*}" k="${fleet##*:}"
  read -r rate delta < <(python3 -c 'import sys; n, k = int(sys.argv[1]), int(sys.argv[2]); print(k / n, 1 / n ** 1.1)' "$n" "$k")
  zs="$(python3 "$here/match_epsilon.py" --for-epsilon "$EPSILONS" --q "$rate" --rounds "$ROUNDS" --delta "$delta")"
  echo "fleet.sh: N = $n, K = $k: z = 0,$zs (logs in $logs)" >&2
  nice -n 10 "$hearth" simulate "${common[@]}" "${extra[@]}" --population "$n" --cohort "$k" \
    --noise-multiplier "0,$zs" --json "$out/$n-$k.json" >"$logs/fleet-$n-$k.log" 2>&1 &
  pids+=($!)
  records+=("$out/$n-$k.json")
  # Two at a time.
  if [ "${#pids[@]}" -ge 2 ]; then
    wait "${pids[0]}" || { echo "fleet.sh: a run failed (logs in $logs)" >&2; exit 1; }
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid" || { echo "fleet.sh: a run failed (logs in $logs)" >&2; exit 1; }
done
echo "fleet.sh: done in $(($(date +%s) - start))s" >&2
page=()
[ "$update" = 1 ] && page=(--page "$repo/docs/federated.md")
python3 "$here/fleet_table.py" "${records[@]}" --epsilons "$EPSILONS" --command "models/movielens/fleet.sh --update-docs" "${page[@]}"

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
#                                             <!-- fleet-movielens:end --> in docs/federated.md,
#                                             and draw models/movielens/fleet-ndcg.svg
#
# MODE=distributed runs the same fleets with the devices' own noise
# (`--noise-mode distributed`, docs/simulate.md): each round stands for
# K / COIN devices at BITS bits, every one adding its noise share, whose
# coins keep about K; the accountant amplifies by COIN only (K / N when
# COIN is empty, every device of the fleet in every round's setup), and z
# is the one that spends what the central z spends (match_epsilon.py
# --central). Its records and logs end in -distributed, and its block is
# <!-- fleet-distributed-movielens:... -->.
#
# Settings (environment): FLEETS="943:100 100000:1000 1000000:10000"
# EPSILONS=1,2,4,8 ROUNDS=200 CLIENTS=100 LR=0.3 NEGATIVES=32 EPOCHS=1
# CLIP=0.1 SERVER_OPT=adam SERVER_LR=0.1 SERVER_LR_FINAL=0.01 EVAL_EVERY=50
# SEED=42 MODE=central COIN= BITS=32 HONEST=2/3 (distributed: the honest
# fraction the devices size their shares for) NOISELESS=1 (0: no run
# without noise, and no table, which needs it as the reference; for
# modes.sh) EXTRA="" (more `hearth simulate` options, e.g.
# "--adaptive-clip 0.5") PARTS=2 JOBS=2 BLOCK= (another block of
# docs/federated.md, and its chart models/movielens/BLOCK.svg, for a recipe
# beside the default one) COMMAND_ENV= (the settings the block's
# "Reproduce" line names). Each fleet is 1 + |EPSILONS| runs of ROUNDS
# rounds, dealt over PARTS `hearth simulate` processes, JOBS at a time, one
# thread each (about 4.5 s a round on this 2-core machine: 75 min a fleet
# of 200 rounds on both cores). Writes
# $HEARTH_MOVIELENS_OUT/fleet/N-K[-distributed][.partP].json and
# ~/.cache/hearth/logs/fleet-N-K[-distributed][.partP].log.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
movielens_options "$@"
out="$out/fleet"
FLEETS="${FLEETS:-943:100 100000:1000 1000000:10000}" EPSILONS="${EPSILONS:-1,2,4,8}"
ROUNDS="${ROUNDS:-200}" CLIENTS="${CLIENTS:-100}" LR="${LR:-0.3}" NEGATIVES="${NEGATIVES:-32}" EPOCHS="${EPOCHS:-1}"
CLIP="${CLIP:-0.1}" SERVER_OPT="${SERVER_OPT:-adam}" SERVER_LR="${SERVER_LR:-0.1}" SERVER_LR_FINAL="${SERVER_LR_FINAL:-0.01}"
EVAL_EVERY="${EVAL_EVERY:-50}" SEED="${SEED:-42}" EXTRA="${EXTRA:-}"
MODE="${MODE:-central}" COIN="${COIN:-}" BITS="${BITS:-32}" HONEST="${HONEST:-0.6666666666666666}" NOISELESS="${NOISELESS:-1}" PARTS="${PARTS:-2}" JOBS="${JOBS:-2}"
case "$MODE" in
  central) suffix="" block="fleet-movielens" ;;
  distributed) suffix="-distributed" block="fleet-distributed-movielens" ;;
  *) echo "fleet.sh: MODE must be central or distributed" >&2; exit 2 ;;
esac
block="${BLOCK:-$block}"

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
  mode=()
  if [ "$MODE" = distributed ]; then
    coin="${COIN:-$rate}"
    setup="$(python3 -c 'import math, sys; print(math.ceil(int(sys.argv[1]) / float(sys.argv[2])))' "$k" "$coin")"
    zs="$(python3 "$here/match_epsilon.py" --central "$zs" --q "$rate" --rounds "$ROUNDS" --delta "$delta" \
      --cohort "$setup" --bits "$BITS" --clip "$CLIP" --p "$coin" --honest-fraction "$HONEST")"
    mode=(--noise-mode distributed --secagg-bits "$BITS" --device-sampling-rate "$coin" --honest-fraction "$HONEST")
  fi
  echo "fleet.sh: N = $n, K = $k ($MODE): z = $([ "$NOISELESS" = 1 ] && echo 0,)$zs in $PARTS processes (logs in $logs)" >&2
  # The fleet's runs (z = 0 first, unless NOISELESS=0), dealt round-robin
  # over PARTS processes. Each run starts from the built-in model and draws
  # the same devices each round; the devices' local randomness (negatives,
  # order) also follows the run's place in its process's list, so a split
  # fleet's runs are like one process's in distribution, not bit for bit.
  runs="$zs"
  [ "$NOISELESS" = 1 ] && runs="0,$zs"
  IFS=, read -r -a all <<<"$runs"
  for ((part = 0; part < PARTS && part < ${#all[@]}; part++)); do
    list=""
    for ((i = part; i < ${#all[@]}; i += PARTS)); do list="${list:+$list,}${all[$i]}"; done
    name="$n-$k$suffix"
    [ "$PARTS" -gt 1 ] && name="$name.part$((part + 1))"
    nice -n 10 "$hearth" simulate "${common[@]}" "${mode[@]}" "${extra[@]}" --population "$n" --cohort "$k" \
      --noise-multiplier "$list" --json "$out/$name.json" >"$logs/fleet-$name.log" 2>&1 &
    pids+=($!)
    records+=("$out/$name.json")
    # JOBS at a time.
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
      wait "${pids[0]}" || { echo "fleet.sh: a run failed (logs in $logs)" >&2; exit 1; }
      pids=("${pids[@]:1}")
    fi
  done
done
for pid in "${pids[@]}"; do
  wait "$pid" || { echo "fleet.sh: a run failed (logs in $logs)" >&2; exit 1; }
done
echo "fleet.sh: done in $(($(date +%s) - start))s" >&2
# Without a run without noise there is no reference for the table.
[ "$NOISELESS" = 1 ] || exit 0
page=()
chart="$here/fleet-ndcg$suffix.svg"
[ -n "${BLOCK:-}" ] && chart="$here/$BLOCK.svg"
[ "$update" = 1 ] && page=(--page "$repo/docs/federated.md" --chart "$chart")
command="models/movielens/fleet.sh --update-docs"
[ "$MODE" = distributed ] && command="MODE=distributed $command"
[ -n "${COMMAND_ENV:-}" ] && command="$COMMAND_ENV $command"
python3 "$here/fleet_table.py" "${records[@]}" --epsilons "$EPSILONS" --block "$block" --command "$command" "${page[@]}"

#!/usr/bin/env bash
# MovieLens-100K: the devices' noise (distributed mode, issue 17) against
# the coordinator's (central mode) at the same noise on the mean, so that
# what differs is only what distributed mode does to an update: quantizing
# it to integers modulo 2^20 with conditional rounding and adding an exact
# discrete Gaussian share on each device instead of a float Gaussian on
# the mean.
#
#   models/movielens/distributed.sh                 run, print the table
#   models/movielens/distributed.sh --update-docs   also rewrite the block between
#                                                   <!-- distributed-movielens:begin --> and
#                                                   <!-- distributed-movielens:end --> in docs/federated.md
#   models/movielens/distributed.sh --same-epsilon [--update-docs]
#       at the same epsilon instead: the distributed runs take the whole
#       fleet as each round's cohort, each device keeping its update by its
#       own coin at rate CLIENTS/943 (what the central runs' sampling
#       gives), at the z that spends what central mode's z spends
#       (match_epsilon.py); block distributed-epsilon. NOISE=0,1 by
#       default, as every device of the fleet draws a share each round
#       (about an hour on this 2-core machine).
#
# Two `hearth simulate` processes side by side, one thread each, on the
# same fleet, seed and samples as federated.sh's noise sweep (its SWEEP_*
# settings): central at each z of NOISE, distributed at z * sqrt(67/100),
# since with 100 devices a round each device sizes its share for the 67
# (2/3) it counts on, so all 100 shares carry std z C / n on the mean, as
# central mode's noise does. Settings (environment): ROUNDS=60 CLIENTS=100
# LR=0.3 NEGATIVES=32 EPOCHS=1 CLIP=0.1 SERVER_OPT=adam SERVER_LR=0.1
# SERVER_LR_FINAL=0.01 EVAL_EVERY=20 SEED=42 NOISE=0,0.3,1 BITS=20.
# Writes $HEARTH_MOVIELENS_OUT/distributed/{central,distributed}.json and
# ~/.cache/hearth/logs/distributed-movielens-{central,distributed}.log. About
# 46 minutes on this 2-core machine with a load test beside it.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
same_epsilon=0
options=()
for a in "$@"; do
  if [ "$a" = --same-epsilon ]; then same_epsilon=1; else options+=("$a"); fi
done
movielens_options "${options[@]}"
out="$out/distributed"
ROUNDS="${ROUNDS:-60}" CLIENTS="${CLIENTS:-100}" LR="${LR:-0.3}" NEGATIVES="${NEGATIVES:-32}" EPOCHS="${EPOCHS:-1}"
CLIP="${CLIP:-0.1}" SERVER_OPT="${SERVER_OPT:-adam}" SERVER_LR="${SERVER_LR:-0.1}" SERVER_LR_FINAL="${SERVER_LR_FINAL:-0.01}"
EVAL_EVERY="${EVAL_EVERY:-20}" SEED="${SEED:-42}" BITS="${BITS:-20}"
if [ "$same_epsilon" = 1 ]; then NOISE="${NOISE:-0,1}"; else NOISE="${NOISE:-0,0.3,1}"; fi

if [ ! -f "$data/ml-100k.inter" ]; then
  echo "distributed.sh: no MovieLens data yet; running run.sh first" >&2
  "$here/run.sh"
fi
movielens_hearth
# The honest count a device of a 100-device round sizes its share for, and
# the distributed z that puts the same noise on the mean.
matched="$(python3 -c '
import math, sys
n, zs = int(sys.argv[1]), sys.argv[2].split(",")
h = math.ceil(2 / 3 * n)
print(",".join(repr(float(z) * math.sqrt(h / n)) for z in zs))' "$CLIENTS" "$NOISE")"

if [ "$same_epsilon" = 1 ]; then
  # The central runs' sampling rate, which the devices' coins take over,
  # and the delta both account at (simulate's default, 1/N^1.1).
  read -r devices rate delta < <(python3 -c '
n, k = 943, int(__import__("sys").argv[1])
print(n, k / n, 1 / n ** 1.1)' "$CLIENTS")
  matched="$(python3 "$here/match_epsilon.py" --central "$NOISE" --q "$rate" --rounds "$ROUNDS" --delta "$delta" \
    --cohort "$devices" --clip "$CLIP" --bits "$BITS" --p "$rate")"
  coin=(--sample-rate 1 --device-sampling-rate "$rate")
  name=coin
else
  coin=(--clients-per-round "$CLIENTS")
  name=distributed
fi

mkdir -p "$out" "$logs"
common=(--movielens "$data" --seed "$SEED" --lr "$LR" --negatives "$NEGATIVES"
  --local-epochs "$EPOCHS" --server-opt "$SERVER_OPT" --server-lr "$SERVER_LR" --server-lr-final "$SERVER_LR_FINAL"
  --clip "$CLIP" --rounds "$ROUNDS" --eval-every "$EVAL_EVERY")
start=$(date +%s)
echo "distributed.sh: central z = $NOISE, distributed z = $matched (logs in $logs)" >&2
# At the same epsilon, the central runs of an earlier run of this script
# serve when they hold every z of NOISE at these settings (the same seed and
# samples give the same runs).
central_done=0
if [ "$same_epsilon" = 1 ] && [ -f "$out/central.json" ]; then
  central_done="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
zs = {run["noise_multiplier"] for run in r["runs"] if len(run["rounds"]) == int(sys.argv[4])}
want = {float(z) for z in sys.argv[2].split(",")}
print(int(want <= zs and r["seed"] == int(sys.argv[3]) and r["sampling"] == f"Fixed({sys.argv[5]})"
          and r["clip_norm"] == float(sys.argv[6])))' "$out/central.json" "$NOISE" "$SEED" "$ROUNDS" "$CLIENTS" "$CLIP")"
fi
if [ "$central_done" = 1 ]; then
  echo "distributed.sh: the central runs of $out/central.json serve" >&2
  central=""
else
  nice -n 10 "$hearth" simulate "${common[@]}" --threads 1 --clients-per-round "$CLIENTS" --noise-multiplier "$NOISE" \
    --json "$out/central.json" >"$logs/distributed-movielens-central.log" 2>&1 &
  central=$!
fi
# With a coin the whole fleet draws its shares each round: a second thread
# for them (the central run is done long before).
threads=1
[ "$same_epsilon" = 1 ] && threads=2
nice -n 10 "$hearth" simulate "${common[@]}" "${coin[@]}" --threads "$threads" --noise-multiplier "$matched" \
  --noise-mode distributed --secagg-bits "$BITS" --json "$out/$name.json" \
  >"$logs/distributed-movielens-$name.log" 2>&1 &
distributed=$!
[ -z "$central" ] || wait "$central" || { tail -n 20 "$logs/distributed-movielens-central.log" >&2; exit 1; }
wait "$distributed" || { tail -n 20 "$logs/distributed-movielens-$name.log" >&2; exit 1; }
echo "distributed.sh: done in $(($(date +%s) - start))s" >&2
page=()
[ "$update" = 1 ] && page=(--page "$repo/docs/federated.md")
if [ "$same_epsilon" = 1 ]; then
  python3 "$here/distributed_table.py" "$out/central.json" "$out/$name.json" --same-epsilon \
    --command "models/movielens/distributed.sh --same-epsilon --update-docs" "${page[@]}"
else
  python3 "$here/distributed_table.py" "$out/central.json" "$out/$name.json" \
    --command "models/movielens/distributed.sh --update-docs" "${page[@]}"
fi

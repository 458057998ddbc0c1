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
movielens_options "$@"
out="$out/distributed"
ROUNDS="${ROUNDS:-60}" CLIENTS="${CLIENTS:-100}" LR="${LR:-0.3}" NEGATIVES="${NEGATIVES:-32}" EPOCHS="${EPOCHS:-1}"
CLIP="${CLIP:-0.1}" SERVER_OPT="${SERVER_OPT:-adam}" SERVER_LR="${SERVER_LR:-0.1}" SERVER_LR_FINAL="${SERVER_LR_FINAL:-0.01}"
EVAL_EVERY="${EVAL_EVERY:-20}" SEED="${SEED:-42}" NOISE="${NOISE:-0,0.3,1}" BITS="${BITS:-20}"

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

mkdir -p "$out" "$logs"
common=(--movielens "$data" --seed "$SEED" --clients-per-round "$CLIENTS" --lr "$LR" --negatives "$NEGATIVES"
  --local-epochs "$EPOCHS" --server-opt "$SERVER_OPT" --server-lr "$SERVER_LR" --server-lr-final "$SERVER_LR_FINAL"
  --clip "$CLIP" --rounds "$ROUNDS" --eval-every "$EVAL_EVERY" --threads 1)
start=$(date +%s)
echo "distributed.sh: central z = $NOISE, distributed z = $matched (logs in $logs)" >&2
nice -n 10 "$hearth" simulate "${common[@]}" --noise-multiplier "$NOISE" --json "$out/central.json" \
  >"$logs/distributed-movielens-central.log" 2>&1 &
central=$!
nice -n 10 "$hearth" simulate "${common[@]}" --noise-multiplier "$matched" --noise-mode distributed \
  --secagg-bits "$BITS" --json "$out/distributed.json" >"$logs/distributed-movielens-distributed.log" 2>&1 &
distributed=$!
wait "$central" || { tail -n 20 "$logs/distributed-movielens-central.log" >&2; exit 1; }
wait "$distributed" || { tail -n 20 "$logs/distributed-movielens-distributed.log" >&2; exit 1; }
echo "distributed.sh: done in $(($(date +%s) - start))s" >&2
page=()
[ "$update" = 1 ] && page=(--page "$repo/docs/federated.md")
python3 "$here/distributed_table.py" "$out/central.json" "$out/distributed.json" \
  --command "models/movielens/distributed.sh --update-docs" "${page[@]}"

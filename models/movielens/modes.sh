#!/usr/bin/env bash
# Issue 17's quality check at fleet scale: distributed mode against central
# mode at the same epsilon, over several seeds. A seed's two runs are
# paired: they draw the same devices each round, train them with the same
# local randomness and, with PAIRED=1 (the default), add the same noise
# draws, each at its own mode's size (`hearth simulate --paired-noise`), so
# what differs is who adds the noise, how much each mode's accounting asks
# for the same epsilon, and the devices' quantization (fleet.sh's settings,
# its runs without a noiseless reference). Unpaired, where the noise fell
# moves a run's NDCG@10 by itself (one unpaired pair ended 12% apart), and
# a 2% comparison would need dozens of seeds.
#
#   models/movielens/modes.sh                run, print the table
#   models/movielens/modes.sh --update-docs  also rewrite the block between
#                                            <!-- modes-movielens:begin --> and
#                                            <!-- modes-movielens:end --> in docs/federated.md
#
# Settings (environment): FLEET=1000000:10000 EPSILONS=8 SEEDS="42 43 44"
# PAIRED=1 HONEST=1 (the fraction of the cohort the devices count on: at 1 the two
# modes differ by the accounting and the discrete noise alone; at 2/3 the
# devices' shares carry sqrt(3/2) times more) and fleet.sh's others
# (ROUNDS, CLIP, COIN, BITS, EXTRA, ...; COMMAND_ENV is put before the
# Reproduce line's command, as fleet.sh's). Per seed, the central and the
# distributed fleet side by side, one thread each: 2 x |EPSILONS| runs of
# ROUNDS rounds (about 15 min a run of 200 rounds here). A seed whose two
# records are already there and complete, made with the same settings (its
# folder's `settings` file), is not run again, so seeds can be added a few
# at a time; one made with other settings stops the script. Writes
# $HEARTH_MOVIELENS_OUT/modes/[paired/]seed-S/fleet/N-K[-distributed].json and
# ~/.cache/hearth/logs/modes-seed-S-{central,distributed}.log.
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
movielens_options "$@"
FLEET="${FLEET:-1000000:10000}" EPSILONS="${EPSILONS:-8}" SEEDS="${SEEDS:-42 43 44}" HONEST="${HONEST:-1}"
PAIRED="${PAIRED:-1}" ROUNDS="${ROUNDS:-200}"
extra="${EXTRA:-}" under=""
[ "$PAIRED" = 1 ] && { extra="$extra --paired-noise"; under="paired/"; }
# What a seed's records must have been made with to count as done.
settings="fleet=$FLEET epsilons=$EPSILONS rounds=$ROUNDS clip=${CLIP:-} honest=$HONEST coin=${COIN:-} bits=${BITS:-}"
read -r -a words <<<"$extra"
settings="$settings extra=${words[*]}"
movielens_hearth
mkdir -p "$logs"
start=$(date +%s)
dirs=()
for seed in $SEEDS; do
  dir="$out/modes/${under}seed-$seed"
  dirs+=("$dir")
  if python3 - "$dir/fleet" "${FLEET/:/-}" "$ROUNDS" "$EPSILONS" <<'PY'
import json, sys
from pathlib import Path
folder, name, rounds, epsilons = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
try:
    records = [json.loads((folder / f"{name}{s}.json").read_text()) for s in ("", "-distributed")]
except (OSError, ValueError):
    sys.exit(1)
done = all(len(r["runs"]) == len(epsilons) and all(len(x["rounds"]) == rounds for x in r["runs"]) for r in records)
sys.exit(0 if done else 1)
PY
  then
    if [ "$(cat "$dir/settings" 2>/dev/null)" != "$settings" ]; then
      echo "modes.sh: seed $seed's records in $dir were made with other settings than" >&2
      echo "  $settings; move them away or set HEARTH_MOVIELENS_OUT" >&2
      exit 1
    fi
    echo "modes.sh: seed $seed already done ($dir)" >&2
    continue
  fi
  mkdir -p "$dir"
  printf '%s\n' "$settings" >"$dir/settings"
  pids=()
  for mode in central distributed; do
    HEARTH_BIN="$hearth" HEARTH_MOVIELENS_OUT="$dir" MODE="$mode" SEED="$seed" HONEST="$HONEST" FLEETS="$FLEET" \
      EPSILONS="$EPSILONS" NOISELESS=0 PARTS=1 JOBS=1 ROUNDS="$ROUNDS" EXTRA="$extra" \
      bash "$here/fleet.sh" >"$logs/modes-seed-$seed-$mode.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "modes.sh: a run of seed $seed failed (logs in $logs/modes-seed-$seed-*.log)" >&2; exit 1; }
  done
  echo "modes.sh: seed $seed done at $(($(date +%s) - start))s" >&2
done
page=()
[ "$update" = 1 ] && page=(--page "$repo/docs/federated.md")
command="models/movielens/modes.sh --update-docs"
[ "$HONEST" != 1 ] && command="HONEST=$HONEST $command"
[ "$PAIRED" != 1 ] && command="PAIRED=$PAIRED $command"
[ -n "${COMMAND_ENV:-}" ] && command="$COMMAND_ENV $command"
python3 "$here/modes_table.py" "${dirs[@]}" --fleet "$FLEET" --command "$command" "${page[@]}"

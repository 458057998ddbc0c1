#!/usr/bin/env bash
# Removes what earlier runs from other checkouts left in the shared target
# directories: the workspace's own build outputs and incremental state.
#
#   tests/toolchains/prune-target.sh [MINUTES]
#
# Cargo puts a crate's path into the hash of its outputs, so every clean
# clone (a CI run) builds the workspace's crates, tests and fuzz targets
# under new names next to the last clone's, and a few runs fill the disk
# (a cross lane once failed on "No space left on device"). Dependencies are
# built once and shared, and are never touched here: only files named for
# one of the workspace's (or fuzz/'s) own targets, in a deps folder, and
# incremental state, untouched for MINUTES (180 by default; a run takes
# under 90). A build whose outputs were removed rebuilds only them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
minutes="${1:-180}"
dirs=("${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}" "$HOME/.cache/hearth/fuzz-target")

# The workspace's target names, as cargo spells them in deps/ (dashes to
# underscores), from the workspace and the fuzz crate.
names="$(
    for manifest in "$repo/Cargo.toml" "$repo/fuzz/Cargo.toml"; do
        cargo metadata --no-deps --format-version 1 --manifest-path "$manifest" --offline 2>/dev/null || true
    done | python3 -c '
import json, sys
names = set()
for line in sys.stdin:
    line = line.strip()
    if line:
        for package in json.loads(line)["packages"]:
            names.update(t["name"].replace("-", "_") for t in package["targets"])
print("\n".join(sorted(names)))
'
)"
[ -n "$names" ] || { echo "prune-target: no workspace targets found; nothing removed"; exit 0; }

# One find expression for every name: lib<name>-<hash>.rlib/.rmeta/.so/.a/.d,
# <name>-<hash> and its .d.
patterns=()
while IFS= read -r name; do
    patterns+=(${patterns[@]:+-o} -name "$name-*" -o -name "lib$name-*")
done <<<"$names"

before=$(df -Pk "${dirs[0]}" 2>/dev/null | awk 'NR == 2 {print $4}')
for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || continue
    while IFS= read -r deps; do
        find "$deps" -maxdepth 1 -type f \( "${patterns[@]}" \) -mmin +"$minutes" -delete
    done < <(find "$dir" -maxdepth 4 -type d -name deps)
    while IFS= read -r inc; do
        find "$inc" -mindepth 1 -maxdepth 1 -type d -mmin +"$minutes" -exec rm -rf {} +
    done < <(find "$dir" -maxdepth 4 -type d -name incremental)
done
after=$(df -Pk "${dirs[0]}" 2>/dev/null | awk 'NR == 2 {print $4}')
echo "prune-target: $(((after - before) / 1024)) MB freed (outputs older than $minutes min of $(wc -l <<<"$names") workspace targets)"

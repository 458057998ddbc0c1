#!/usr/bin/env bash
# Rebuilds the model package into a temporary folder and compares every
# generated file byte for byte with the committed one.
#
#   models/check.sh            exit 0 when up to date, 1 when stale or a build check fails
#   models/check.sh --update   rebuild in place (then review and commit the result)
#
# The venv lives outside the repository: $HEARTH_MODELS_VENV, default
# ~/.cache/hearth/models-venv. It is created on first use and reinstalled
# whenever requirements.txt changes.
#
# build.py converts the ONNX graphs to NNEF with `hearth model nnef`: the
# hearth CLI is built first (cargo, the workspace's debug profile), unless
# $HEARTH_BIN names one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${HEARTH_MODELS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth/models-venv}"
req="$here/requirements.txt"

# shellcheck source=../tests/toolchains/lib.sh
. "$here/../tests/toolchains/lib.sh"
hearth_python_venv "$venv"
hearth_pip_requirements "$venv" "$req"

if [ -z "${HEARTH_BIN:-}" ]; then
  # The path cargo reports, wherever CARGO_TARGET_DIR points.
  HEARTH_BIN="$(cd "$here/.." && cargo build -q -p hearth-cli --bin hearth --message-format=json |
    "$venv/bin/python" -c 'import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable")][-1])')"
fi
export HEARTH_BIN

if [ "${1:-}" = "--update" ]; then
  exec "$venv/bin/python" "$here/build.py" --hearth "$HEARTH_BIN"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$here/README.md" "$tmp/README.md"
if ! "$venv/bin/python" "$here/build.py" --hearth "$HEARTH_BIN" --out "$tmp/ranker-v1" --readme "$tmp/README.md" >"$tmp/build.log" 2>&1; then
  cat "$tmp/build.log"
  echo "check.sh: FAILED: build.py failed (see above)" >&2
  exit 1
fi
cat "$tmp/build.log"

stale=()
for f in "$tmp"/ranker-v1/*; do
  name="$(basename "$f")"
  cmp -s "$f" "$here/ranker-v1/$name" || stale+=("models/ranker-v1/$name")
done
for f in "$here"/ranker-v1/*; do
  name="$(basename "$f")"
  # manifest.sig is written by the signing step, not by build.py.
  [ "$name" = manifest.sig ] || [ -e "$tmp/ranker-v1/$name" ] || stale+=("models/ranker-v1/$name (not made by build.py)")
done
cmp -s "$tmp/README.md" "$here/README.md" || stale+=("models/README.md (generated block)")

if [ "${#stale[@]}" -gt 0 ]; then
  echo "check.sh: FAILED: these files differ from what build.py makes now:" >&2
  printf '  %s\n' "${stale[@]}" >&2
  echo "Run models/check.sh --update, review, commit, and sign the new manifest.json." >&2
  exit 1
fi
echo "check.sh: models/ranker-v1 is up to date ($(ls "$tmp/ranker-v1" | wc -l) files byte-identical)"

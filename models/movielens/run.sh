#!/usr/bin/env bash
# MovieLens-100K evaluation: popularity, matrix factorization (implicit) and
# Hearth's ranker trained centrally, in numpy and through the on-device path.
#
#   models/movielens/run.sh                    print the table
#   models/movielens/run.sh --update-docs      also rewrite the block between
#                                              <!-- movielens:begin --> and <!-- movielens:end -->
#                                              in docs/ranking.md
#   models/movielens/run.sh --no-device        skip building and calling the hearth CLI
#
# Other options go to evaluate.py (see `evaluate.py --help`).
#
# Outside the repository (nothing here is ever written into it, but
# docs/ranking.md with --update-docs):
#   venv      $HEARTH_MOVIELENS_VENV, default ~/.cache/hearth/movielens-venv
#   data      ~/.cache/hearth/data/ml-100k (from the PyPI wheel recbole==1.2.1;
#             its licence forbids committing it)
#   output    $HEARTH_MOVIELENS_OUT, default ~/.cache/hearth/movielens-out
#             (trained model package, the input of `hearth evaluate`, results.json)
#   hearth    $HEARTH_BIN if set, else `cargo build --release -p hearth-cli`
#             ($CARGO_BUILD_JOBS, default 1 job; $CARGO_TARGET_DIR, default
#             ~/.cache/hearth/target as in tests/run.sh) and its release/hearth
set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
venv="${HEARTH_MOVIELENS_VENV:-$cache/movielens-venv}"
req="$here/requirements.txt"
start=$(date +%s)

# One thread for every numeric library: the machine's cores are shared.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# No __pycache__ in the repository (evaluate.py imports models/build.py).
export PYTHONDONTWRITEBYTECODE=1

# shellcheck source=../../tests/toolchains/lib.sh
. "$here/../../tests/toolchains/lib.sh"
hearth_python_venv "$venv"
hearth_pip_requirements "$venv" "$req" --only-binary=:all:
py="$venv/bin/python"

# The data: MovieLens-100K as shipped inside the recbole 1.2.1 wheel.
files=(ml-100k.inter ml-100k.item ml-100k.user)
sums=(
  4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff
  51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532
  4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972
)
data_ok() {
  local i
  for i in "${!files[@]}"; do
    [ -f "$data/${files[$i]}" ] || return 1
    [ "$(sha256sum "$data/${files[$i]}" | cut -d' ' -f1)" = "${sums[$i]}" ] || return 1
  done
}
if ! data_ok; then
  echo "run.sh: fetching MovieLens-100K (pip download recbole==1.2.1) into $data" >&2
  tmp="$(mktemp -d)"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps recbole==1.2.1 -d "$tmp"
  mkdir -p "$data"
  "$py" - "$tmp"/recbole-1.2.1-*.whl "$data" "${files[@]}" <<'EOF'
import sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with open(f"{dest}/{n}", "wb") as f:
            f.write(z.read(f"recbole/dataset_example/ml-100k/{n}"))
EOF
  rm -rf "$tmp"
  data_ok || { echo "run.sh: the fetched MovieLens files do not have the expected SHA-256" >&2; exit 2; }
fi

# The hearth CLI for the on-device row.
device=()
no_device=0
for a in "$@"; do [ "$a" = --no-device ] && no_device=1; done
if [ "$no_device" = 0 ]; then
  if [ -n "${HEARTH_BIN:-}" ]; then
    device=(--hearth "$HEARTH_BIN")
  elif command -v cargo >/dev/null; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
    echo "run.sh: cargo build --release -p hearth-cli (jobs: ${CARGO_BUILD_JOBS:-1}, target $CARGO_TARGET_DIR)" >&2
    b0=$(date +%s)
    mkdir -p "$out"
    if (cd "$repo" && CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release -q -p hearth-cli) \
      >"$out/cargo-build.log" 2>&1; then
      target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
        "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
      echo "run.sh: hearth CLI ready ($(($(date +%s) - b0))s)" >&2
      device=(--hearth "$target/release/hearth")
    else
      tail -n 5 "$out/cargo-build.log" >&2
      echo "run.sh: the hearth CLI did not build (whole log: $out/cargo-build.log); its row will be pending" >&2
      device=(--device-note "cargo build --release -p hearth-cli failed")
    fi
  else
    device=(--device-note "no cargo and no HEARTH_BIN")
  fi
fi

mkdir -p "$out"
"$py" "$here/evaluate.py" --data "$data" --out "$out" "${device[@]}" "$@"
echo "run.sh: done in $(($(date +%s) - start))s"

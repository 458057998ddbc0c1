# Sourced by run.sh, federated.sh and distributed.sh: where the data, the
# outputs and the logs are; for the last two, their one option and the
# hearth binary they run.
# shellcheck shell=bash

here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hearth"
data="$cache/data/ml-100k"
out="${HEARTH_MOVIELENS_OUT:-$cache/movielens-out}"
logs="$cache/logs"

# Sets update=1 for --update-docs; any other argument is an error.
movielens_options() {
  update=0
  local a
  for a in "$@"; do
    case "$a" in
      --update-docs) update=1 ;;
      *) echo "$(basename "${BASH_SOURCE[1]}"): unknown option $a" >&2; exit 2 ;;
    esac
  done
}

# Sets hearth to $HEARTH_BIN, or builds hearth-cli (the cli profile, one job
# unless CARGO_BUILD_JOBS says otherwise) into the shared target directory.
movielens_hearth() {
  if [ -n "${HEARTH_BIN:-}" ]; then
    hearth="$HEARTH_BIN"
    return
  fi
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
  echo "$(basename "${BASH_SOURCE[1]}"): cargo build --profile cli -p hearth-cli (jobs: ${CARGO_BUILD_JOBS:-1})" >&2
  (cd "$repo" && CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" nice -n 10 cargo build --profile cli -q -p hearth-cli)
  hearth="$CARGO_TARGET_DIR/cli/hearth"
}

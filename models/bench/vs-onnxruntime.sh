#!/usr/bin/env bash
# tract beside onnxruntime on the built-in model: one run, same inputs.
# Makes a venv with onnxruntime (outside the repo), then runs the bench binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${HEARTH_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth/bench-venv}"
# shellcheck source=../../tests/toolchains/lib.sh
. "$here/../../tests/toolchains/lib.sh"
hearth_python_venv "$venv"
hearth_pip_requirements "$venv" "$here/requirements.txt"
cd "$here/../.."
HEARTH_BENCH_PYTHON="$venv/bin/python" cargo bench -p hearth-core --bench inference_vs_onnxruntime

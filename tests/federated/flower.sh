# Flower on this machine, for tests/federated/run.sh and load.sh (sourced
# from the repository's root):
#
#   flower_venv             the venv with the pinned flwr and the
#                           hearth_secagg module (made once; the module
#                           rebuilt by cargo when its sources change); sets
#                           $venv and $py and puts the venv's bin on PATH
#   flower_workdir NAME     a temporary $work with $FLWR_HOME, a free $port
#                           and the flwr config pointing at it; removed on
#                           exit (kept in ~/.cache/hearth/logs/NAME-* on failure,
#                           or always when $flower_keep_logs is set)
#   flower_superlink_start  a SuperLink on 127.0.0.1:$port in its own process
#                           group ($superlink_pid; stopped, with the ServerApps
#                           it started, on exit)

FLWR_VERSION=1.42.0
# HEARTH_FLWR_VENV: another venv (a second run beside one using the default).
venv="${HEARTH_FLWR_VENV:-$HOME/.cache/hearth/flwr-venv}"

flower_venv() {
    if ! "$venv/bin/python" -c "import flwr, sys; sys.exit(flwr.__version__ != '$FLWR_VERSION')" 2>/dev/null; then
        echo "federated: making $venv (flwr $FLWR_VERSION)"
        # shellcheck source=../toolchains/lib.sh
        . tests/toolchains/lib.sh
        hearth_python_venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip >/dev/null
        # flwr pins a certifi newer than some registries carry: its other
        # requirements come from coordinator/requirements.txt, then flwr alone.
        "$venv/bin/pip" install -q -r coordinator/requirements.txt
        "$venv/bin/pip" install -q --no-deps "flwr==$FLWR_VERSION"
    fi
    py="$venv/bin/python"
    export PATH="$venv/bin:$PATH"
    # The coordinator's half of secure aggregation: Rust (secagg/, shared
    # with the devices) as a Python module, built by maturin into the venv,
    # in the shared target directory: quick when nothing changed.
    "$py" -c "import maturin" 2>/dev/null || "$venv/bin/pip" install -q "maturin==1.16.0"
    echo "federated: building the hearth_secagg module"
    "$venv/bin/pip" install -q --no-build-isolation ./coordinator/secagg-py
}

flower_workdir() {
    flower_name="$1"
    work="$(mktemp -d)"
    export FLWR_HOME="$work/flwr"
    mkdir -p "$FLWR_HOME"
    superlink_pid=""
    trap flower_cleanup EXIT
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    cat >"$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local"

[superlink.local]
address = "127.0.0.1:$port"
insecure = true
TOML
}

flower_cleanup() {
    status=$?
    if [ -n "$superlink_pid" ]; then
        # Its own process group: the ServerApp it spawned goes with it.
        kill -- "-$superlink_pid" 2>/dev/null || kill "$superlink_pid" 2>/dev/null || true
        wait "$superlink_pid" 2>/dev/null || true
    fi
    if [ $status -ne 0 ] || [ -n "${flower_keep_logs:-}" ]; then
        logs="$HOME/.cache/hearth/logs/$flower_name-$(date +%Y%m%d-%H%M%S)"
        mkdir -p "$logs" && cp -r "$work"/*.log "$work"/out* "$logs"/ 2>/dev/null || true
        if [ $status -ne 0 ]; then echo "$flower_name: FAILED; logs in $logs"; else echo "$flower_name: logs in $logs"; fi
    fi
    rm -rf "$work"
}

flower_superlink_start() {
    local start
    start=$(date +%s)
    setsid flower-superlink --insecure --host 127.0.0.1 --port "$port" --disable-runtime-dependency-installation \
        >"$work/superlink.log" 2>&1 &
    superlink_pid=$!
    for _ in $(seq 1 120); do
        "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.5)" 2>/dev/null && break
        kill -0 "$superlink_pid" 2>/dev/null || {
            cat "$work/superlink.log"
            exit 1
        }
        sleep 0.5
    done
    echo "$flower_name: SuperLink on 127.0.0.1:$port after $(($(date +%s) - start)) s"
}

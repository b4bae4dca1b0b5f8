#!/usr/bin/env bash
# Development Solr for CKAN: dev/solr.sh start|stop|status|restart
#
# Runs the in-memory Solr-compatible server in dev/solr_server in the
# background (pidfile and log under .dev/ at the repository root), on
# 127.0.0.1:${SOLR_PORT:-8983}, with the virtualenv's Python (.venv/bin/python,
# override with PYTHON=...). If CKAN_SOLR_URL is set, a real Solr is used
# instead and `start` does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${SOLR_PORT:-8983}"
HOST=127.0.0.1
STATE_DIR="$ROOT/.dev"
PIDFILE="$STATE_DIR/solr-$PORT.pid"
LOGFILE="$STATE_DIR/solr-$PORT.log"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
# The schema version announced to CKAN: 2.11 is accepted by CKAN 2.11 and 2.12,
# so one running server serves both (CKAN_VERSION=2.11.x make test).
SCHEMA_VERSION="${SOLR_SCHEMA_VERSION:-2.11}"
URL="http://$HOST:$PORT/solr"

listening() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

answering() {
    "$PYTHON" - "$URL/admin/info/system" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as resp:
    sys.exit(0 if resp.status == 200 else 1)
PY
}

our_pid() {
    # Print the pid from the pidfile if it is a live dev Solr process.
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "solr_server" || return 1
    echo "$pid"
}

start() {
    if [[ -n "${CKAN_SOLR_URL:-}" ]]; then
        echo "CKAN_SOLR_URL is set: using the real Solr at $CKAN_SOLR_URL (dev Solr not started)"
        return 0
    fi
    if listening; then
        echo "Solr already listening on $HOST:$PORT"
        return 0
    fi
    [[ -x "$PYTHON" ]] || { echo "No Python at $PYTHON (create the virtualenv first)" >&2; return 1; }
    mkdir -p "$STATE_DIR"
    rm -f "$PIDFILE"
    local detach=()
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    # exec: no shell stays behind; all output to the log, so a caller reading
    # this script's output through a pipe is not held open by the server.
    (cd "$ROOT" || exit 1
     exec nohup "${detach[@]}" "$PYTHON" -m dev.solr_server --host "$HOST" \
        --port "$PORT" --pidfile "$PIDFILE" --schema-version "$SCHEMA_VERSION") \
        >>"$LOGFILE" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        if answering; then
            echo "Dev Solr started on $URL (pid $(our_pid || echo '?'), log $LOGFILE)"
            return 0
        fi
        sleep 0.2
    done
    echo "Dev Solr did not answer on $URL; last log lines:" >&2
    tail -n 20 "$LOGFILE" >&2 || true
    return 1
}

stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        if listening; then
            echo "Port $PORT is in use by a process not started by dev/solr.sh; not stopping it" >&2
            return 1
        fi
        echo "Dev Solr is not running"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
    fi
    rm -f "$PIDFILE"
    echo "Dev Solr stopped (pid $pid)"
}

status() {
    if [[ -n "${CKAN_SOLR_URL:-}" ]]; then
        echo "CKAN_SOLR_URL is set: using the real Solr at $CKAN_SOLR_URL"
    fi
    if answering; then
        echo "Solr answering on $URL (dev pid: $(our_pid || echo 'not ours'))"
        return 0
    fi
    echo "Solr not running on $URL"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop && start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac

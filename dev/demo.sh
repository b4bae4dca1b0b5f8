#!/usr/bin/env bash
# The local demo: a CKAN with the harvest plugins on http://127.0.0.1:5000.
#   dev/demo.sh          set up (database, admin user), run the demo harvest,
#                        serve CKAN in the background
#   dev/demo.sh stop     stop the demo web server
# Called by `make demo` after services, Solr and the virtualenv are ready.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${DEMO_PORT:-5000}
STATE=.dev
INI=$STATE/demo.ini
PIDFILE=$STATE/demo.pid
LOG=$STATE/demo.log
CKAN=.venv/bin/ckan
SOLR_URL=${CKAN_SOLR_URL:-http://127.0.0.1:${SOLR_PORT:-8983}/solr/ckan_demo}

log() { printf '[demo] %s\n' "$*"; }

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")" && log "stopped the demo web server"
  else
    log "the demo web server is not running"
  fi
  rm -f "$PIDFILE"
  # The remote CKAN and the harvest consumers started by dev/demo_harvest.sh.
  if [ -x dev/demo_harvest.sh ]; then
    dev/demo_harvest.sh stop
  fi
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

mkdir -p "$STATE/storage"
sed -e "s#@SOLR_URL@#$SOLR_URL#" -e "s#@PORT@#$PORT#" \
    -e "s#@STORAGE@#$PWD/$STATE/storage#" dev/demo.ini.in > "$INI"

log "initialising the demo database"
$CKAN -c "$INI" db init >>"$LOG" 2>&1
$CKAN -c "$INI" db upgrade -p harvest >>"$LOG" 2>&1

if ! $CKAN -c "$INI" user show admin 2>/dev/null | grep -q "name=admin"; then
  log "creating sysadmin 'admin' (password: Harvest-demo-2026)"
  $CKAN -c "$INI" user add admin email=admin@example.org \
      password=Harvest-demo-2026 >>"$LOG" 2>&1
fi
$CKAN -c "$INI" sysadmin add admin >>"$LOG" 2>&1 || true

# The end-to-end harvest of a second, local CKAN instance plugs in here.
if [ -x dev/demo_harvest.sh ]; then
  dev/demo_harvest.sh "$INI"
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  log "the demo web server is already running (pid $(cat "$PIDFILE"))"
else
  log "starting CKAN on 127.0.0.1:$PORT (log: $LOG)"
  nohup $CKAN -c "$INI" run --host 127.0.0.1 --port "$PORT" \
      --disable-reloader >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 60); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/3/action/status_show" 2>/dev/null && break
    sleep 1
  done
fi

curl -fsS "http://127.0.0.1:$PORT/api/3/action/status_show" >/dev/null || {
  log "CKAN did not answer on port $PORT; see $LOG"; exit 1; }
cat <<MSG

  CKAN with ckanext-harvest is up:  http://127.0.0.1:$PORT/
  Harvest sources:                  http://127.0.0.1:$PORT/harvest/
  Log in as admin / Harvest-demo-2026
  Stop it with:                     make demo-stop

MSG

#!/usr/bin/env bash
# The end-to-end harvest of the demo (called by dev/demo.sh before it starts the
# local web server):
#   dev/demo_harvest.sh <local ini>   start a second, "remote" CKAN on
#                                     127.0.0.1:5001 (seeded once with a generated
#                                     catalogue), start the gather and fetch
#                                     consumers, harvest the remote into the local
#                                     CKAN and print the job report
#   dev/demo_harvest.sh stop          stop the remote CKAN and the consumers
# Safe to run again: the remote is seeded and the harvest source created only
# once; a new run harvests again (and finds nothing new).
#
# Settings (environment): DEMO_REMOTE_PORT (5001), DEMO_DATASETS (300),
# DEMO_HARVEST_TIMEOUT (seconds, 900), CKAN_REMOTE_SOLR_URL (default: core
# ckan_demo_remote of the dev Solr).
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.dev
CKAN=.venv/bin/ckan
PY=.venv/bin/python
LOCAL_PORT=${DEMO_PORT:-5000}
REMOTE_PORT=${DEMO_REMOTE_PORT:-5001}
REMOTE_URL=http://127.0.0.1:$REMOTE_PORT
REMOTE_INI=$STATE/remote.ini
REMOTE_PIDFILE=$STATE/remote.pid
REMOTE_LOG=$STATE/remote.log
REMOTE_SOLR_URL=${CKAN_REMOTE_SOLR_URL:-http://127.0.0.1:${SOLR_PORT:-8983}/solr/ckan_demo_remote}
GATHER_PIDFILE=$STATE/gather-consumer.pid
FETCH_PIDFILE=$STATE/fetch-consumer.pid
GATHER_LOG=$STATE/gather-consumer.log
FETCH_LOG=$STATE/fetch-consumer.log
LOG=$STATE/demo-harvest.log
DATASETS=${DEMO_DATASETS:-300}
TIMEOUT=${DEMO_HARVEST_TIMEOUT:-900}
SOURCE=remote-ckan
SOURCE_ORG=harvest-demo
SOURCE_CONFIG='{"remote_orgs": "create", "remote_groups": "create", "default_extras": {"harvested_from": "{harvest_source_url}/dataset/{dataset_id}"}}'

log() { printf '[demo] %s\n' "$*"; }
fail() { log "ERROR: $*"; exit 1; }

# --- background processes (pidfile + a word of their command line) ----------

running_pid() {  # pidfile pattern -> prints the pid if that process is alive
  local pid
  [ -f "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

start_bg() {  # pidfile logfile command...
  local pidfile=$1 logfile=$2 detach=()
  shift 2
  command -v setsid >/dev/null 2>&1 && detach=(setsid)
  nohup "${detach[@]}" "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

stop_bg() {  # pidfile pattern label
  local pid
  if pid=$(running_pid "$1" "$2"); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped the $3 (pid $pid)"
  else
    log "the $3 is not running"
  fi
  rm -f "$1"
}

stop_all() {
  stop_bg "$GATHER_PIDFILE" "harvester gather-consumer" "gather consumer"
  stop_bg "$FETCH_PIDFILE" "harvester fetch-consumer" "fetch consumer"
  stop_bg "$REMOTE_PIDFILE" "$REMOTE_INI run" "remote CKAN on port $REMOTE_PORT"
}

if [ "${1:-}" = "stop" ]; then stop_all; exit 0; fi
INI=${1:?usage: dev/demo_harvest.sh <local ini> | stop}
[ -f "$INI" ] || fail "no such configuration file: $INI"
mkdir -p "$STATE/remote-storage"

answers() { curl -fsS -o /dev/null "$1/api/3/action/status_show" 2>/dev/null; }

# --- the remote CKAN -----------------------------------------------------------

start_remote() {
  sed -e "s#@DB_URL@#postgresql://ckan_default:pass@127.0.0.1/ckan_demo_remote#" \
      -e "s#@SOLR_URL@#$REMOTE_SOLR_URL#" -e "s#@REDIS_URL@#redis://127.0.0.1:6379/3#" \
      -e "s#@SITE_ID@#ckan-harvest-remote#" -e "s#@PORT@#$REMOTE_PORT#" \
      -e "s#@STORAGE@#$PWD/$STATE/remote-storage#" dev/remote.ini.in >"$REMOTE_INI"
  log "initialising the remote database (ckan_demo_remote)"
  $CKAN -c "$REMOTE_INI" db init >>"$REMOTE_LOG" 2>&1
  if ! $CKAN -c "$REMOTE_INI" user show admin 2>/dev/null | grep -q "name=admin"; then
    $CKAN -c "$REMOTE_INI" user add admin email=admin@remote.example.org \
        password=Harvest-demo-2026 >>"$REMOTE_LOG" 2>&1
  fi
  $CKAN -c "$REMOTE_INI" sysadmin add admin >>"$REMOTE_LOG" 2>&1 || true

  local pid
  if pid=$(running_pid "$REMOTE_PIDFILE" "$REMOTE_INI run"); then
    log "the remote CKAN is already running on $REMOTE_URL (pid $pid)"
  else
    answers "$REMOTE_URL" && fail "port $REMOTE_PORT is taken by another process"
    log "starting the remote CKAN on $REMOTE_URL (log: $REMOTE_LOG)"
    start_bg "$REMOTE_PIDFILE" "$REMOTE_LOG" $CKAN -c "$REMOTE_INI" run \
        --host 127.0.0.1 --port "$REMOTE_PORT" --disable-reloader --threaded
  fi
  for _ in $(seq 1 90); do answers "$REMOTE_URL" && return 0; sleep 1; done
  fail "the remote CKAN did not answer on $REMOTE_URL; see $REMOTE_LOG"
}

seed_remote() {
  local rc=0
  # The dev Solr keeps its indexes in memory and databases may have been reset:
  # index what is missing, drop what no longer exists.
  $CKAN -c "$REMOTE_INI" search-index rebuild -o >>"$REMOTE_LOG" 2>&1
  $PY dev/make_catalogue.py --url "$REMOTE_URL" --n "$DATASETS" --check >>"$LOG" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    log "the remote catalogue is already seeded: $(tail -n 1 "$LOG")"
    return 0
  fi
  log "seeding the remote CKAN with $DATASETS generated datasets (dev/make_catalogue.py)"
  local token
  token=$($CKAN -c "$REMOTE_INI" user token add admin "demo-seed-$(date +%s)" -q 2>>"$REMOTE_LOG" \
          | tail -n 1)
  [ -n "$token" ] || fail "could not create an API token on the remote; see $REMOTE_LOG"
  CKAN_API_TOKEN=$token $PY dev/make_catalogue.py --url "$REMOTE_URL" --n "$DATASETS" \
      | sed 's/^/[demo]   /'
}

# --- the local side: in-process helpers (CKAN loaded once per call) ----------

read -r -d '' LOCAL_PY <<'PY' || true
import json, subprocess, sys, time

from ckan import model
from ckan.cli import load_config
from ckan.config.middleware import make_app
from ckan.plugins import toolkit

from ckanext.harvest.model import HarvestJob, HarvestObject

ini, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
app = make_app(load_config(ini))
STATUSES = ("added", "updated", "not modified", "errored", "deleted")


def context():
    user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]
    return {"user": user, "ignore_auth": True}


def action(action_name, **data):
    return toolkit.get_action(action_name)(context(), data)


def ensure_org(name, title):
    try:
        action("organization_show", id=name)
    except toolkit.ObjectNotFound:
        action("organization_create", name=name, title=title,
               description="Owner of the demo harvest source.")
        print("created organisation %s" % name)


def object_counts(job_id):
    query = model.Session.query(HarvestObject).filter(HarvestObject.harvest_job_id == job_id)
    done = query.filter(HarvestObject.state.in_(("COMPLETE", "ERROR"))).count()
    return query.count(), done


def progress_line(job, elapsed):
    if job.gather_finished is None:
        return "%4d s  gathering the remote datasets ..." % elapsed
    stats = action("harvest_job_show", id=job.id)["stats"]
    total, done = object_counts(job.id)
    detail = ", ".join("%s %d" % (s, stats.get(s, 0)) for s in STATUSES[:4])
    return "%4d s  objects done %d / %d  (%s)" % (elapsed, done, total, detail)


def watch(source_name, ckan, timeout, interactive):
    source = action("harvest_source_show", id=source_name)
    job = action("harvest_job_list", source_id=source["id"])[0]
    started, last_run, last_line = time.monotonic(), 0.0, None
    while True:
        model.Session.remove()
        current = HarvestJob.get(job["id"])
        if current.status == "Finished":
            return job["id"], True
        elapsed = time.monotonic() - started
        line = progress_line(current, elapsed)
        if line[8:] != last_line:
            # In a terminal the progress line is rewritten in place.
            print(("\r[demo] %-90s" if interactive else "[demo] %s") % line,
                  end="" if interactive else "\n", flush=True)
            last_line = line[8:]
        total, done = object_counts(current.id)
        all_done = current.gather_finished is not None and done == total
        if all_done or time.monotonic() - last_run >= 30:
            # The scheduler marks the job Finished once every object is done.
            subprocess.run([ckan, "-c", ini, "harvester", "run"], check=True)
            last_run = time.monotonic()
            continue
        if elapsed > timeout:
            return job["id"], False
        time.sleep(2)


def report(job_id, finished, interactive, remote):
    model.Session.remove()
    job = action("harvest_job_show", id=job_id)
    errors = action("harvest_job_report", id=job_id)
    if interactive:
        print()  # keep the last progress line
    total, done = object_counts(job_id)
    if finished:
        created = HarvestJob.get(job_id)
        took = (created.finished or created.gather_finished) - created.created
        print("[demo] harvest job %s finished in %d s: %d objects" % (
            job_id, took.total_seconds(), total))
    else:
        print("[demo] WARNING: harvest job %s not finished after the wait (%d / %d objects "
              "done); see .dev/fetch-consumer.log" % (job_id, done, total))
    stats = job["stats"]
    print("[demo] harvest report:  " + " | ".join(
        "%s %d" % (s, stats.get(s, 0)) for s in STATUSES))
    for error in errors["gather_errors"][:10]:
        print("[demo]   gather error: %s" % error["message"].strip())
    object_errors = list(errors["object_errors"].values())
    for entry in object_errors[:10]:
        for error in entry["errors"]:
            print("[demo]   %s: %s" % (entry["guid"], error["message"][:300]))
    if len(object_errors) > 10:
        print("[demo]   ... and %d more objects with errors" % (len(object_errors) - 10))
    source = action("harvest_source_show", id=job["source_id"])
    status = action("harvest_source_show_status", id=source["id"])
    local = model.Session.query(model.Package).filter(
        model.Package.type == "dataset", model.Package.state == "active").count()
    print("[demo] remote catalogue: %d datasets (%d public, %d private, %d deleted); "
          "local site: %d datasets, %d of them harvested from %s" % (
              remote["datasets"], remote["public"], remote["private"], remote["deleted"],
              local, status["total_datasets"], source["url"]))
    if local == status["total_datasets"] == remote["public"] and not stats.get("errored"):
        print("[demo] OK: every public remote dataset is on the local site, once")
    else:
        print("[demo] WARNING: expected %d harvested datasets and no error"
              % remote["public"])


with app._wsgi_app.test_request_context():
    if command == "ensure-org":
        ensure_org(*args)
    elif command == "watch":
        source_name, ckan, timeout, interactive, remote = args
        job_id, finished = watch(source_name, ckan, float(timeout), interactive == "1")
        report(job_id, finished, interactive == "1", json.loads(remote))
PY

local_py() { "$PY" -c "$LOCAL_PY" "$INI" "$@" 2>>"$LOG"; }

create_source() {
  # As for the remote: index what is missing, drop what no longer exists.
  $CKAN -c "$INI" search-index rebuild -o >>"$LOG" 2>&1
  local_py ensure-org "$SOURCE_ORG" "Harvest demo" | sed 's/^/[demo] /' \
    || fail "could not create the organisation $SOURCE_ORG; see $LOG"
  if $CKAN -c "$INI" harvester source show "$SOURCE" >>"$LOG" 2>&1; then
    log "harvest source '$SOURCE' exists already"
  else
    log "creating the harvest source '$SOURCE' (type ckan) for $REMOTE_URL/"
    $CKAN -c "$INI" harvester source create "$SOURCE" "$REMOTE_URL/" ckan \
        "Remote CKAN on port $REMOTE_PORT" true "$SOURCE_ORG" MANUAL "$SOURCE_CONFIG" \
        >>"$LOG" 2>&1 || fail "could not create the harvest source; see $LOG"
  fi
}

start_consumers() {
  local pid kind
  for kind in gather fetch; do
    local pidfile=$STATE/$kind-consumer.pid logfile=$STATE/$kind-consumer.log
    if pid=$(running_pid "$pidfile" "harvester $kind-consumer"); then
      log "the $kind consumer is already running (pid $pid)"
    else
      start_bg "$pidfile" "$logfile" $CKAN -c "$INI" harvester "$kind-consumer"
      log "started the $kind consumer (pid $(cat "$pidfile"), log: $logfile)"
    fi
  done
}

harvest() {
  local output
  if output=$($CKAN -c "$INI" harvester job "$SOURCE" 2>&1); then
    log "created harvest job $(sed -n 's/.*Job id: //p' <<<"$output")"
  elif grep -q "already" <<<"$output"; then
    log "the source has an unfinished job already: waiting for it"
  else
    echo "$output" >>"$LOG"
    fail "could not create a harvest job; see $LOG"
  fi
  local interactive=0
  [ -t 1 ] && interactive=1
  log "harvesting (gather and fetch consumers; 'ckan harvester run' closes the job)"
  local_py watch "$SOURCE" "$CKAN" "$TIMEOUT" "$interactive" \
      "$($PY dev/make_catalogue.py --n "$DATASETS" --describe)" \
    || fail "could not follow the harvest job; see $LOG"
}

: >"$LOG"
start_remote
seed_remote
create_source
start_consumers
harvest
log "harvest UI: http://127.0.0.1:$LOCAL_PORT/harvest (once the web server is up);" \
    "remote CKAN: $REMOTE_URL; stop everything with: make demo-stop"

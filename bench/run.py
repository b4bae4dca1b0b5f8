"""Benchmark of the CKAN harvester through the real queue consumers.

A "remote" CKAN (database ``ckan_bench_remote``, Solr core ``ckan_bench_remote``,
port 5101) is seeded once with N generated datasets (``dev/make_catalogue.py``);
a "local" CKAN (database ``ckan_bench``, Solr core ``ckan_bench``, Redis db 13,
no web server) harvests it with a ``ckan harvester gather-consumer`` and a
``ckan harvester fetch-consumer`` subprocess. Measured:

1. the first harvest, end to end (job created → last dataset imported);
2. a re-harvest with nothing changed on the remote;
3. a re-harvest after 10 % of the remote datasets changed;
4. the floor: the same N datasets created with ``package_create`` in-process in
   the cleared local database (no harvest machinery), before and after the
   harvests (the ratios use the mean of the two);
5. the peak RSS (VmHWM) of the two consumers.

See bench/README.rst. Run it with ``bench/bench.sh [--n N]`` (or ``make bench``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import benchini  # beside this script

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dev" / "bench"
BIN = ROOT / ".venv" / "bin"
CKAN = os.environ.get("BENCH_CKAN") or str(BIN / "ckan")  # another tree: see README
PYTHON = os.environ.get("BENCH_PYTHON") or str(BIN / "python")
MAKE_CATALOGUE = str(ROOT / "dev" / "make_catalogue.py")

DB_URL = "postgresql://ckan_default:pass@127.0.0.1/%s"
LOCAL_DB, REMOTE_DB = "ckan_bench", "ckan_bench_remote"
REDIS_DB = 13
REMOTE_PORT = 5101
REMOTE_URL = "http://127.0.0.1:%d" % REMOTE_PORT
SITE_ID, REMOTE_SITE_ID = "ckan-bench", "ckan-bench-remote"
SOURCE, ORG = "bench-remote", "bench-org"
SEED = 2026



def say(message: str) -> None:
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)


def run(args: list[str], log: str, env: Optional[dict[str, str]] = None,
        capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, appending its output to ``STATE/<log>`` (or capturing stdout)."""
    with open(STATE / log, "a") as out:
        out.write("\n$ %s\n" % " ".join(args))
        out.flush()
        result = subprocess.run(
            args, cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE if capture else out, stderr=out,
        )
    if check and result.returncode != 0:
        raise SystemExit("command failed (%d): %s; see %s" % (
            result.returncode, " ".join(args), STATE / log))
    return result


# --- configuration ---------------------------------------------------------------


def solr_base() -> str:
    url = os.environ.get("CKAN_SOLR_URL")
    if url:
        return url.rstrip("/").rsplit("/", 1)[0]
    return "http://127.0.0.1:%s/solr" % os.environ.get("SOLR_PORT", "8983")


def write_inis() -> tuple[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "storage").mkdir(exist_ok=True)
    local = STATE / "local.ini"
    local.write_text(benchini.local_ini(
        script="run.py", purpose="the local (harvesting) CKAN of the benchmark",
        name="bench", db_url=DB_URL % LOCAL_DB, solr_url=solr_base() + "/" + LOCAL_DB,
        redis_db=REDIS_DB, site_id=SITE_ID, site_url="http://127.0.0.1:5100",
        storage=STATE / "storage", logging=benchini.WARNING_LOGGING,
        settings='# The "remote" CKAN runs on loopback: allow it past the SSRF guard.\n'
                 "ckan.harvest.ssrf_allowed_hosts = 127.0.0.1 localhost\n"))
    template = (ROOT / "dev" / "remote.ini.in").read_text()
    values = {
        "@DB_URL@": DB_URL % REMOTE_DB, "@SOLR_URL@": solr_base() + "/" + REMOTE_DB,
        "@REDIS_URL@": "redis://127.0.0.1:6379/%d" % REDIS_DB, "@SITE_ID@": REMOTE_SITE_ID,
        "@PORT@": str(REMOTE_PORT), "@STORAGE@": str(STATE / "storage"),
    }
    for key, value in values.items():
        template = template.replace(key, value)
    template = re.sub(r"(\[logger_ckan\]\nlevel = )INFO", r"\1WARNING", template)
    remote = STATE / "remote.ini"
    remote.write_text(template)
    return str(local), str(remote)


# --- the remote CKAN ---------------------------------------------------------------


def remote_answers() -> bool:
    import requests

    try:
        return requests.get(REMOTE_URL + "/api/3/action/status_show", timeout=5).ok
    except requests.RequestException:
        return False


def start_remote(remote_ini: str) -> Optional[subprocess.Popen]:
    run([CKAN, "-c", remote_ini, "db", "init"], "remote.log")
    shown = run([CKAN, "-c", remote_ini, "user", "show", "admin"], "remote.log",
                capture=True, check=False)
    if "name=admin" not in shown.stdout:
        run([CKAN, "-c", remote_ini, "user", "add", "admin", "email=admin@bench.example.org",
             "password=Harvest-bench-2026"], "remote.log")
    run([CKAN, "-c", remote_ini, "sysadmin", "add", "admin"], "remote.log", check=False)
    if remote_answers():
        # Left running by --keep-remote: used as it is (and left running).
        say("a CKAN answers on port %d already (--keep-remote?): used as the remote"
            % REMOTE_PORT)
        return None
    with open(STATE / "remote-server.log", "a") as log:
        server = subprocess.Popen(
            [CKAN, "-c", remote_ini, "run", "--host", "127.0.0.1", "--port", str(REMOTE_PORT),
             "--disable-reloader", "--threaded"],
            cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    for _ in range(120):
        if remote_answers():
            return server
        if server.poll() is not None:
            break
        time.sleep(0.5)
    raise SystemExit("the remote CKAN did not start; see %s" % (STATE / "remote-server.log"))


def catalogue_args(n: int) -> list[str]:
    return ["--url", REMOTE_URL, "--n", str(n), "--seed", str(SEED),
            "--private-ratio", "0", "--deleted-ratio", "0", "--quiet"]


def remote_token(remote_ini: str) -> str:
    result = run([CKAN, "-c", remote_ini, "user", "token", "add", "admin",
                  "bench-%d" % time.time(), "-q"], "remote.log", capture=True)
    return result.stdout.strip().splitlines()[-1]


def seed_remote(remote_ini: str, n: int) -> float:
    """Seed the remote with the N datasets unless done already; returns seconds."""
    # The dev Solr keeps its indexes in memory: index what is missing, drop what
    # no longer exists.
    run([CKAN, "-c", remote_ini, "search-index", "rebuild", "-o"], "remote.log")
    check = run([PYTHON, MAKE_CATALOGUE, "--check"] + catalogue_args(n), "remote.log",
                check=False)
    if check.returncode == 0:
        say("the remote holds the %d datasets already" % n)
        return 0.0
    say("seeding the remote with %d datasets (once; not measured)" % n)
    started = time.monotonic()
    run([PYTHON, MAKE_CATALOGUE] + catalogue_args(n), "remote.log",
        env={"CKAN_API_TOKEN": remote_token(remote_ini)})
    return time.monotonic() - started


def remote_datasets() -> list[dict[str, Any]]:
    import requests

    datasets: list[dict[str, Any]] = []
    while True:
        answer = requests.get(REMOTE_URL + "/api/3/action/package_search", params={
            "rows": 1000, "start": len(datasets), "sort": "id asc"}, timeout=300).json()
        page = answer["result"]["results"]
        datasets.extend(page)
        if not page or len(datasets) >= answer["result"]["count"]:
            return datasets


# --- the local CKAN ----------------------------------------------------------------


def reset_local(local_ini: str) -> None:
    """Empty database and search index, harvest tables, no queued message."""
    import redis

    run([CKAN, "-c", local_ini, "db", "clean", "--yes"], "local.log")
    run([CKAN, "-c", local_ini, "db", "init"], "local.log")
    run([CKAN, "-c", local_ini, "db", "upgrade", "-p", "harvest"], "local.log")
    client = redis.Redis(host="127.0.0.1", db=REDIS_DB)
    for key in client.scan_iter("ckanext-harvest:%s:*" % SITE_ID):
        client.delete(key)


def inprocess(local_ini: str, task: str, *args: str) -> dict[str, Any]:
    """Run a task of this script with CKAN loaded in a fresh process; its JSON result."""
    result = run([PYTHON, __file__, "--inprocess", local_ini, task, *args], "local.log",
                 capture=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


class Consumers:
    """The gather and fetch consumer subprocesses."""

    def __init__(self, local_ini: str, fetchers: int, profile: bool = False) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        for name in ["gather"] + ["fetch%d" % i if fetchers > 1 else "fetch"
                                  for i in range(1, fetchers + 1)]:
            kind = "gather" if name == "gather" else "fetch"
            command = [CKAN, "-c", local_ini, "harvester", "%s-consumer" % kind]
            if profile:  # written when the consumer stops (SIGTERM)
                command = [PYTHON, "-m", "cProfile", "-o",
                           str(STATE / ("%s-consumer.prof" % name))] + command
            with open(STATE / ("%s-consumer.log" % name), "a") as log:
                self.procs[name] = subprocess.Popen(
                    command, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        self.sampled: dict[str, int] = {name: 0 for name in self.procs}

    def sample(self) -> None:
        """Record the current RSS of each consumer (psutil if installed, else /proc)."""
        for name, proc in self.procs.items():
            self.sampled[name] = max(self.sampled[name], _rss_kib(proc.pid))

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit("the %s consumer died (status %s); see %s" % (
                    name, proc.returncode, STATE / ("%s-consumer.log" % name)))

    def peak(self) -> dict[str, int]:
        """Peak resident set of each consumer in KiB: the kernel's VmHWM (psutil has
        no peak figure), else the highest sampled RSS."""
        return {name: _proc_status_kib(proc.pid, "VmHWM") or self.sampled[name]
                for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _rss_kib(pid: int) -> int:
    try:
        import psutil
    except ImportError:
        return _proc_status_kib(pid, "VmRSS")
    try:
        return psutil.Process(pid).memory_info().rss // 1024
    except psutil.Error:
        return 0


def _proc_status_kib(pid: int, field: str) -> int:
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- one harvest -------------------------------------------------------------------


JOB_SQL = """
select j.status, j.created, j.gather_started, j.gather_finished,
       count(o.id), count(o.id) filter (where o.state in ('COMPLETE', 'ERROR')),
       max(o.import_finished)
from harvest_job j left join harvest_object o on o.harvest_job_id = j.id
where j.id = %s group by j.id
"""
REPORT_SQL = """
select coalesce(report_status, '(none)'), count(*) from harvest_object
where harvest_job_id = %s group by 1
"""
# The fetch consumer's time per object, by report status: the time between an
# object's end (import_finished, else fetch_finished) and the one before, counted only for objects already
# gathered by then (the consumer did not wait for them). Meaningful with one
# fetch consumer.
BUSY_SQL = """
with f as (
  select report_status, gathered, coalesce(import_finished, fetch_finished) as finished
  from harvest_object where harvest_job_id = %s),
o as (
  select report_status, gathered, finished,
         lag(finished) over (order by finished) as previous
  from f where finished is not null)
select coalesce(report_status, '(none)'), count(*),
       avg(extract(epoch from finished - previous)) * 1000
from o where previous is not null and gathered < previous group by 1
"""
ERRORS_SQL = """
select (select count(*) from harvest_gather_error where harvest_job_id = %s),
       (select count(*) from harvest_object_error e join harvest_object o
          on o.id = e.harvest_object_id where o.harvest_job_id = %s)
"""


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far (/proc/stat; zeros elsewhere).
    Steal is the time the hypervisor gave this VM's CPUs to others."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int]) -> float:
    """Percentage of CPU time stolen by the hypervisor since ``before``."""
    steal, total = cpu_ticks()
    return 100.0 * (steal - before[0]) / (total - before[1]) if total > before[1] else 0.0


def harvest(label: str, local_ini: str, consumers: Consumers, db: Any,
            timeout: float) -> dict[str, Any]:
    """Create a job, wait for the consumers to do it, close it; its timings."""
    output = run([CKAN, "-c", local_ini, "harvester", "job", SOURCE], "local.log",
                 capture=True).stdout
    job_id = re.search(r"Job id: (\S+)", output).group(1)  # type: ignore[union-attr]
    say("%s: job %s queued" % (label, job_id))
    started, last_print, ticks = time.monotonic(), 0.0, cpu_ticks()
    timeline: list[tuple[float, int]] = []
    while True:
        consumers.check_alive()
        consumers.sample()
        with db.cursor() as cur:
            cur.execute(JOB_SQL, (job_id,))
            status, created, g_start, g_end, total, done, last_import = cur.fetchone()
        timeline.append((round(time.monotonic() - started, 2), done))
        if g_end is not None and done == total:
            break
        if time.monotonic() - last_print >= 15:
            say("%s: %s, %d / %d objects done" % (
                label, "gathered" if g_end else "gathering", done, total))
            last_print = time.monotonic()
        if time.monotonic() - started > timeout:
            raise SystemExit("%s: not done after %d s" % (label, timeout))
        time.sleep(0.25)
    run([CKAN, "-c", local_ini, "harvester", "run"], "local.log")
    with db.cursor() as cur:
        cur.execute("select status from harvest_job where id = %s", (job_id,))
        status = cur.fetchone()[0]
        cur.execute(REPORT_SQL, (job_id,))
        report = dict(cur.fetchall())
        cur.execute(ERRORS_SQL, (job_id, job_id))
        gather_errors, object_errors = cur.fetchone()
        cur.execute(BUSY_SQL, (job_id,))
        busy = {status: {"objects": count, "mean_ms": round(float(ms), 2)}
                for status, count, ms in cur.fetchall()}
    end = last_import or g_end
    seconds = (end - created).total_seconds()
    result = {
        "label": label, "job": job_id, "status": status, "objects": total,
        "seconds": seconds, "gather_seconds": (g_end - g_start).total_seconds(),
        "queue_wait_seconds": (g_start - created).total_seconds(),
        "rate": total / seconds if seconds > 0 else 0.0, "report": report,
        "gather_errors": gather_errors, "object_errors": object_errors,
        "steal_percent": steal_percent(ticks),
        "consumer_ms_per_object": busy,
        # seconds (from the job's creation, roughly) at every 200 objects done
        "progress": [t for step in range(200, total + 1, 200)
                     for t, d in [next(((t, d) for t, d in timeline if d >= step),
                                       (None, 0))] if t is not None],
    }
    say("%s: %d objects in %.1f s (%.1f/s; gather %.1f s; CPU steal %.1f %%): %s" % (
        label, total, seconds, result["rate"], result["gather_seconds"],
        result["steal_percent"],
        ", ".join("%s %d" % kv for kv in sorted(report.items()))))
    if busy:
        say("%s: fetch consumer's time per object not waited for: %s" % (label, ", ".join(
            "%s %.2f ms (%d)" % (status, b["mean_ms"], b["objects"])
            for status, b in sorted(busy.items()))))
    return result


# --- in-process tasks (run in a child process with CKAN loaded) ------------------


def _ckan_app(ini: str) -> Any:
    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    return make_app(load_config(ini))


def _context() -> dict[str, Any]:
    from ckan.plugins import toolkit

    user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]
    return {"user": user, "ignore_auth": True}


def _ensure_org() -> str:
    from ckan.plugins import toolkit

    try:
        return toolkit.get_action("organization_show")(_context(), {"id": ORG})["id"]
    except toolkit.ObjectNotFound:
        return toolkit.get_action("organization_create")(
            _context(), {"name": ORG, "title": "Benchmark"})["id"]


def task_setup(config: str) -> dict[str, Any]:
    """The local organisation and the harvest source."""
    from ckan.plugins import toolkit

    org_id = _ensure_org()
    source = toolkit.get_action("harvest_source_create")(_context(), {
        "name": SOURCE, "title": "Benchmark remote", "url": REMOTE_URL + "/",
        "source_type": "ckan", "owner_org": org_id, "frequency": "MANUAL",
        "config": config,
    })
    return {"source": source["id"]}


def _package_create_context(user: str) -> dict[str, Any]:
    """What the harvester passes to package_create (base.py), without the harvest part."""
    from ckan.logic.schema import default_create_package_schema
    from ckan.plugins import toolkit

    schema = default_create_package_schema()
    schema["id"] = [toolkit.get_validator("ignore_missing"),
                    toolkit.get_validator("unicode_safe")]
    schema["__junk"] = [toolkit.get_validator("ignore")]
    return {"user": user, "ignore_auth": True, "schema": schema}


def _local_copies(datasets: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The remote organisations and groups of ``datasets`` created locally, as the
    harvester's ``create`` mode does (remote ``*_show``, same id); not timed.

    :returns: local organisation id by remote id, local group id by remote name
    """
    import requests
    from ckan.plugins import toolkit

    orgs: dict[str, str] = {}
    groups: dict[str, str] = {}
    drop = ("packages", "created", "users", "groups", "tags", "extras", "display_name")
    for dataset in datasets:
        wanted = [("organization", dataset.get("owner_org"), orgs)] + [
            ("group", group["name"], groups) for group in dataset.get("groups") or []]
        for kind, key, known in wanted:
            if not key or key in known:
                continue
            remote = requests.get("%s/api/3/action/%s_show" % (REMOTE_URL, kind), params={
                "id": key, "include_datasets": "false"}, timeout=60).json()["result"]
            for name in drop + (("type",) if kind == "organization" else ()):
                remote.pop(name, None)
            known[key] = toolkit.get_action("%s_create" % kind)(_context(), remote)["id"]
    return orgs, groups


def task_floor(datasets_file: str, config: str, changed: str) -> dict[str, Any]:
    """package_create of the remote dataset dicts, as the harvester would write them:
    same organisation and groups as the harvest makes with the source ``config``
    (created beforehand, not timed), else the local organisation and no group."""
    from ckan.plugins import toolkit

    options = json.loads(config)
    org_id = _ensure_org()
    datasets = json.loads(Path(datasets_file).read_text())
    orgs, groups = _local_copies(datasets) if (
        options.get("remote_orgs") == "create" or options.get("remote_groups") == "create"
    ) else ({}, {})
    for dataset in datasets:
        if options.get("remote_orgs") == "create":
            dataset["owner_org"] = orgs.get(dataset.get("owner_org") or "", org_id)
        else:
            dataset["owner_org"] = org_id
        if options.get("remote_groups") == "create":
            dataset["groups"] = [{"id": groups[g["name"]]} for g in dataset.get("groups") or []]
        else:
            dataset.pop("groups", None)
        for resource in dataset.get("resources", []):
            resource.pop("url_type", None)
            resource.pop("revision_id", None)
    create = toolkit.get_action("package_create")
    user = _context()["user"]
    started = time.perf_counter()
    progress = []  # seconds at every 200 datasets: how the rate moved during the loop
    for count, dataset in enumerate(datasets, 1):
        create(_package_create_context(user), dataset)
        if count % 200 == 0:
            progress.append(round(time.perf_counter() - started, 2))
    seconds = time.perf_counter() - started
    # For comparison with (3b): package_update of as many datasets as it updates,
    # changed as dev/make_catalogue.py --touch changes them.
    update = toolkit.get_action("package_update")
    chosen = datasets[:round(len(datasets) * float(changed))]
    started = time.perf_counter()
    for dataset in chosen:
        dataset["notes"] = (dataset.get("notes") or "") + "\n\nRevised for the bench."
        dataset["version"] = (dataset.get("version") or "1") + ".1"
        update(_package_create_context(user), dataset)
    update_seconds = time.perf_counter() - started
    # (F'') as many other datasets, each updated in a new session as a fetch
    # consumer handles each message: what CKAN's own package_update costs when
    # nothing of the dataset is loaded yet (in (F') its package_create left it
    # all in the session).
    from ckan import model

    cold = datasets[len(chosen):2 * len(chosen)]
    started = time.perf_counter()
    for dataset in cold:
        model.Session.remove()
        dataset["notes"] = (dataset.get("notes") or "") + "\n\nRevised for the bench."
        dataset["version"] = (dataset.get("version") or "1") + ".1"
        update(_package_create_context(user), dataset)
    cold_seconds = time.perf_counter() - started
    return {"created": len(datasets), "seconds": seconds, "progress": progress,
            "updated": len(chosen), "update_seconds": update_seconds,
            "cold_updated": len(cold), "cold_update_seconds": cold_seconds}


def inprocess_main(ini: str, task: str, args: list[str]) -> None:
    app = _ckan_app(ini)
    with app._wsgi_app.test_request_context():
        result = {"setup": task_setup, "floor": task_floor}[task](*args)
    print(json.dumps(result))


# --- the report --------------------------------------------------------------------


def mib(kib: int) -> str:
    return "%.0f MiB" % (kib / 1024.0)


def outcome(result: dict[str, Any]) -> str:
    parts = ["%s %d" % (k, v) for k, v in sorted(result["report"].items())]
    errors = result["gather_errors"] + result["object_errors"]
    return ", ".join(parts or ["no object"]) + ("; %d errors" % errors if errors else "")


def _fmt_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i in (0, len(row) - 1) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    return "ok" if ok else "MISSED"


def table(results: dict[str, Any]) -> str:
    """One table: each figure, the floor, each ratio and its target."""
    rows: list[tuple[str, ...]] = [
        ("measure", "datasets", "seconds", "datasets/s", "ratio", "target", "",
         "outcome")]
    f = results["floor"]
    floor_per = f["seconds"] / f["created"]
    rows.append(("(F) floor: package_create in-process", str(f["created"]),
                 "%.1f" % f["seconds"], "%.1f" % (1 / floor_per), "1.00", "", "",
                 "created %d; mean of %s" % (f["created"], " s and ".join(
                     "%.1f" % r["seconds"] for r in f.get("runs", [f]))) + " s"))

    def harvest_row(key: str, text: str) -> tuple[str, ...]:
        r = results[key]
        return (text, str(r["objects"]), "%.1f" % r["seconds"], "%.1f" % r["rate"])

    first = results["first"]
    ratio = first["seconds"] / (first["objects"] * floor_per)
    rows.append(harvest_row("first", "(1) first harvest, 1 fetch consumer") + (
        "%.2f" % ratio, "<= 1.25 x floor", verdict(ratio, 1.25), outcome(first)))
    if results.get("scale_out"):
        scale = results["scale_out"]
        speedup = first["seconds"] / scale["seconds"]
        rows.append(harvest_row("scale_out", "(2) first harvest, %d fetch consumers" %
                                results["scale_out_consumers"]) + (
            "%.2f" % speedup, ">= 1.5 x (1) speed", verdict(speedup, 1.5, True),
            outcome(scale)))
    unchanged, changed = results["unchanged"], results["changed"]
    unchanged_ratio = unchanged["seconds"] / first["seconds"]
    rows.append(harvest_row("unchanged", "(3a) re-harvest, nothing changed") + (
        "%.2f" % unchanged_ratio, "(3a) <= 0.10 x (1)", verdict(unchanged_ratio, 0.10),
        outcome(unchanged)))
    n_changed = changed["report"].get("updated", 0) + changed["report"].get("added", 0)
    extra = changed["seconds"] - unchanged["seconds"]
    per_changed = extra / (n_changed * floor_per) if n_changed else 0.0
    rows.append(harvest_row("changed", "(3b) re-harvest, %d %% changed" %
                            round(results["changed_fraction"] * 100)) + (
        "%.2f" % per_changed, "(3b-3a) <= 1.2 x %d x floor" % n_changed,
        verdict(per_changed, 1.2), outcome(changed) + (
            "; median of %s s" % ", ".join("%.1f" % seconds for seconds in
                                          results["changed_runs"])
            if len(results.get("changed_runs", [])) > 1 else "")))
    if f.get("updated"):
        rows.append(("(F') package_update in-process, for (3b)", str(f["updated"]),
                     "%.1f" % f["update_seconds"], "%.1f" % (f["updated"] / f["update_seconds"]),
                     "%.2f" % (f["update_seconds"] / (f["updated"] * floor_per)), "", "",
                     "updated %d after (F)" % f["updated"]))
    if f.get("cold_updated"):
        rows.append(("(F'') the same, a new session each", str(f["cold_updated"]),
                     "%.1f" % f["cold_update_seconds"],
                     "%.1f" % (f["cold_updated"] / f["cold_update_seconds"]),
                     "%.2f" % (f["cold_update_seconds"] / (f["cold_updated"] * floor_per)),
                     "", "", "as a consumer: nothing loaded"))
    peaks = results["peak_rss_kib"]
    rows.append(("(1-3) peak RSS (VmHWM) of the consumers", "", "", "", "", "", "",
                 ", ".join("%s %s" % (name, mib(kib)) for name, kib in peaks.items())))
    if results.get("gather_memory"):
        rows.extend(gather_rows(results["gather_memory"]))
    if results.get("site_scale"):
        rows.extend(site_rows(results["site_scale"]))
    if results.get("retention"):
        import retention

        rows.extend(("(6) %s" % figure, "", "", "", "", "", "", "%s (%s)" % (value, note))
                    for figure, value, note in retention.rows(results["retention"]))
    return _fmt_table(rows)


def gather_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(4): bench/gather_memory.py's figures in this table's columns."""
    out: list[tuple[str, ...]] = []
    for r in result["sizes"]:
        good = r["objects"] == r["size"] == r["guids"]
        out.append(("(4) gather only, N = %d" % r["size"], str(r["objects"]),
                    "%.1f" % r["seconds"], "%.1f" % (r["objects"] / r["seconds"]),
                    "", "objects = N", "ok" if good else "MISSED",
                    "peak RSS %s (idle %s)" % (mib(r["peak_rss_kib"]),
                                              mib(r["idle_rss_kib"]))))
    for sizes, ratio in result.get("ratios", {}).items():
        out.append(("(4) gather peak RSS, N = %s" % sizes.replace("/", " over N = "),
                    "", "", "", "%.2f" % ratio, "0.80 to 1.20",
                    "ok" if 0.8 <= ratio <= 1.2 else "MISSED", "flat is 1.00"))
    if "kill" in result:
        k = result["kill"]
        out.append(("(4) gather killed half-way, run again", str(k["objects"]), "", "", "",
                    "no duplicate", "ok" if k["ok"] else "MISSED",
                    "%d objects, %d distinct guids (killed at %d)" % (
                        k["objects"], k["guids"], k["objects_at_kill"])))
    return out


def site_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(5): bench/site_scale.py's figures (median of the timed runs) in this table."""
    sizes = result["sizes"]
    out: list[tuple[str, ...]] = [(
        "(5) site: %(sources)d sources, %(jobs)d jobs, %(objects)d objects, "
        "%(errors)d errors" % sizes, "", "", "", "", "", "", "")]
    for label, timing in result["timings"].items():
        out.append(("(5) %s" % label, "", "%.3f" % timing["median"], "", "",
                    "< 1 s", "ok" if timing["median"] < 1.0 else "MISSED",
                    "max %.3f s; answer %s" % (timing["max"], timing["size"])))
    return out


# --- main --------------------------------------------------------------------------


DEFAULT_CONFIG = {"force_all": True, "remote_orgs": "create", "remote_groups": "create"}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark of the CKAN harvester.")
    parser.add_argument("--n", type=int, default=2000, help="remote datasets (2000)")
    parser.add_argument("--fetch-consumers", type=int, default=1,
                        help="fetch consumer processes of (1) and (3) (1)")
    parser.add_argument("--scale-out", type=int, default=2, metavar="K",
                        help="fetch consumers of the scale-out run (2); 0: no such run")
    parser.add_argument("--changed", type=float, default=0.10,
                        help="fraction of the remote changed before (3b) (0.10)")
    parser.add_argument("--changed-runs", type=int, default=3, metavar="K",
                        help="(3b) K times, each after changing the same datasets "
                        "again; the median counts (3)")
    parser.add_argument("--config", default=json.dumps(DEFAULT_CONFIG),
                        help="source configuration (JSON; default %s)"
                             % json.dumps(DEFAULT_CONFIG))
    parser.add_argument("--incremental", action="store_true",
                        help="without force_all: incremental gathering; see README")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds allowed for one harvest (3600)")
    parser.add_argument("--profile", action="store_true",
                        help="run the consumers under cProfile (.dev/bench/*.prof; "
                             "slower: not for the figures)")
    parser.add_argument("--keep-remote", action="store_true",
                        help="leave the remote CKAN running on port %d" % REMOTE_PORT)
    parser.add_argument("--only-harvest", action="store_true",
                        help="only the CKAN-to-CKAN figures (1) to (3) and the floor")
    parser.add_argument("--with-100k", action="store_true",
                        help="(4) also gathers N = 100,000 (a few minutes more)")
    parser.add_argument("--no-site", action="store_true",
                        help="skip (5), the pages and actions at scale")
    parser.add_argument("--no-retention", action="store_true",
                        help="skip (6), the retention of 1,000,000 objects")
    parser.add_argument("--only-retention", action="store_true",
                        help="only (6): bench/retention.py (no remote, no harvest)")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    if args.incremental:
        config.pop("force_all", None)
    args.source_config = json.dumps(config)
    return args


def first_harvest(label: str, args: argparse.Namespace, local_ini: str,
                  fetchers: int) -> tuple[dict[str, Any], Consumers, Any]:
    """Empty local site, the source, consumers started: the first harvest. Returns
    its result, the running consumers and a database connection (caller closes)."""
    import psycopg2

    say("resetting the local database %s" % LOCAL_DB)
    reset_local(local_ini)
    inprocess(local_ini, "setup", args.source_config)
    consumers = Consumers(local_ini, fetchers, args.profile)
    db = psycopg2.connect(DB_URL % LOCAL_DB)
    db.autocommit = True
    try:
        time.sleep(3)  # let the consumers load CKAN
        return harvest(label, local_ini, consumers, db, args.timeout), consumers, db
    except BaseException:
        consumers.stop()
        db.close()
        raise


def measure_floor(args: argparse.Namespace, local_ini: str, label: str) -> dict[str, Any]:
    """(F) once: the local database emptied, then the package_create loop."""
    say("(F) floor, %s: clearing the local database, then package_create in-process"
        % label)
    datasets_file = STATE / "remote-datasets.json"
    datasets_file.write_text(json.dumps(remote_datasets()))
    reset_local(local_ini)
    ticks = cpu_ticks()
    floor = inprocess(local_ini, "floor", str(datasets_file), args.source_config,
                      str(args.changed))
    floor["steal_percent"] = steal_percent(ticks)
    say("(F) floor, %s: %d datasets in %.1f s (CPU steal %.1f %%); %d updated in "
        "%.1f s, %d more in %.1f s with a new session each" % (
            label, floor["created"], floor["seconds"], floor["steal_percent"],
            floor["updated"], floor["update_seconds"], floor["cold_updated"],
            floor["cold_update_seconds"]))
    return floor


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median duration (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run_: run_["seconds"])[(len(runs) - 1) // 2]


def combined_floor(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The floor the ratios use: the mean of the runs before and after the harvests
    (the speed of this shared machine drifts by tens of per cent within minutes;
    each run is kept in ``runs``)."""
    runs = [before, after]
    return {
        "created": after["created"],
        "seconds": sum(r["seconds"] for r in runs) / 2,
        "updated": after["updated"],
        "update_seconds": sum(r["update_seconds"] for r in runs) / 2,
        "cold_updated": after.get("cold_updated", 0),
        "cold_update_seconds": sum(r.get("cold_update_seconds", 0.0) for r in runs) / 2,
        "runs": runs,
    }


def measure(args: argparse.Namespace, local_ini: str, remote_ini: str) -> dict[str, Any]:
    results: dict[str, Any] = {"changed_fraction": args.changed}
    before = measure_floor(args, local_ini, "before the harvests")
    if args.scale_out:
        label = "(2) first harvest, %d fetch consumers" % args.scale_out
        results["scale_out"], consumers, db = first_harvest(label, args, local_ini,
                                                            args.scale_out)
        results["scale_out_consumers"] = args.scale_out
        consumers.stop()
        db.close()
    results["first"], consumers, db = first_harvest("(1) first harvest", args, local_ini,
                                                    args.fetch_consumers)
    try:
        results["peak_after_first_kib"] = consumers.peak()
        results["unchanged"] = harvest("(3a) nothing changed", local_ini, consumers, db,
                                       args.timeout)
        runs = []
        for number in range(1, args.changed_runs + 1):
            say("changing %d %% of the remote datasets" % round(args.changed * 100))
            run([PYTHON, MAKE_CATALOGUE, "--touch", str(args.changed)]
                + catalogue_args(args.n),
                "remote.log", env={"CKAN_API_TOKEN": remote_token(remote_ini)})
            runs.append(harvest("(3b) %d %% changed, run %d of %d" % (
                round(args.changed * 100), number, args.changed_runs),
                local_ini, consumers, db, args.timeout))
        results["changed"] = median_run(runs)
        results["changed_runs"] = [run_["seconds"] for run_ in runs]
        results["peak_rss_kib"] = consumers.peak()
        results["sampled_rss_kib"] = dict(consumers.sampled)
    finally:
        consumers.stop()
        db.close()
    results["floor"] = combined_floor(
        before, measure_floor(args, local_ini, "after the harvests"))
    return results


def retention_main() -> int:
    """``--only-retention``: (6) alone, printed as bench/retention.py prints it."""
    import retention

    return retention.main([])


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inprocess":
        inprocess_main(argv[1], argv[2], argv[3:])
        return 0
    args = parse_args(argv)
    if args.only_retention:
        return retention_main()
    local_ini, remote_ini = write_inis()
    for log in STATE.glob("*.log"):
        log.unlink()
    began = time.monotonic()
    say("N = %d; logs in %s" % (args.n, STATE))
    server = start_remote(remote_ini)
    try:
        seeding = seed_remote(remote_ini, args.n)
        results = measure(args, local_ini, remote_ini)
    finally:
        if server is not None and not args.keep_remote:
            server.terminate()
            server.wait(timeout=30)
    if not args.only_harvest:
        import gather_memory  # bench/: this script's directory
        import site_scale

        say("(4) gather memory: bench/gather_memory.py")
        results["gather_memory"] = gather_memory.measure(argparse.Namespace(
            with_100k=args.with_100k, timeout=args.timeout))
        if not args.no_site:
            say("(5) pages and actions at scale: bench/site_scale.py")
            results["site_scale"] = site_scale.measure(site_scale.parse_args(["--repeat", "3"]))
        if not args.no_retention:
            import retention

            say("(6) retention at scale: bench/retention.py")
            results["retention"] = retention.measure(retention.parse_args([]))
    results.update({
        "n": args.n, "seeding_seconds": seeding, "fetch_consumers": args.fetch_consumers,
        "mode": args.source_config,
        "total_seconds": time.monotonic() - began, "cpus": os.cpu_count(),
        "loadavg_end": os.getloadavg(), "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    })
    (STATE / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print("CKAN harvester benchmark: N = %d remote datasets, %d fetch consumer(s), "
          "source config %s, %d CPUs (load average at the end %.1f)" % (
              args.n, args.fetch_consumers, results["mode"], results["cpus"],
              results["loadavg_end"][0]))
    print()
    print(table(results))
    print()
    print("Total run time %.0f s (remote seeding %.0f s, not measured); details in %s" % (
        results["total_seconds"], seeding, STATE / "results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

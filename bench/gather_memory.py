"""Peak memory of the gather consumer against the size of the remote catalogue.

For each size N (2,000 and 20,000 by default; ``--with-100k`` adds 100,000) a fresh
``ckan harvester gather-consumer`` subprocess gathers one job of the CKAN harvester
from a fake remote CKAN of N datasets (``bench/fake_remote.py``, in a thread of
this process), and the kernel's high-water mark of its resident set (``VmHWM`` in
``/proc/<pid>/status``) is read once the job's objects are on the fetch queue.
Reported: the gather's seconds (``gather_started`` to ``gather_finished``), the
objects created (must be N, with N distinct guids), the idle and peak RSS, and the
ratio of the peaks of the largest and the smallest size. No fetch consumer runs:
the fetch queue is purged after each size.

Then the kill check (``--kill-size``, 20,000 by default; ``--no-kill-check`` skips
it): a consumer is killed (SIGKILL) once half the objects of a job exist; after
its Redis liveness key expired, ``ckan harvester run`` re-queues the job's gather
message and a fresh consumer gathers the job again: it must end with N objects and
no duplicate guid.

The local CKAN: database ``ckan_bench_gather`` (created if missing, emptied at
each run), Solr core ``ckan_bench_gather`` on the development Solr (or beside
``CKAN_SOLR_URL``), Redis db 12. Logs and ``results.json`` in
``.dev/bench-gather/``.

Standalone: ``.venv/bin/python bench/gather_memory.py [--sizes 2000,20000]
[--with-100k]``. ``bench/run.py`` may call :func:`measure` and :func:`rows`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchini  # noqa: E402 - beside this script
import fake_remote  # noqa: E402 - beside this script

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dev" / "bench-gather"
BIN = ROOT / ".venv" / "bin"
CKAN = str(BIN / "ckan")
PYTHON = str(BIN / "python")

DB = "ckan_bench_gather"
DB_URL = "postgresql://ckan_default:pass@127.0.0.1/%s" % DB
REDIS_DB = 12
SITE_ID = "ckan-bench-gather"
ORG = "bench-gather-org"
#: Seconds after which the Redis backend counts a silent consumer as dead
#: (``ckanext.harvest.mq.redis.HEARTBEAT_TTL``), plus a margin.
DEAD_AFTER = 33.0


# Polled 4 times a second: kept cheap (an index scan) while the gather runs.
JOB_SQL = """
select gather_started, gather_finished,
       (select count(*) from harvest_object where harvest_job_id = j.id)
from harvest_job j where j.id = %s
"""
GUIDS_SQL = """
select count(distinct guid) from harvest_object where harvest_job_id = %s
"""


def say(message: str) -> None:
    print("[gather-memory %s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)


def run(args: list[str], capture: bool = False) -> str:
    """Run a command (output appended to ``STATE/local.log``); its stdout if captured."""
    with open(STATE / "local.log", "a") as log:
        log.write("\n$ %s\n" % " ".join(args))
        log.flush()
        result = subprocess.run(args, cwd=ROOT, text=True, stderr=log,
                                stdout=subprocess.PIPE if capture else log)
    if result.returncode != 0:
        raise SystemExit("command failed (%d): %s; see %s" % (
            result.returncode, " ".join(args), STATE / "local.log"))
    return result.stdout or ""


# --- set-up ----------------------------------------------------------------------


def solr_url() -> str:
    url = os.environ.get("CKAN_SOLR_URL")
    base = (url.rstrip("/").rsplit("/", 1)[0] if url else
            "http://127.0.0.1:%s/solr" % os.environ.get("SOLR_PORT", "8983"))
    return base + "/" + DB


def ensure_database() -> None:
    """Create ``ckan_bench_gather`` like bench/bench.sh creates ckan_bench."""
    exists = subprocess.run(
        ["su", "postgres", "-c",
         "psql -Atqc \"select 1 from pg_database where datname='%s'\"" % DB],
        capture_output=True, text=True).stdout.strip()
    if exists != "1":
        say("creating database %s" % DB)
        subprocess.run(["su", "postgres", "-c",
                        "psql -v ON_ERROR_STOP=1 -qc \"create database %s owner "
                        "ckan_default encoding 'utf-8' template template0\"" % DB],
                       check=True)


def write_ini() -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "storage").mkdir(exist_ok=True)
    ini = STATE / "local.ini"
    ini.write_text(benchini.local_ini(
        script="gather_memory.py", purpose="the local CKAN of the gather benchmark",
        name="bench-gather", db_url=DB_URL, solr_url=solr_url(), redis_db=REDIS_DB,
        site_id=SITE_ID, site_url="http://127.0.0.1:5100", storage=STATE / "storage",
        settings="# The fake remote runs on loopback: allow it past the SSRF guard.\n"
                 "ckan.harvest.ssrf_allowed_hosts = 127.0.0.1\n"))
    return str(ini)


def _redis() -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", db=REDIS_DB)


def clear_queues() -> None:
    """Every key of this site in Redis db 12 (queues, markers, consumers)."""
    client = _redis()
    for key in client.scan_iter("ckanext-harvest:%s:*" % SITE_ID):
        client.delete(key)


def reset_local(ini: str) -> None:
    run([CKAN, "-c", ini, "db", "clean", "--yes"])
    run([CKAN, "-c", ini, "db", "init"])
    run([CKAN, "-c", ini, "db", "upgrade", "-p", "harvest"])
    clear_queues()


def task_setup(sources: dict[str, str]) -> dict[str, Any]:
    """In-process (CKAN loaded): the organisation and one source per name -> URL."""
    from ckan.plugins import toolkit

    user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]
    context = {"user": user, "ignore_auth": True}
    org = toolkit.get_action("organization_create")(dict(context), {"name": ORG})
    created = {}
    for name, url in sources.items():
        created[name] = toolkit.get_action("harvest_source_create")(dict(context), {
            "name": name, "title": name, "url": url, "source_type": "ckan",
            "owner_org": org["id"], "frequency": "MANUAL"})["id"]
    return created


def inprocess_main(ini: str, payload: str) -> None:
    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    app = make_app(load_config(ini))
    with app._wsgi_app.test_request_context():  # type: ignore[attr-defined]
        print(json.dumps(task_setup(json.loads(payload))))


# --- one gather ---------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``); 0 if gone."""
    try:
        status = Path("/proc/%d/status" % pid).read_text()
    except OSError:
        return 0
    match = re.search(r"^%s:\s+(\d+)" % field, status, re.MULTILINE)
    return int(match.group(1)) if match else 0


class Consumer:
    """One ``ckan harvester gather-consumer`` subprocess."""

    def __init__(self, ini: str, label: str) -> None:
        self.log = open(STATE / ("gather-consumer-%s.log" % label), "a")
        self.proc = subprocess.Popen(
            [CKAN, "-c", ini, "harvester", "gather-consumer"], cwd=ROOT,
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> int:
        """Wait until it listens on the gather queue; its RSS (KiB) then."""
        registry = "ckanext-harvest:%s:consumers:harvest_job_id" % SITE_ID
        client, deadline = _redis(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if any(client.exists("ckanext-harvest:%s:alive:%s" % (SITE_ID, member.decode()))
                   for member in client.smembers(registry)):
                time.sleep(0.5)
                return proc_status_kib(self.proc.pid, "VmRSS")
            time.sleep(0.2)
        raise SystemExit("the gather consumer did not start; see %s" % self.log.name)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit("the gather consumer died (status %s); see %s"
                             % (self.proc.returncode, self.log.name))

    def peak_kib(self) -> int:
        return proc_status_kib(self.proc.pid, "VmHWM")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def create_job(ini: str, source: str) -> str:
    output = run([CKAN, "-c", ini, "harvester", "job", source], capture=True)
    match = re.search(r"Job id: (\S+)", output)
    if not match:
        raise SystemExit("no job id in the output of 'harvester job': %r" % output)
    return match.group(1)


def job_state(db: Any, job_id: str) -> tuple[Any, Any, int]:
    """The job's gather_started, gather_finished and number of objects."""
    with db.cursor() as cur:
        cur.execute(JOB_SQL, (job_id,))
        return cur.fetchone()


def distinct_guids(db: Any, job_id: str) -> int:
    with db.cursor() as cur:
        cur.execute(GUIDS_SQL, (job_id,))
        return int(cur.fetchone()[0])


def fetch_queue_length() -> int:
    return int(_redis().llen("ckanext-harvest:%s:harvest_object_id" % SITE_ID))


def wait_gathered(db: Any, consumer: Consumer, job_id: str, timeout: float,
                  label: str) -> tuple[Any, Any, int]:
    """Wait for the job's gather to end and its objects to be on the fetch queue."""
    started, last_print = time.monotonic(), time.monotonic()
    while True:
        consumer.check_alive()
        state = job_state(db, job_id)
        if state[1] is not None and fetch_queue_length() >= state[2]:
            return state
        if time.monotonic() - last_print >= 15:
            say("%s: %s, %d objects" % (label, "published" if state[1] else "gathering",
                                        state[2]))
            last_print = time.monotonic()
        if time.monotonic() - started > timeout:
            raise SystemExit("%s: not gathered after %d s" % (label, timeout))
        time.sleep(0.25)


def gather_once(ini: str, db: Any, source: str, size: int,
                timeout: float) -> dict[str, Any]:
    """Gather one job of ``size`` datasets in a fresh consumer; its figures."""
    label = "N=%d" % size
    consumer = Consumer(ini, str(size))
    try:
        idle = consumer.wait_ready()
        job_id = create_job(ini, source)
        say("%s: job %s queued" % (label, job_id))
        g_start, g_end, objects = wait_gathered(db, consumer, job_id, timeout, label)
        time.sleep(0.5)
        peak = consumer.peak_kib()
    finally:
        consumer.stop()
        clear_queues()  # the fetch queue: no fetch consumer runs here
    guids = distinct_guids(db, job_id)
    result = {"size": size, "job": job_id, "objects": objects, "guids": guids,
              "seconds": (g_end - g_start).total_seconds(),
              "idle_rss_kib": idle, "peak_rss_kib": peak}
    say("%s: %d objects (%d guids) in %.1f s, RSS idle %s, peak %s" % (
        label, objects, guids, result["seconds"], mib(idle), mib(peak)))
    return result


def kill_check(ini: str, db: Any, source: str, size: int,
               timeout: float) -> dict[str, Any]:
    """SIGKILL the consumer half-way through a gather, recover, gather again."""
    label = "kill check N=%d" % size
    consumer = Consumer(ini, "kill-%d" % size)
    consumer.wait_ready()
    job_id = create_job(ini, source)
    say("%s: job %s queued; killing the consumer at %d objects" % (label, job_id,
                                                                   size // 2))
    deadline = time.monotonic() + timeout
    while job_state(db, job_id)[2] < size // 2:
        consumer.check_alive()
        if job_state(db, job_id)[1] is not None or time.monotonic() > deadline:
            consumer.stop()
            raise SystemExit("%s: the gather ended (or timed out) before half of its "
                             "objects were created" % label)
        time.sleep(0.05)
    consumer.kill()
    at_kill = job_state(db, job_id)[2]
    say("%s: killed with %d objects; waiting %d s for it to count as dead"
        % (label, at_kill, DEAD_AFTER))
    time.sleep(DEAD_AFTER)
    run([CKAN, "-c", ini, "harvester", "run"])  # re-queues the dead consumer's message
    second = Consumer(ini, "kill-%d-again" % size)
    try:
        _, _, objects = wait_gathered(db, second, job_id, timeout, label)
    finally:
        second.stop()
        clear_queues()
    guids = distinct_guids(db, job_id)
    ok = objects == size and guids == size
    say("%s: %d objects, %d distinct guids after the restart: %s" % (
        label, objects, guids, "ok" if ok else "WRONG"))
    return {"size": size, "job": job_id, "objects_at_kill": at_kill,
            "objects": objects, "guids": guids, "ok": ok}


# --- the whole measure ------------------------------------------------------------------


#: Options :func:`measure` reads from its ``args`` (any object; missing ones
#: take these values, so bench/run.py may pass its own namespace).
DEFAULTS: dict[str, Any] = {"sizes": "2000,20000", "with_100k": False,
                            "kill_size": 20000, "no_kill_check": False,
                            "timeout": 3600.0}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Peak RSS of the gather consumer.")
    parser.add_argument("--sizes", default=DEFAULTS["sizes"],
                        help="remote catalogue sizes, comma-separated (2000,20000)")
    parser.add_argument("--with-100k", action="store_true", help="add N = 100,000")
    parser.add_argument("--kill-size", type=int, default=DEFAULTS["kill_size"],
                        help="size of the kill check (20000)")
    parser.add_argument("--no-kill-check", action="store_true",
                        help="skip the kill-half-way check")
    parser.add_argument("--timeout", type=float, default=DEFAULTS["timeout"],
                        help="seconds allowed for one gather (3600)")
    return parser.parse_args(argv)


def _sizes(args: argparse.Namespace) -> list[int]:
    sizes = [int(size) for size in str(getattr(args, "sizes", DEFAULTS["sizes"])).split(",")
             if size.strip()]
    if getattr(args, "with_100k", False) and 100000 not in sizes:
        sizes.append(100000)
    return sizes


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` (see :func:`parse_args`); its figures."""
    import psycopg2

    sizes = _sizes(args)
    kill_size = (None if getattr(args, "no_kill_check", False)
                 else int(getattr(args, "kill_size", DEFAULTS["kill_size"])))
    timeout = float(getattr(args, "timeout", DEFAULTS["timeout"]))
    ensure_database()
    ini = write_ini()
    say("resetting the local database %s" % DB)
    reset_local(ini)
    remote = fake_remote.serve()
    try:
        sources = {"gather-%d" % size: remote.url(size) for size in sizes}
        if kill_size:
            sources["gather-kill-%d" % kill_size] = remote.url(kill_size, "kill")
        payload = json.dumps(sources)
        json.loads(run([PYTHON, __file__, "--inprocess", ini, payload],
                       capture=True).strip().splitlines()[-1])
        db = psycopg2.connect(DB_URL)
        db.autocommit = True
        try:
            results: dict[str, Any] = {"sizes": [
                gather_once(ini, db, "gather-%d" % size, size, timeout)
                for size in sizes]}
            if kill_size:
                results["kill"] = kill_check(ini, db, "gather-kill-%d" % kill_size,
                                             kill_size, timeout)
        finally:
            db.close()
    finally:
        remote.shutdown()
        remote.server_close()
    peaks = {r["size"]: r["peak_rss_kib"] for r in results["sizes"]}
    smallest = min(peaks) if peaks else 0
    results["ratios"] = {"%d/%d" % (size, smallest): peaks[size] / peaks[smallest]
                         for size in sorted(peaks) if size != smallest}
    (STATE / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def mib(kib: int) -> str:
    return "%.0f MiB" % (kib / 1024.0)


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of ``bench/run.py``'s table: measure, datasets, seconds, datasets/s,
    outcome."""
    table: list[tuple[str, ...]] = []
    for r in result["sizes"]:
        good = r["objects"] == r["size"] == r["guids"]
        table.append((
            "(6) gather only, N = %d (peak RSS)" % r["size"], str(r["objects"]),
            "%.1f" % r["seconds"],
            "%.1f" % (r["objects"] / r["seconds"] if r["seconds"] else 0.0),
            "peak %s (idle %s)%s" % (mib(r["peak_rss_kib"]), mib(r["idle_rss_kib"]),
                                     "" if good else "; WRONG object count")))
    for sizes, ratio in result.get("ratios", {}).items():
        table.append(("ratio of the gather peaks, N = %s" % sizes.replace("/", " / N = "),
                      "", "", "%.2f" % ratio, "flat is 1.00 (+/- 0.20 accepted)"))
    if "kill" in result:
        k = result["kill"]
        table.append(("(7) gather killed half-way, then re-run", str(k["objects"]), "",
                      "", "%s: %d objects, %d distinct guids (killed at %d)" % (
                          "ok" if k["ok"] else "WRONG", k["objects"], k["guids"],
                          k["objects_at_kill"])))
    return table


def format_table(table: list[tuple[str, ...]]) -> str:
    header = ("measure", "datasets", "seconds", "datasets/s", "outcome")
    lines = [header] + table
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--inprocess":
        inprocess_main(argv[1], argv[2])
        return 0
    result = measure(parse_args(argv))
    print(format_table(rows(result)))
    return 0 if all(r["objects"] == r["size"] == r["guids"] for r in result["sizes"]) \
        and result.get("kill", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Retention at scale: a big harvest database cut down by ``clean-jobs``, timed.

The site (database ``ckan_bench_retention``, Redis db 11): SOURCES harvest
sources sharing JOBS jobs (100 a source by default), OBJECTS harvest objects
spread evenly over the jobs, each with a content-hash extra; 2 % of the
objects errored (one object error each), a gather error every tenth job. The
objects of each source's latest finished job are current; the last job of
every fourth source is Running. Everything is generated with ``INSERT ...
SELECT generate_series`` in PostgreSQL (no rows through Python), after ``ckan
db init`` and ``ckan db upgrade -p harvest``, at every run.

Then ``ckan harvester clean-jobs --keep KEEP`` runs as a subprocess; measured:
its wall time, its peak RSS (``ru_maxrss`` of the child, from ``wait4``), and
the rows of each harvest table before and after. See bench/README.rst,
"Retention at scale".

    .venv/bin/python bench/retention.py [--sources 20 --jobs 2000
        --objects 1000000 --keep 5]

``measure(args)`` and ``rows(result)`` are the interface bench/run.py uses.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import benchini  # beside this script
import site_scale

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dev" / "bench"
CKAN = str(ROOT / ".venv" / "bin" / "ckan")
DB = "ckan_bench_retention"
DB_URL = "postgresql://ckan_default:pass@127.0.0.1/" + DB
REDIS_DB = 11
TABLES = ("harvest_job", "harvest_object", "harvest_object_extra", "harvest_object_error",
          "harvest_gather_error")


def say(message: str) -> None:
    print("[retention %s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)


def write_ini() -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "retention.ini"
    path.write_text(benchini.local_ini(
        script="retention.py", purpose='the site of "retention at scale"',
        name="bench-retention", db_url=DB_URL, solr_url=site_scale.solr_url(),
        redis_db=REDIS_DB, site_id="ckan-bench-retention",
        site_url="http://127.0.0.1:5103", storage=STATE / "retention-storage",
        logging=benchini.WARNING_LOGGING))
    return str(path)


#: The generation, in order; ``%(name)s`` are the sizes (integers only).
GENERATION = [
    ("empty the harvest tables", "TRUNCATE harvest_object_error, harvest_object_extra, "
     "harvest_object, harvest_gather_error, harvest_job, harvest_source"),
    ("sources", """
        INSERT INTO harvest_source (id, url, title, description, config, created, type,
                                    active, user_id, publisher_id, frequency)
        SELECT 'src-' || s, 'http://remote-' || s || '.example.org/', 'Source ' || s,
               '', '', now(), 'ckan', true, '', '', 'MANUAL'
        FROM generate_series(0, %(sources)s - 1) s"""),
    # Job j belongs to source j %% sources; its rank in its source is j / sources.
    ("jobs", """
        INSERT INTO harvest_job (id, created, gather_started, gather_finished, finished,
                                 source_id, status)
        SELECT 'job-' || j, t, t, t + interval '5 minutes', t + interval '30 minutes',
               'src-' || (j %% %(sources)s),
               CASE WHEN j / %(sources)s = %(per_source)s - 1 AND (j %% %(sources)s) %% 4 = 0
                    THEN 'Running' ELSE 'Finished' END
        FROM generate_series(0, %(jobs)s - 1) j,
             LATERAL (SELECT now() - (%(per_source)s - j / %(sources)s) * interval '1 day'
                      AS t) c"""),
    ("objects", """
        INSERT INTO harvest_object (id, guid, current, gathered, fetch_started, content,
                                    fetch_finished, import_started, import_finished, state,
                                    retry_times, harvest_job_id, harvest_source_id,
                                    report_status)
        SELECT 'obj-' || o, 'guid-' || (o %% %(per_job)s), j.id = l.latest, now(), now(),
               '{"id": "remote-' || (o %% %(per_job)s) || '", "title": "A dataset of the '
               || 'bench", "notes": "Generated."}', now(), now(), now(),
               CASE WHEN o %% 50 = 0 THEN 'ERROR' ELSE 'COMPLETE' END, 0, j.id,
               j.source_id,
               CASE WHEN o %% 50 = 0 THEN 'errored' ELSE 'updated' END
        FROM generate_series(0, %(objects)s - 1) o
        JOIN harvest_job j ON j.id = 'job-' || (o / %(per_job)s)
        JOIN (SELECT source_id, (array_agg(id ORDER BY created DESC))[1] AS latest
              FROM harvest_job WHERE status = 'Finished' GROUP BY source_id) l
          ON l.source_id = j.source_id"""),
    ("object extras", """
        INSERT INTO harvest_object_extra (id, harvest_object_id, key, value)
        SELECT 'x-' || o, 'obj-' || o, 'harvest_content_hash', md5(o::text)
        FROM generate_series(0, %(objects)s - 1) o"""),
    ("object errors", """
        INSERT INTO harvest_object_error (id, harvest_object_id, message, stage, created)
        SELECT 'e-' || o, 'obj-' || o, 'Validation error: field ' || (o %% 7) || ' missing',
               'Import', now()
        FROM generate_series(0, %(objects)s - 1, 50) o"""),
    ("gather errors", """
        INSERT INTO harvest_gather_error (id, harvest_job_id, message, created)
        SELECT 'g-' || j, 'job-' || j, 'Remote page timed out', now()
        FROM generate_series(0, %(jobs)s - 1, 10) j"""),
    ("analyze", "ANALYZE"),
]


def ckan_env() -> dict[str, str]:
    """The environment of the ``ckan`` commands: CKAN's variables set to this
    site, so that none left in the environment points them at another one."""
    env = dict(os.environ)
    env.update({"CKAN_SQLALCHEMY_URL": DB_URL, "CKAN_SOLR_URL": site_scale.solr_url(),
                "CKAN_REDIS_URL": "redis://127.0.0.1:6379/%d" % REDIS_DB})
    return env


def ensure_schema(db: Any, ini: str) -> None:
    with db.cursor() as cur:
        cur.execute("select to_regclass('public.harvest_source') is not null")
        found = cur.fetchone()[0]
    db.commit()
    if found:
        return
    say("ckan db init, ckan db upgrade -p harvest")
    for command in (["db", "init"], ["db", "upgrade", "-p", "harvest"]):
        subprocess.run([CKAN, "-c", ini] + command, check=True, stdout=subprocess.DEVNULL,
                       env=ckan_env())


def sizes(args: argparse.Namespace) -> dict[str, int]:
    return {"sources": args.sources, "jobs": args.jobs, "objects": args.objects,
            "per_source": args.jobs // args.sources, "per_job": args.objects // args.jobs}


def generate(db: Any, args: argparse.Namespace) -> dict[str, float]:
    timings = {}
    with db.cursor() as cur:
        for label, statement in GENERATION:
            started = time.perf_counter()
            cur.execute(statement % sizes(args))
            db.commit()
            timings[label] = time.perf_counter() - started
            say("%s: %.1f s" % (label, timings[label]))
    return timings


def count_rows(db: Any) -> dict[str, int]:
    counts = {}
    with db.cursor() as cur:
        for table in TABLES:
            cur.execute("SELECT count(*) FROM " + table)
            counts[table] = cur.fetchone()[0]
    db.commit()
    return counts


def table_bytes(db: Any) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT sum(pg_total_relation_size(t)) FROM unnest(%s::regclass[]) t",
                    (list(TABLES),))
        total = cur.fetchone()[0]
    db.commit()
    return int(total)


def clean(ini: str, keep: int, dry_run: bool = False) -> dict[str, Any]:
    """Run ``clean-jobs`` in a child process: its seconds, peak RSS and output."""
    command = [CKAN, "-c", ini, "harvester", "clean-jobs", "--keep", str(keep)]
    if dry_run:
        command.append("--dry-run")
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ckan_env())
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    output = child.stdout.read() if child.stdout else ""
    errors = child.stderr.read() if child.stderr else ""
    if child.returncode:
        raise RuntimeError("clean-jobs failed (%s): %s" % (child.returncode, errors))
    return {"seconds": seconds, "peak_rss_kib": usage.ru_maxrss, "output": output.strip()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the site, clean it (a dry run first), count before and after."""
    import psycopg2

    site_scale.ensure_database(DB)
    ini = write_ini()
    db = psycopg2.connect(DB_URL)
    try:
        ensure_schema(db, ini)
        result: dict[str, Any] = {"sizes": sizes(args), "keep": args.keep,
                                  "generation_seconds": generate(db, args)}
        result["before"], result["bytes_before"] = count_rows(db), table_bytes(db)
        say("before: %s" % result["before"])
        result["dry_run"] = clean(ini, args.keep, dry_run=True)
        say("dry run: %.1f s, %s" % (result["dry_run"]["seconds"],
                                     result["dry_run"]["output"]))
        result["clean"] = clean(ini, args.keep)
        say("clean-jobs: %.1f s, peak RSS %d MiB: %s" % (
            result["clean"]["seconds"], result["clean"]["peak_rss_kib"] // 1024,
            result["clean"]["output"]))
        result["after"], result["bytes_after"] = count_rows(db), table_bytes(db)
        say("after: %s" % result["after"])
    finally:
        db.close()
    return result


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows."""
    before, after = result["before"], result["after"]
    out = [("generation (INSERT ... SELECT)", "%.0f s" % sum(
        result["generation_seconds"].values()), "not timed as part of the clean")]
    for table in TABLES:
        out.append((table, "%d -> %d" % (before[table], after[table]), "rows"))
    out += [
        ("clean-jobs --keep %d --dry-run" % result["keep"],
         "%.1f s" % result["dry_run"]["seconds"],
         "peak RSS %d MiB" % (result["dry_run"]["peak_rss_kib"] // 1024)),
        ("clean-jobs --keep %d" % result["keep"], "%.1f s" % result["clean"]["seconds"],
         "peak RSS %d MiB" % (result["clean"]["peak_rss_kib"] // 1024)),
        ("harvest tables on disk (before VACUUM)", "%d MiB" % (result["bytes_before"] >> 20),
         "after: %d MiB (the space is reused, VACUUM FULL returns it)"
         % (result["bytes_after"] >> 20)),
    ]
    return out


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Retention of harvest jobs at scale.")
    parser.add_argument("--sources", type=int, default=20, help="harvest sources (20)")
    parser.add_argument("--jobs", type=int, default=2000,
                        help="jobs, spread evenly over the sources (2000)")
    parser.add_argument("--objects", type=int, default=1000000,
                        help="objects, spread evenly over the jobs (1000000)")
    parser.add_argument("--keep", type=int, default=5,
                        help="clean-jobs --keep: jobs kept per source (5)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    (STATE / "retention.json").write_text(json.dumps(result, indent=2, default=str))
    print()
    print("Retention at scale: %(sources)d sources, %(jobs)d jobs, %(objects)d objects"
          % result["sizes"] + "; %d CPUs, load average %.1f" % (
              os.cpu_count() or 0, os.getloadavg()[0]))
    print()
    for figure, value, note in rows(result):
        print("%-42s %-22s %s" % (figure, value, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())

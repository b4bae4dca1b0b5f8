"""Pages and actions at scale: a large generated site, timed.

The site (database ``ckan_bench_site``, Solr core ``ckan_bench_site``): SOURCES
harvest sources, one of them ("the big source", ``scale-source-0000``) with
JOBS jobs, the latest of which ("the big job") has OBJECTS harvest objects
(and as many datasets for its non-errored objects) and ERRORS object errors.
It is written with SQL ``COPY`` after ``ckan db init`` and ``ckan db upgrade
-p harvest``, not through the actions; only the organisation and the sysadmin
are made with actions. A site that already has these sizes is reused.

Then each of the eight measures (four pages through a Flask test client as a
sysadmin, four actions with ``ignore_auth``) is run once to warm up and
REPEAT times, and the median and the maximum are printed against the 1 s
budget. See bench/README.rst, "Pages and actions at scale".

    .venv/bin/python bench/site_scale.py [--sources 1000 --jobs 5000
        --objects 100000 --errors 20000 --repeat 5]

``measure(args)`` and ``rows(result)`` are the interface bench/run.py uses.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import benchini  # beside this script

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dev" / "bench"
CKAN = str(ROOT / ".venv" / "bin" / "ckan")
DB = "ckan_bench_site"
DB_URL = "postgresql://ckan_default:pass@127.0.0.1/" + DB
SITE_ID = "ckan-bench-site"
REDIS_DB = 12
ORG, ADMIN = "scale-org", "scale-admin"
BIG_SOURCE = "scale-source-0000"
BUDGET = 1.0
NAMESPACE = uuid.UUID("6f1c1d2e-6a43-4c0e-9f4e-2b7f5d0c5a11")


#: Object error messages: a few frequent ones, many rare ones.
MESSAGES = ["Validation error: field {} is missing".format(n) for n in range(40)]


def say(message: str) -> None:
    print("[site-scale %s] %s" % (time.strftime("%H:%M:%S"), message), flush=True)


def uid(*parts: Any) -> str:
    """A stable id: the same site gets the same ids."""
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


# --- the database and the configuration --------------------------------------------


def ensure_database(name: str = DB) -> None:
    """Create the database ``name`` (owner ckan_default) if it does not exist."""
    query = "select 1 from pg_database where datname='%s'" % name
    found = subprocess.run(["su", "postgres", "-c", 'psql -Atqc "%s"' % query],
                           capture_output=True, text=True, check=True).stdout.strip()
    if found != "1":
        say("creating database %s" % name)
        subprocess.run(["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -qc \"create "
                        "database %s owner ckan_default encoding 'utf-8' template "
                        "template0\"" % name], check=True)


def solr_url() -> str:
    """The core ``ckan_bench_site`` of the dev Solr, or of the real Solr of
    ``CKAN_SOLR_URL`` (which must then have that core)."""
    url = os.environ.get("CKAN_SOLR_URL")
    base = url.rstrip("/").rsplit("/", 1)[0] if url else "http://127.0.0.1:%s/solr" % (
        os.environ.get("SOLR_PORT", "8983"))
    return base + "/" + DB


#: CKAN reads these before the ini file: they would point the benchmark at
#: another site (whose harvest tables it empties).
_OVERRIDES = ("CKAN_SQLALCHEMY_URL", "CKAN_SOLR_URL", "CKAN_REDIS_URL", "CKAN_SITE_ID",
              "CKAN_INI", "CKAN_CONFIG")


def _drop_overrides() -> None:
    for name in _OVERRIDES:
        os.environ.pop(name, None)


def write_ini() -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "site_scale.ini"
    path.write_text(benchini.local_ini(
        script="site_scale.py", purpose='the site of "pages and actions at scale"',
        name="bench-site", db_url=DB_URL, solr_url=solr_url(), redis_db=REDIS_DB,
        site_id=SITE_ID, site_url="http://127.0.0.1:5102", storage=STATE / "site-storage",
        settings="WTF_CSRF_ENABLED = false\n"))
    return str(path)


def ensure_schema(db: Any, ini: str) -> None:
    with db.cursor() as cur:
        cur.execute("select to_regclass('public.harvest_source') is not null")
        if cur.fetchone()[0]:
            return
    say("ckan db init, ckan db upgrade -p harvest")
    for command in (["db", "init"], ["db", "upgrade", "-p", "harvest"]):
        subprocess.run([CKAN, "-c", ini] + command, check=True, stdout=subprocess.DEVNULL)


# --- generation with COPY ----------------------------------------------------------


def _copy(db: Any, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY rows (tuples of str/None/bool/int/datetime) into a table."""
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(_cell(value) for value in row))
        buffer.write("\n")
        count += 1
    buffer.seek(0)
    with db.cursor() as cur:
        cur.copy_expert("COPY %s (%s) FROM STDIN" % (table, ", ".join(columns)), buffer)
    return count


def _cell(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


PACKAGE_COLUMNS = ("id", "name", "title", "url", "notes", "state", "type", "owner_org",
                   "private", "metadata_created", "metadata_modified", "creator_user_id",
                   "extras")


def _source_packages(n: int, org_id: str, user_id: str, now: datetime.datetime) -> Any:
    extras = json.dumps({"source_type": "ckan", "frequency": "MANUAL", "config": ""})
    for i in range(n):
        created = now - datetime.timedelta(days=n - i)
        yield (uid("source", i), "scale-source-%04d" % i, "Scale source %04d" % i,
               "http://remote-%04d.example.org/" % i, "Generated source %d." % i,
               "active", "harvest", org_id, False, created, created, user_id, extras)


def _sources(n: int, now: datetime.datetime) -> Any:
    for i in range(n):
        yield (uid("source", i), "http://remote-%04d.example.org/" % i,
               "Scale source %04d" % i, "", "", now - datetime.timedelta(days=n - i),
               "ckan", True, "", "", "MANUAL")


def _jobs(args: argparse.Namespace, now: datetime.datetime) -> Any:
    """JOBS jobs of the big source (the big job last), one job for each other source."""
    big = uid("source", 0)
    for j in range(args.jobs):
        created = now - datetime.timedelta(hours=args.jobs - j)
        yield (uid("job", 0, j), created, created, created + datetime.timedelta(minutes=5),
               created + datetime.timedelta(minutes=30), big, "Finished")
    for i in range(1, args.sources):
        created = now - datetime.timedelta(hours=i)
        yield (uid("job", i, 0), created, created, created + datetime.timedelta(minutes=1),
               created + datetime.timedelta(minutes=2), uid("source", i), "Finished")


def big_job_id(args: argparse.Namespace) -> str:
    return uid("job", 0, args.jobs - 1)


def _errored(i: int, args: argparse.Namespace) -> bool:
    """Objects with errors: the first ``errored_objects`` ones."""
    return i < errored_objects(args)


def errored_objects(args: argparse.Namespace) -> int:
    """Objects carrying the ERRORS errors (three quarters as many: some have two)."""
    return min(args.objects, max(1 if args.errors else 0, args.errors * 3 // 4))


def _datasets(args: argparse.Namespace, org_id: str, user_id: str,
              now: datetime.datetime) -> Any:
    for i in range(errored_objects(args), args.objects):
        yield (uid("dataset", i), "scale-dataset-%06d" % i, "Scale dataset %06d" % i,
               None, None, "active", "dataset", org_id, False, now, now, user_id, None)


def _objects(args: argparse.Namespace, now: datetime.datetime) -> Any:
    statuses = ("added", "updated", "not modified", "not modified")
    job, source = big_job_id(args), uid("source", 0)
    for i in range(args.objects):
        errored = _errored(i, args)
        yield (uid("object", i), "guid-%06d" % i, not errored, now, now,
               '{"id": "remote-%06d"}' % i, now, now, now,
               "ERROR" if errored else "COMPLETE", 0, job, source,
               None if errored else uid("dataset", i),
               "errored" if errored else statuses[i % len(statuses)])


def _object_errors(args: argparse.Namespace, now: datetime.datetime) -> Any:
    errored = errored_objects(args)
    for e in range(args.errors):
        # Skewed: half the errors have one of three messages, a few have rare ones.
        trailing_zeros = ((e + 1) & -(e + 1)).bit_length() - 1
        message = MESSAGES[min(len(MESSAGES) - 1, trailing_zeros * 3 + e % 3)]
        yield (uid("error", e), uid("object", e % errored), message, "Import",
               e % 50 or None, now)


def _gather_errors(args: argparse.Namespace, now: datetime.datetime) -> Any:
    for g in range(5):
        yield (uid("gather", g), big_job_id(args), "Gather error %d: remote page "
               "timed out" % g, now)


def generate(db: Any, args: argparse.Namespace, org_id: str, user_id: str) -> dict[str, float]:
    """Empty the harvest tables and the generated packages, then COPY the site."""
    now = datetime.datetime(2026, 11, 1, 12, 0, 0)
    timings: dict[str, float] = {}
    with db.cursor() as cur:
        cur.execute("TRUNCATE harvest_object_error, harvest_object_extra, harvest_object, "
                    "harvest_gather_error, harvest_job, harvest_source")
        cur.execute("DELETE FROM package WHERE name LIKE 'scale-%%'")
    steps: list[tuple[str, str, tuple[str, ...], Any]] = [
        ("source packages", "package", PACKAGE_COLUMNS,
         _source_packages(args.sources, org_id, user_id, now)),
        ("sources", "harvest_source", ("id", "url", "title", "description", "config",
                                       "created", "type", "active", "user_id",
                                       "publisher_id", "frequency"),
         _sources(args.sources, now)),
        ("jobs", "harvest_job", ("id", "created", "gather_started", "gather_finished",
                                 "finished", "source_id", "status"), _jobs(args, now)),
        ("datasets", "package", PACKAGE_COLUMNS, _datasets(args, org_id, user_id, now)),
        ("objects", "harvest_object", (
            "id", "guid", "current", "gathered", "fetch_started", "content",
            "fetch_finished", "import_started", "import_finished", "state", "retry_times",
            "harvest_job_id", "harvest_source_id", "package_id", "report_status"),
         _objects(args, now)),
        ("object errors", "harvest_object_error", (
            "id", "harvest_object_id", "message", "stage", "line", "created"),
         _object_errors(args, now)),
        ("gather errors", "harvest_gather_error", (
            "id", "harvest_job_id", "message", "created"), _gather_errors(args, now)),
    ]
    for label, table, columns, rows in steps:
        started = time.perf_counter()
        count = _copy(db, table, columns, rows)
        timings[label] = time.perf_counter() - started
        say("COPY %d %s in %.1f s" % (count, label, timings[label]))
    with db.cursor() as cur:
        cur.execute("ANALYZE")
    db.commit()
    return timings


def site_sizes(db: Any, args: argparse.Namespace) -> dict[str, int]:
    """The sizes of the site in the database (zeros when it is not generated)."""
    big = uid("source", 0)
    queries = {
        "sources": "select count(*) from harvest_source",
        "jobs": "select count(*) from harvest_job where source_id = '%s'" % big,
        "objects": "select count(*) from harvest_object where harvest_job_id = '%s'"
                   % big_job_id(args),
        "errors": "select count(*) from harvest_object_error e join harvest_object o on "
                  "o.id = e.harvest_object_id where o.harvest_job_id = '%s'"
                  % big_job_id(args),
    }
    sizes = {}
    with db.cursor() as cur:
        for key, query in queries.items():
            cur.execute(query)
            sizes[key] = cur.fetchone()[0]
    db.commit()
    return sizes


# --- inside CKAN ------------------------------------------------------------------


def _site_user_context() -> dict[str, Any]:
    from ckan.plugins import toolkit

    user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]
    return {"user": user, "ignore_auth": True}


def ensure_org_and_admin() -> tuple[str, str]:
    """The organisation of the sources and the sysadmin of the pages (actions)."""
    from ckan import model
    from ckan.plugins import toolkit

    try:
        org = toolkit.get_action("organization_show")(_site_user_context(), {"id": ORG})
    except toolkit.ObjectNotFound:
        org = toolkit.get_action("organization_create")(
            _site_user_context(), {"name": ORG, "title": "Scale organisation"})
    user = model.User.get(ADMIN)
    if user is None:
        toolkit.get_action("user_create")(_site_user_context(), {
            "name": ADMIN, "email": "scale-admin@example.org",
            "password": "scale-admin-password"})
        user = model.User.get(ADMIN)
        user.sysadmin = True
        model.Session.commit()
    return org["id"], user.id


def indexed_sources() -> int:
    from ckan.plugins import toolkit

    result = toolkit.get_action("package_search")(
        _site_user_context(), {"fq": "+dataset_type:harvest", "rows": 0,
                               "include_private": True})
    return int(result["count"])


def index_sources(expected: int, force: bool = False) -> Optional[float]:
    """Index the source datasets (``harvest_sources_reindex``) when they are not."""
    from ckan.lib import search
    from ckan.plugins import toolkit

    if indexed_sources() == expected and not force:
        return None
    say("indexing %d sources (harvest_sources_reindex)" % expected)
    started = time.perf_counter()
    search.clear_all()
    toolkit.get_action("harvest_sources_reindex")(_site_user_context(), {})
    seconds = time.perf_counter() - started
    say("indexed %d sources in %.1f s" % (indexed_sources(), seconds))
    return seconds


def _timed(call: Callable[[], Any], repeat: int) -> dict[str, Any]:
    size = call()  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        size = call()
        times.append(time.perf_counter() - started)
    return {"median": statistics.median(times), "max": max(times), "times": times,
            "size": size}


def _page(client: Any, url: str, token: str) -> Callable[[], str]:
    def get() -> str:
        response = client.get(url, headers={"Authorization": token})
        if response.status_code != 200:
            raise RuntimeError("%s answered %s" % (url, response.status_code))
        return "%d kB" % (len(response.data) // 1024)
    return get


def _action(name: str, data_dict: dict[str, Any]) -> Callable[[], str]:
    from ckan.plugins import toolkit

    def call() -> str:
        result = toolkit.get_action(name)({"ignore_auth": True, "user": ADMIN},
                                          dict(data_dict))
        if isinstance(result, dict):
            return "%d objects with errors" % len(result.get("object_errors") or {})
        return "%d items" % len(result)
    return call


def measures(args: argparse.Namespace, client: Any,
             token: str) -> list[tuple[str, Callable[[], str]]]:
    job = big_job_id(args)
    source_id = uid("source", 0)
    return [
        ("page /harvest/ (source list)", _page(client, "/harvest/", token)),
        ("page /harvest/<source>", _page(client, "/harvest/" + BIG_SOURCE, token)),
        ("page /harvest/<source>/job",
         _page(client, "/harvest/%s/job" % BIG_SOURCE, token)),
        ("page /harvest/<source>/job/<job>",
         _page(client, "/harvest/%s/job/%s" % (BIG_SOURCE, job), token)),
        ("action harvest_source_list", _action("harvest_source_list", {})),
        ("action harvest_job_list", _action("harvest_job_list", {"source_id": source_id})),
        ("action harvest_job_report", _action("harvest_job_report", {"id": job})),
        ("action harvest_object_list",
         _action("harvest_object_list", {"source_id": source_id})),
    ]


def _in_ckan(args: argparse.Namespace, ini: str, db: Any) -> dict[str, Any]:
    from ckan import model
    from ckan.plugins import toolkit
    from ckan.tests.helpers import CKANTestApp

    result: dict[str, Any] = {}
    app = CKANTestApp(_make_app(ini))
    with app.flask_app.test_request_context():
        org_id, user_id = ensure_org_and_admin()
        wanted = {k: getattr(args, k) for k in ("sources", "jobs", "objects", "errors")}
        sizes = site_sizes(db, args)
        if sizes != wanted or args.regenerate:
            say("generating the site (found %s)" % sizes)
            result["generation_seconds"] = generate(db, args, org_id, user_id)
            model.Session.remove()
        else:
            say("reusing the site: %s" % sizes)
        result["indexing_seconds"] = index_sources(args.sources, args.reindex)
        token = toolkit.get_action("api_token_create")(
            _site_user_context(), {"user": ADMIN, "name": "site-scale"})["token"]
    timings = {}
    for label, call in measures(args, app.client, token):
        with app.flask_app.test_request_context():
            timings[label] = _timed(call, args.repeat)
            model.Session.remove()
        say("%-36s median %.3f s, max %.3f s (%s)" % (
            label, timings[label]["median"], timings[label]["max"], timings[label]["size"]))
    result["timings"] = timings
    return result


def _make_app(ini: str) -> Any:
    from ckan.cli import load_config
    from ckan.config.middleware import make_app

    return make_app(load_config(ini))


# --- the interface of bench/run.py -------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Make sure the site exists with the sizes of ``args``, then time the measures.

    :returns: ``{'sizes', 'timings': {label: {'median', 'max', 'times',
        'size'}}, 'generation_seconds', 'indexing_seconds', 'repeat'}``
    """
    import psycopg2

    ensure_database()
    ini = write_ini()
    _drop_overrides()
    db = psycopg2.connect(DB_URL)
    try:
        ensure_schema(db, ini)
        result = _in_ckan(args, ini, db)
    finally:
        db.close()
    result["sizes"] = {k: getattr(args, k) for k in ("sources", "jobs", "objects", "errors")}
    result["repeat"] = args.repeat
    return result


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table rows: (measure, median s, max s, answer, verdict against 1 s)."""
    out = []
    for label, timing in result["timings"].items():
        verdict = "pass" if timing["median"] < BUDGET else "FAIL"
        out.append((label, "%.3f" % timing["median"], "%.3f" % timing["max"],
                    str(timing["size"]), verdict))
    return out


def table(result: dict[str, Any]) -> str:
    header = ("measure", "median s", "max s", "answer", "< 1 s")
    body = [header] + rows(result)
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 3) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Harvest pages and actions at scale.")
    parser.add_argument("--sources", type=int, default=1000, help="harvest sources (1000)")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs of the big source (5000)")
    parser.add_argument("--objects", type=int, default=100000,
                        help="objects of the big job (100000)")
    parser.add_argument("--errors", type=int, default=20000,
                        help="object errors of the big job (20000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs of each measure, after one warm-up (5)")
    parser.add_argument("--regenerate", action="store_true",
                        help="generate the site again even if its sizes match")
    parser.add_argument("--reindex", action="store_true",
                        help="index the sources again even if they are indexed")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    (STATE / "site_scale.json").write_text(json.dumps(result, indent=2, default=str))
    print()
    print("Harvest pages and actions at scale: %(sources)d sources, %(jobs)d jobs of one "
          "source, %(objects)d objects and %(errors)d object errors in one job" %
          result["sizes"])
    print("(median and max of %d runs after a warm-up; %d CPUs, load average %.1f)" % (
        args.repeat, os.cpu_count() or 0, os.getloadavg()[0]))
    print()
    print(table(result))
    return 0 if all(row[-1] == "pass" for row in rows(result)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The harness of the end-to-end tests: a private harvesting site running real
``ckan harvester`` processes, and a CKAN web server in a subprocess.

Used by ``test_end_to_end.py``, ``test_crash_safety.py``, the two-CKAN tests and the
browser tests. Each :class:`HarvestSite` has a private ``ckan.site_id`` (so its
queues collide with nobody's) and a generated ini that uses the database, index and
Redis of the test process.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pika
import pytest
import redis
import requests
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[2]
CKAN_EXECUTABLE = Path(sys.executable).with_name("ckan")
BACKENDS = ["redis", "amqp"]

#: Bounds of single subprocess commands (``source create``, ``job``, ``run``) and of
#: a consumer's clean shutdown, generous for a slow, loaded machine.
COMMAND_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
#: Seconds between two ``ckan harvester run`` while waiting for a job.
RUN_INTERVAL = 3.0

#: Environment variables that would override the generated ini (site id, queues).
_OVERRIDING_ENV = ("CKAN_SITE_ID", "CKAN_INI", "CKAN_CONFIG")

_LOGGING = """
[loggers]
keys = root, ckan, ckanext

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_ckan]
qualname = ckan
handlers =
level = WARNING

[logger_ckanext]
qualname = ckanext
handlers =
level = INFO

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(process)d %(levelname)-5.5s [%(name)s] %(message)s
"""


# --- the harness ---------------------------------------------------------------------


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class Consumer:
    """A ``ckan harvester gather-consumer`` / ``fetch-consumer`` process, restartable.

    Output goes to one log file per start (``<kind>-<n>.log`` in the site directory).
    """

    def __init__(self, site: HarvestSite, kind: str, name: str = "") -> None:
        assert kind in ("gather", "fetch")
        self.site = site
        self.kind = kind
        #: Names the log files (``<name>-<n>.log``): several consumers of a kind
        #: need names of their own.
        self.name = name or kind
        self.starts = 0
        self.kills = 0
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log_path: Optional[Path] = None

    def start(self) -> None:
        assert not self.running, f"{self.name} consumer already running"
        self.starts += 1
        self.log_path = self.site.directory / f"{self.name}-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.site.command(f"{self.kind}-consumer"), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env=dict(self.site.env, **self.extra_env()),
            )

    def extra_env(self) -> dict[str, str]:
        """Environment variables of this consumer only (on top of the site's)."""
        return {}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Fail when the process ended by itself (it should run until stopped)."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self.kind} consumer exited by itself with status "
                        f"{self.process.returncode}:\n{self.log_tail()}")

    def kill9(self) -> None:
        """``kill -9``: no cleanup at all, whatever the process was doing."""
        assert self.running, f"{self.kind} consumer is not running"
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self.kills += 1
        self.process = None

    def stop(self) -> None:
        """Terminate (SIGTERM, a clean stop), then kill if that takes too long."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.log_path else "<never started>"


class HarvestSite:
    """A private harvesting site: ini, subprocess environment, queues, SQL access."""

    def __init__(self, directory: Path, backend: str, label: str,
                 options: Optional[dict[str, str]] = None) -> None:
        """:param options: more ``[app:main]`` settings of the generated ini"""
        self.directory = directory
        self.backend = backend
        self.site_id = f"h11-{label}-{backend}-{secrets.token_hex(4)}"
        config = toolkit.config
        self.db_url = config["sqlalchemy.url"]
        self.redis_url = config["ckan.redis.url"]
        self.ini = directory / "harvest.ini"
        self.ini.write_text(
            "[app:main]\n"
            f"use = config:{REPO / 'test-core.ini'}\n"
            "ckan.plugins = harvest ckan_harvester test_harvester\n"
            f"ckan.site_id = {self.site_id}\n"
            f"ckan.harvest.mq.type = {backend}\n"
            f"sqlalchemy.url = {self.db_url}\n"
            f"solr_url = {config['solr_url']}\n"
            f"ckan.redis.url = {self.redis_url}\n"
            + "".join(f"{key} = {value}\n" for key, value in (options or {}).items())
            + _LOGGING
        )
        env = {k: v for k, v in os.environ.items()
               if k not in _OVERRIDING_ENV and not k.startswith("CKAN__")}
        # Environment variables win over the ini: keep them equal to this process's
        # configuration, so the subprocesses use the same database, index and Redis.
        env.update(CKAN_SQLALCHEMY_URL=self.db_url, CKAN_SOLR_URL=config["solr_url"],
                   CKAN_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        self.env = env
        self.engine = sa.create_engine(self.db_url, poolclass=NullPool)
        self.consumers: list[Consumer] = []
        self.servers: list[WebServer] = []
        self.background_runs: list[subprocess.Popen[bytes]] = []
        self._last_run: Optional[subprocess.Popen[bytes]] = None
        self._last_run_started = 0.0
        self.runs = 0
        #: Seconds between two background ``harvester run`` (cron's period).
        self.run_interval = RUN_INTERVAL
        #: While set, no new background ``harvester run`` starts.
        self.runs_held = False
        self.check_broker()

    # -- processes ------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return [str(CKAN_EXECUTABLE), "-c", str(self.ini), "harvester", *args]

    def ckan(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``ckan harvester <args>``; fail on a non-zero exit status."""
        result = subprocess.run(self.command(*args), capture_output=True, text=True,
                                env=self.env, cwd=REPO, timeout=COMMAND_TIMEOUT,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (
            f"ckan harvester {' '.join(args[:2])} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}")
        return result

    def serve(self, port: Optional[int] = None) -> WebServer:
        """Serve this site's web interface (``ckan run``); stopped by ``close()``."""
        port = port or free_port()
        server = WebServer(self.ini, port, self.env, self.directory / f"web-{port}.log")
        self.servers.append(server)
        return server.start()

    def consumer(self, kind: str) -> Consumer:
        consumer = Consumer(self, kind)
        self.consumers.append(consumer)
        return consumer

    def check_consumers(self) -> None:
        for consumer in self.consumers:
            consumer.check_alive()

    def run_in_background(self) -> None:
        """Start ``ckan harvester run`` unless one still runs or one started recently.

        Keeps waiting loops responsive (a run takes seconds); a failed run fails.
        """
        previous = self._last_run
        if previous is not None:
            if previous.poll() is None:
                return
            if previous.returncode != 0:
                pytest.fail(f"ckan harvester run failed ({previous.returncode}):\n"
                            + _tail(self.directory / f"run-{self.runs}.log"))
        if self.runs_held or time.monotonic() - self._last_run_started < self.run_interval:
            return
        self._last_run_started = time.monotonic()
        self.runs += 1
        with open(self.directory / f"run-{self.runs}.log", "wb") as log:
            self._last_run = subprocess.Popen(
                self.command("run"), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        self.background_runs.append(self._last_run)

    def close(self) -> None:
        """Stop every process started, then drop this site's queues."""
        errors = []
        for consumer in self.consumers:
            try:
                consumer.stop()
            except Exception as exc:  # noqa: BLE001 - go on cleaning up
                errors.append(exc)
        for server in self.servers:
            server.stop()
        for process in self.background_runs:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        try:
            self.drop_queues()
        finally:
            self.engine.dispose()
        if errors:
            raise errors[0]

    # -- brokers --------------------------------------------------------------------

    @property
    def queue_names(self) -> tuple[str, str]:
        return (f"ckan.harvest.{self.site_id}.gather",
                f"ckan.harvest.{self.site_id}.fetch")

    @property
    def redis_prefix(self) -> str:
        return f"ckanext-harvest:{self.site_id}:"

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def amqp(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(host="localhost",
                                                                 port=5672))

    def check_broker(self) -> None:
        """The broker must be reachable: a missing service fails the test."""
        if self.backend == "redis":
            assert self.redis().ping()
        else:
            self.amqp().close()

    def drop_queues(self) -> None:
        """Delete every key / queue of this (private, throw-away) site."""
        if self.backend == "redis":
            client = self.redis()
            keys = list(client.scan_iter(match=self.redis_prefix + "*", count=500))
            if keys:
                client.delete(*keys)
        else:
            connection = self.amqp()
            try:
                channel = connection.channel()
                for name in self.queue_names:
                    channel.queue_delete(queue=name)
            finally:
                connection.close()

    def pending_messages(self) -> int:
        """Messages still queued (Redis: or held unacknowledged) for this site."""
        if self.backend == "redis":
            client = self.redis()
            return sum(client.llen(key) for key in
                       client.scan_iter(match=self.redis_prefix + "*", count=500)
                       if client.type(key) == "list")
        connection = self.amqp()
        try:
            channel = connection.channel()
            return sum(channel.queue_declare(queue=name, passive=True).method.message_count
                       for name in self.queue_names)
        finally:
            connection.close()

    def queue_report(self) -> str:
        """Lengths of this site's queues (and, on Redis, processing lists)."""
        if self.backend == "redis":
            client = self.redis()
            keys = sorted(client.scan_iter(match=self.redis_prefix + "*", count=500))
            lengths = {key: client.llen(key) for key in keys if client.type(key) == "list"}
            markers = sum(1 for key in keys if client.type(key) == "string")
            return f"redis lists {lengths}, {markers} marker/alive key(s)"
        connection = self.amqp()
        try:
            channel = connection.channel()
            report = {}
            for name in self.queue_names:
                frame = channel.queue_declare(queue=name, passive=True)
                report[name] = (frame.method.message_count, frame.method.consumer_count)
            return f"amqp (messages ready, consumers) {report}"
        except pika.exceptions.ChannelClosed as exc:
            return f"amqp: {exc}"
        finally:
            connection.close()

    # -- SQL --------------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        rows = self.query(sql, **params)
        return rows[0][0] if rows else None

    def job(self, job_id: str) -> Any:
        rows = self.query("SELECT id, status, gather_started, gather_finished, finished "
                          "FROM harvest_job WHERE id = :id", id=job_id)
        assert rows, f"no harvest job {job_id}"
        return rows[0]

    def object_states(self, job_id: str) -> dict[str, int]:
        return dict(self.query("SELECT state, count(*) FROM harvest_object "
                               "WHERE harvest_job_id = :job GROUP BY state", job=job_id))

    def report_statuses(self, job_id: str) -> dict[Optional[str], int]:
        return dict(self.query("SELECT report_status, count(*) FROM harvest_object "
                               "WHERE harvest_job_id = :job GROUP BY report_status",
                               job=job_id))

    def harvested_datasets(self) -> dict[str, str]:
        """``name -> state`` of every dataset the test harvester made."""
        return dict(self.query("SELECT name, state FROM package "
                               "WHERE name LIKE :pattern AND type = 'dataset'",
                               pattern="harvested-%"))

    def current_objects_per_guid(self, source_id: str) -> dict[str, int]:
        return dict(self.query("SELECT guid, count(*) FROM harvest_object "
                               "WHERE harvest_source_id = :source AND current "
                               "GROUP BY guid", source=source_id))

    def object_errors(self, job_id: str) -> list[Any]:
        return self.query(
            "SELECT o.guid, o.state, e.stage, e.message FROM harvest_object_error e "
            "JOIN harvest_object o ON o.id = e.harvest_object_id "
            "WHERE o.harvest_job_id = :job ORDER BY o.guid", job=job_id)

    def diagnostics(self, job_id: str) -> str:
        job = self.job(job_id)
        errors = self.object_errors(job_id)[:10]
        parts = [
            f"job {job_id}: status={job.status} gather_started={job.gather_started} "
            f"gather_finished={job.gather_finished}",
            f"object states: {self.object_states(job_id)}",
            f"object errors (first 10): {errors}",
            f"queues: {self.queue_report()}",
        ]
        for consumer in self.consumers:
            parts.append(f"--- {consumer.kind} consumer (start #{consumer.starts}, "
                         f"{consumer.kills} kill(s)):\n{consumer.log_tail(25)}")
        return "\n".join(parts)

    # -- harvesting ---------------------------------------------------------------------

    def create_source(self, name: str, config: dict[str, Any]) -> str:
        """``ckan harvester source create``; returns the new source's id."""
        result = self.ckan("source", "create", name, f"http://{name}.example.org/",
                           "test", f"Source {name}", "true", "", "MANUAL",
                           json.dumps(config))
        assert result.stdout.startswith("Created new harvest source:\n"), result.stdout
        source_id = self.scalar("SELECT id FROM harvest_source WHERE url = :url",
                                url=f"http://{name}.example.org/")
        assert source_id, result.stdout
        return source_id

    def create_job(self, source_name: str, source_id: str) -> str:
        """``ckan harvester job <source>`` (queues it); returns the new job's id."""
        before = {row[0] for row in self.query(
            "SELECT id FROM harvest_job WHERE source_id = :s", s=source_id)}
        result = self.ckan("job", source_name)
        after = {row[0] for row in self.query(
            "SELECT id FROM harvest_job WHERE source_id = :s", s=source_id)}
        new = after - before
        assert len(new) == 1, result.stdout
        job_id = new.pop()
        assert f"\tJob id: {job_id}\n" in result.stdout, result.stdout
        assert self.job(job_id).status == "Running"
        return job_id

    def wait_until_finished(self, job_id: str, timeout: float,
                            on_tick: Optional[Callable[[], None]] = None) -> float:
        """Run ``harvester run`` periodically until the job is ``Finished``.

        :returns: the seconds it took
        """
        started = time.monotonic()
        while True:
            self.check_consumers()
            if on_tick is not None:
                on_tick()
            if self.job(job_id).status == "Finished":
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                pytest.fail(f"job not Finished after {timeout:.0f} s\n"
                            + self.diagnostics(job_id))
            self.run_in_background()
            time.sleep(0.25)


class WebServer:
    """``ckan -c <ini> run`` on a loopback port, in a subprocess (no reloader).

    ``start()`` waits until ``/api/3/action/status_show`` answers; ``stop()`` ends it.
    The environment decides the database, index and Redis (see :class:`HarvestSite`).
    """

    def __init__(self, ini: Path, port: int, env: dict[str, str], log_path: Path) -> None:
        self.ini = ini
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = COMMAND_TIMEOUT) -> WebServer:
        assert self.process is None, "already started"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(CKAN_EXECUTABLE), "-c", str(self.ini), "run", "-H", "127.0.0.1",
                 "-p", str(self.port), "--disable-reloader"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ckan run exited ({self.process.returncode}):\n"
                            + _tail(self.log_path))
            try:
                answer = requests.get(self.url + "/api/3/action/status_show", timeout=5)
                if answer.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"ckan run did not answer within {timeout:.0f} s:\n"
                    + _tail(self.log_path))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Settings of a site whose tests kill consumers: a killed Redis consumer's
#: messages come back after 10 s instead of 30 (``ckan.harvest.mq.consumer_timeout``).
QUICK_RECOVERY = {"ckan.harvest.mq.consumer_timeout": "10"}


@pytest.fixture
def make_site(tmp_path: Path) -> Iterable[Callable[..., HarvestSite]]:
    """Factory of :class:`HarvestSite` objects; always stops their processes.

    ``make_site(backend, label, options=None)``
    """
    sites: list[HarvestSite] = []

    def make(backend: str, label: str,
             options: Optional[dict[str, str]] = None) -> HarvestSite:
        directory = tmp_path / f"{label}-{backend}-{len(sites)}"
        directory.mkdir()
        site = HarvestSite(directory, backend, label, options)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


def datasets(count: int, start: int = 1) -> list[dict[str, str]]:
    return [{"guid": f"g{i}", "title": f"Dataset {i}"} for i in range(start, start + count)]


def job_stats(job_id: str) -> dict[str, int]:
    """The statistics the product reports (``harvest_job_show``), read in-process."""
    model.Session.remove()
    job = toolkit.get_action("harvest_job_show")({"ignore_auth": True}, {"id": job_id})
    return {key: value for key, value in job["stats"].items() if key is not None}


"""The local harvesting site of the faults suite and what it measures.

:class:`FaultSite` is a :class:`tests.support.site.HarvestSite` whose queues live on
a private broker (:mod:`tests.faults.brokers`), whose consumer processes carry a
recognisable PostgreSQL ``application_name`` (``PGAPPNAME``), with short remote HTTP
timeouts (:data:`HTTP_TIMEOUTS`), and whose ``ckan harvester run`` is run
periodically like cron by :meth:`FaultSite.wait_until_finished`, which can be held
while a broker is down. :meth:`FaultSite.outcome` computes the row of the table.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Optional

import pika
import pika.exceptions
import redis

from ckanext.harvest import mq
from ckanext.harvest.mq import redis as mq_redis
from tests.faults.brokers import Broker, PrivateRabbit, PrivateRedis
from tests.faults.proxy import FaultProxy
from tests.support.site import QUICK_RECOVERY, Consumer, HarvestSite

#: Timeouts (s) of the harvester's remote requests: a remote hanging longer than
#: the read timeout costs seconds, not the default minute (twice: it is retried).
HTTP_TIMEOUTS = {"ckan.harvest.http_connect_timeout": "2",
                 "ckan.harvest.http_read_timeout": "3"}
UNFINISHED = ("WAITING", "FETCH", "IMPORT")
SOURCE_NAME = "faults-remote"
#: Seconds between two ``ckan harvester run``. Each run loads CKAN (2-3 s of CPU):
#: every 3 s, as in the other end-to-end tests, would take most of a core away from
#: the consumers on a 2-core machine.
CRON_INTERVAL = 8.0


class FaultConsumer(Consumer):
    """A consumer with a name of its own (``fetch``, ``fetch2`` ...) for its logs
    (``<name>-<start>.log``) and its database connections (``<site>-<name>``)."""

    site: FaultSite

    @property
    def application_name(self) -> str:
        return f"{self.site.site_id}-{self.name}"

    def extra_env(self) -> dict[str, str]:
        return {"PGAPPNAME": self.application_name}

    def log_count(self, text: str) -> int:
        """Lines of this consumer's logs (over all its starts) containing ``text``."""
        total = 0
        for start in range(1, self.starts + 1):
            log = self.site.directory / f"{self.name}-{start}.log"
            try:
                total += log.read_text(errors="replace").count(text)
            except OSError:
                pass
        return total

    def messages_handled(self) -> int:
        """Fetch messages this consumer received."""
        return self.log_count("Received harvest object id")


@dataclasses.dataclass
class Outcome:
    """The verdict of a scenario, from the database (one row of the table)."""

    expected: int
    present: int
    duplicated: int
    stuck: int
    lost: int
    errored: int
    details: dict[str, Any]

    def problems(self) -> list[str]:
        found = []
        for name in ("duplicated", "stuck", "lost"):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        if self.present != self.expected:
            found.append(f"{self.present} of {self.expected} expected datasets present")
        return found


class FaultSite(HarvestSite):
    """A harvesting site on a private broker, harvesting the remote through a proxy."""

    consumers: list[Consumer]

    def __init__(self, directory: Path, broker: Broker, label: str,
                 options: Optional[dict[str, str]] = None) -> None:
        self.broker = broker
        site_options = {"ckan.harvest.ssrf_allowed_hosts": "127.0.0.1 localhost",
                        # No resource view plugin is loaded: create no default views.
                        "ckan.views.default_views": "",
                        **HTTP_TIMEOUTS, **QUICK_RECOVERY, **broker.site_options(),
                        **(options or {})}
        super().__init__(directory, broker.backend, label, site_options)
        self.run_interval = CRON_INTERVAL

    # -- brokers (the private one, not the shared one) ----------------------------------

    def redis(self) -> redis.Redis:
        assert isinstance(self.broker, PrivateRedis)
        return self.broker.client()

    def amqp(self) -> pika.BlockingConnection:
        assert isinstance(self.broker, PrivateRabbit)
        return self.broker.connection()

    def waiting_consumers(self) -> dict[str, int]:
        """``{"gather": n, "fetch": n}``: consumers the broker sees on each queue.

        Redis: registered and with a live heartbeat; AMQP: subscribed.
        """
        specs = {"gather": mq.gather_spec(self.site_id), "fetch": mq.fetch_spec(self.site_id)}
        if self.backend == "redis":
            client = self.redis()
            return {kind: sum(1 for member in client.smembers(mq_redis.registry_key(spec))
                              if client.exists(mq_redis.alive_key(spec, member)))
                    for kind, spec in specs.items()}
        connection = self.amqp()
        try:
            channel = connection.channel()
            return {kind: channel.queue_declare(queue=spec.name, passive=True)
                    .method.consumer_count for kind, spec in specs.items()}
        except pika.exceptions.ChannelClosed:  # a queue not declared yet
            return {kind: 0 for kind in specs}
        finally:
            if connection.is_open:
                connection.close()

    # -- processes ----------------------------------------------------------------

    def consumer(self, kind: str) -> FaultConsumer:
        same_kind = sum(1 for consumer in self.consumers if consumer.kind == kind)
        consumer = FaultConsumer(self, kind, kind + (str(same_kind + 1) if same_kind
                                                     else ""))
        self.consumers.append(consumer)
        return consumer

    def hold_cron(self) -> None:
        """No new ``harvester run`` from now on; wait for the one running, if any."""
        self.runs_held = True
        if self._last_run is not None:
            self._last_run.wait(timeout=120)
            self.run_in_background()  # reports a failed run

    def release_cron(self) -> None:
        self.runs_held = False

    # -- harvesting ---------------------------------------------------------------------

    def create_ckan_source(self, proxy: FaultProxy,
                           config: Optional[dict[str, Any]] = None) -> str:
        """A ``ckan`` source harvesting the remote through the proxy; its id."""
        url = proxy.url + "/"
        result = self.ckan("source", "create", SOURCE_NAME, url, "ckan",
                           "Remote CKAN (faults)", "true", "", "MANUAL",
                           json.dumps(config or {}))
        source_id = self.scalar("SELECT id FROM harvest_source WHERE url = :url", url=url)
        assert source_id, result.stdout
        return str(source_id)

    def new_job(self, source_id: str) -> str:
        return self.create_job(SOURCE_NAME, source_id)

    # -- measures -------------------------------------------------------------------------

    def count_objects(self, job_id: str, *states: str) -> int:
        return int(self.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = :job "
            "AND state = ANY(:states)", job=job_id, states=list(states)))

    def local_datasets(self) -> dict[str, str]:
        """``id -> state`` of the local datasets (harvest sources excluded)."""
        return dict(self.query("SELECT id, state FROM package WHERE type = 'dataset'"))

    def organisations(self) -> set[str]:
        """Ids of the local organisations."""
        return {row[0] for row in self.query(
            "SELECT id FROM \"group\" WHERE is_organization AND state = 'active'")}

    def terminate_backends(self, *consumers: FaultConsumer) -> int:
        """``pg_terminate_backend`` of the consumers' connections; how many."""
        names = [consumer.application_name for consumer in consumers]
        return int(self.scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done "
            "FROM pg_stat_activity WHERE application_name = ANY(:names) "
            "AND datname = current_database() AND pid <> pg_backend_pid()) killed "
            "WHERE done", names=names))

    def outcome(self, remote_ids: dict[str, str], job_ids: Iterable[str],
                imported_before: Iterable[str] = (),
                allowed_missing: Iterable[str] = ()) -> Outcome:
        """Compare the local site with the remote after the jobs ``job_ids``.

        :param remote_ids: ``id -> name`` of the remote's public datasets
        :param imported_before: ids of datasets seen imported during the scenario
            (they must all still be there)
        :param allowed_missing: ids the scenario may legitimately lack (objects
            errored because the remote failed, before the re-harvest)
        """
        jobs = list(job_ids)
        local = self.local_datasets()
        active = {dataset_id for dataset_id, state in local.items() if state == "active"}
        expected = set(remote_ids) - set(allowed_missing)
        per_guid = self.query(
            "SELECT guid, count(*) FILTER (WHERE current) AS current, "
            "count(DISTINCT package_id) AS packages FROM harvest_object "
            "WHERE harvest_job_id = ANY(:jobs) GROUP BY guid", jobs=jobs)
        extra = active - set(remote_ids)
        duplicated = len(extra) + sum(1 for row in per_guid
                                      if row.current > 1 or row.packages > 1)
        stuck = int(self.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = ANY(:jobs) "
            "AND state = ANY(:states)", jobs=jobs, states=list(UNFINISHED)))
        missing = expected - active
        vanished = set(imported_before) - active
        errored = int(self.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = ANY(:jobs) "
            "AND state = 'ERROR'", jobs=jobs))
        return Outcome(
            expected=len(expected), present=len(expected & active),
            duplicated=duplicated, stuck=stuck, lost=len(missing | vanished),
            errored=errored,
            details={"extra datasets": sorted(extra)[:10],
                     "missing": sorted(missing)[:10],
                     "vanished after import": sorted(vanished)[:10],
                     "not active": {k: v for k, v in local.items()
                                    if v != "active"} or None})

    def different_titles(self, titles: dict[str, str]) -> list[str]:
        """Ids of imported datasets whose title differs from the remote's."""
        local = dict(self.query("SELECT id, title FROM package WHERE type = 'dataset' "
                                "AND id = ANY(:ids)", ids=list(titles)))
        return sorted(k for k, title in local.items() if titles[k] != title)

    def job_errors(self, job_id: str) -> dict[str, list[Any]]:
        return {
            "gather": [row[0] for row in self.query(
                "SELECT message FROM harvest_gather_error WHERE harvest_job_id = :job",
                job=job_id)],
            "object": [tuple(row) for row in self.query(
                "SELECT o.guid, o.import_started, e.stage, e.message "
                "FROM harvest_object_error e JOIN harvest_object o "
                "ON o.id = e.harvest_object_id WHERE o.harvest_job_id = :job "
                "ORDER BY o.import_started", job=job_id)],
        }

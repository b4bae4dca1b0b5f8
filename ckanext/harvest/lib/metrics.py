"""Prometheus metrics of the harvesting, computed at scrape time.

The web process serves ``/harvest/metrics`` while the consumers, other
processes, do the work: counters kept in a process's memory would only see
that process. So every figure is read at scrape time from what all the
processes share: the database (jobs, objects, sources, import durations),
the broker (queue depths, live consumers) and CKAN's Redis (stalls). A
custom collector (:class:`HarvestCollector`) does it; nothing is kept in
memory between scrapes, and any number of web processes give the same
answer.

The import-duration histogram is built from ``import_finished -
import_started`` of every harvest object that has both, in one aggregate
query: a counter that only grows, except when job history is cleared (a
counter reset, which ``rate()`` handles).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import sqlalchemy as sa
from ckan import model
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from ckanext.harvest.lib import health, stalls

__all__ = ["CONTENT_TYPE", "IMPORT_BUCKETS", "HarvestCollector", "render"]

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the import-duration histogram buckets.
IMPORT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _import_durations() -> tuple[list[int], int, float]:
    """Cumulative bucket counts, count and sum of the import durations."""
    duration = "extract(epoch FROM import_finished - import_started)"
    buckets = ", ".join(
        "count(*) FILTER (WHERE {} <= :b{})".format(duration, i)
        for i in range(len(IMPORT_BUCKETS)))
    query = sa.text(
        "SELECT {}, count(*), coalesce(sum({}), 0) FROM harvest_object "
        "WHERE import_started IS NOT NULL AND import_finished IS NOT NULL "
        "AND import_finished >= import_started".format(buckets, duration))
    row = model.Session.execute(
        query, {"b{}".format(i): bound for i, bound in enumerate(IMPORT_BUCKETS)}).one()
    values = list(row)
    return [int(v) for v in values[:-2]], int(values[-2]), float(values[-1])


class HarvestCollector:
    """Collects the harvest metrics (see ``docs/health.rst`` for the list)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, read now."""
        yield from self._jobs_and_objects()
        yield from self._queues()
        yield from self._sources()
        yield self._import_histogram()

    def _jobs_and_objects(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("ckanext_harvest_jobs", "Harvest jobs by status "
                                 "(New: waiting to be sent to the gather queue).",
                                 labels=["status"])
        for status, count in health.job_counts().items():
            jobs.add_metric([status], count)
        yield jobs
        objects = GaugeMetricFamily("ckanext_harvest_objects",
                                    "Harvest objects by state.", labels=["state"])
        for state, count in health.object_counts().items():
            objects.add_metric([state], count)
        yield objects

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("ckanext_harvest_queue_depth",
                                  "Messages waiting on a harvest queue.", labels=["queue"])
        consumers = GaugeMetricFamily("ckanext_harvest_queue_consumers",
                                      "Live consumer processes of a harvest queue.",
                                      labels=["queue"])
        up = GaugeMetricFamily("ckanext_harvest_queue_up",
                               "1 when the broker answered for this queue.",
                               labels=["queue"])
        for name, stats in health.queue_stats(self.config).items():
            up.add_metric([name], 0 if stats is None else 1)
            if stats is not None:
                depth.add_metric([name], stats.depth)
                consumers.add_metric([name], stats.consumers)
        yield from (depth, consumers, up)

    def _sources(self) -> Iterator[Metric]:
        rows = health.source_rows()
        success = GaugeMetricFamily(
            "ckanext_harvest_source_last_success_timestamp_seconds",
            "End of the source's newest finished job without errors (Unix time; "
            "absent: none).", labels=["source"])
        failures = GaugeMetricFamily(
            "ckanext_harvest_source_consecutive_failures",
            "Newest finished jobs of the source in a row that had errors.",
            labels=["source"])
        stalled = GaugeMetricFamily(
            "ckanext_harvest_source_stalled",
            "1 when the source's running job is stalled.", labels=["source"])
        for row in rows:
            if row.last_success is not None:
                success.add_metric([row.name], stalls.epoch(row.last_success))
            failures.add_metric([row.name], row.consecutive_failures)
            stalled.add_metric([row.name], 1 if row.stalled else 0)
        yield from (success, failures, stalled)

    def _import_histogram(self) -> Metric:
        cumulative, count, total = _import_durations()
        buckets = [(repr(bound), value) for bound, value in zip(IMPORT_BUCKETS, cumulative)]
        buckets.append(("+Inf", count))
        histogram = HistogramMetricFamily(
            "ckanext_harvest_import_duration_seconds",
            "Duration of the import stage of harvest objects.")
        histogram.add_metric([], buckets, sum_value=total)
        return histogram


def render(config: Mapping[str, Any]) -> bytes:
    """The metrics in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HarvestCollector(config))  # type: ignore[arg-type]
    return generate_latest(registry)

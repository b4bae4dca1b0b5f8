"""``ckan harvester purge-queues | gather-consumer | fetch-consumer``: the queues.

The consumers run until stopped; :mod:`ckanext.harvest.queue` (imported when a
command runs, so that ``ckan`` starts without the brokers' clients) does the
work.
"""
from __future__ import annotations

import gc
import logging
import signal
from typing import Any, Callable

import click

from ckanext.harvest.cli.base import guarded

log = logging.getLogger(__name__)


def purge_queues() -> None:
    """Drop every pending message of the gather and fetch queues."""
    from ckanext.harvest import queue

    queue.purge_queues()


def gather_consumer() -> None:
    """Consume the gather queue (runs until interrupted)."""
    from ckanext.harvest import queue

    queue.run_gather_consumer()


def fetch_consumer() -> None:
    """Consume the fetch queue (runs until interrupted)."""
    from ckanext.harvest import queue

    queue.run_fetch_consumer()


def _until_stopped(consume: Callable[[], None]) -> None:
    """Run a consumer loop; SIGTERM or Ctrl-C stop it cleanly (exit status 0).

    The loop is interrupted like by Ctrl-C: the message being handled is not
    acknowledged, so the broker delivers it again.
    """
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    _settle_heap()
    try:
        consume()
    except KeyboardInterrupt:
        log.info("Harvest consumer stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _settle_heap() -> None:
    """CKAN, its plugins and the configuration are loaded, and live as long as
    the consumer: keep the garbage collector from walking them again at every
    full collection (``gc.freeze``; figures in bench/README.rst). Reference
    counting still frees them, as anything else, when they are dropped."""
    gc.collect()
    gc.freeze()


@click.command(name="purge-queues", short_help="Empty the gather and fetch queues.")
@guarded(with_context=False)
def purge_queues_command() -> None:
    """Empty this site's gather and fetch queues.

    Every pending message is dropped; jobs and objects in the database are
    not changed, and the queues of other sites on the same broker are left
    alone.
    """
    purge_queues()


@click.command(name="gather-consumer",
               short_help="Run the gather consumer (jobs to objects).")
@guarded(with_context=False)
def gather_consumer_command() -> None:
    """Run the gather consumer: turn queued jobs into harvest objects.

    For each job taken from the gather queue, the source's harvester lists
    the remote records as harvest objects, which go to the fetch queue.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(gather_consumer)


@click.command(name="fetch-consumer", short_help="Run the fetch consumer (fetch and import).")
@guarded(with_context=False)
def fetch_consumer_command() -> None:
    """Run the fetch consumer: fetch and import queued harvest objects.

    Each object taken from the fetch queue is fetched by its source's
    harvester, then imported: its dataset is created, updated or deleted.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(fetch_consumer)

"""No limbo, nothing lost: a real harvest under injected faults (``make test-faults``).

Each scenario harvests the 1,028 public datasets of a real remote CKAN
(:mod:`tests.faults.remote`) into an empty local site, through real ``ckan
harvester`` consumer processes on a private broker, with ``ckan harvester run``
running every few seconds as cron would, while one kind of fault is injected:

1. ``kill -9`` of the gather consumer while it gathers, then of the fetch consumer,
   again and again (at least 10 times) while it imports;
2. restarts of the broker in the middle of the job (Redis without persistence loses
   every queued message; RabbitMQ is shut down cleanly and keeps its durable
   queues);
3. ``pg_terminate_backend`` of the consumers' PostgreSQL connections, during the
   gather and then repeatedly while importing;
4. the remote answering 500s, hanging longer than the harvester's read timeout and
   closing connections (through :mod:`tests.faults.proxy`), then recovering; a
   second job re-harvests what failed;
5. two fetch consumers on the same queue;
6. every consumer gone for good: ``harvester run`` must end the job with a timeout
   error (``ckan.harvest.timeout = 1``) and leave no object unfinished;
7. no fault at all, but consumers left idle on empty queues for more than a minute
   (three heartbeat timeouts of the private RabbitMQ, after which it cuts a silent
   client, and many times redis-py's 5 s socket timeout) before a job of one
   remote organisation: the same processes must take it and finish it;
8. ``kill -9`` of the fetch consumer, again and again, while a job withdraws the
   datasets that vanished from the source (``delete_missing``): two remote
   organisations are harvested, then the source lists only one of them, and the
   other's datasets must each be withdrawn exactly once, none left half done.

Nobody helps the job along: it must end ``Finished`` by itself, with no object left
``WAITING``, ``FETCH`` or ``IMPORT``, every remote dataset exactly once locally and
nothing imported lost. Each scenario adds a row to the table printed at the end
(:mod:`tests.faults.report`).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional

import pytest
import sqlalchemy as sa

from tests.faults.brokers import Broker
from tests.faults.proxy import FaultProxy, Mode
from tests.faults.remote import FaultsRemote
from tests.faults.report import RESULTS, Row
from tests.faults.site import FaultConsumer, FaultSite, Outcome

pytestmark = pytest.mark.faults

BACKENDS = ["redis", "amqp"]
SEARCH = "/package_search"
#: Bound of one job, from its creation (a harvest takes 1-3 minutes here).
JOB_TIMEOUT = 600.0
FETCH_KILLS = 10
#: Scenario 6: the configured job timeout (minutes, the unit of the setting).
TIMEOUT_MINUTES = 1
#: Scenario 6: objects imported before every consumer is killed.
IMPORTED_BEFORE_THE_END = 100
#: Source configuration creating the remote organisations locally (their details
#: are fetched from the remote at import time): always used by scenario 4,
#: by every scenario with HARVEST_FAULTS_REMOTE_ORGS=1.
REMOTE_CONFIG = {"remote_orgs": "create"}
CONFIG = REMOTE_CONFIG if os.environ.get("HARVEST_FAULTS_REMOTE_ORGS") else {}


# --- helpers ----------------------------------------------------------------------


class Harvest:
    """One scenario's harvest: site, consumers, source, jobs and measures."""

    def __init__(self, site: FaultSite, proxy: FaultProxy, remote: FaultsRemote,
                 fetchers: int = 1, config: Optional[dict[str, Any]] = None,
                 organisation: Optional[str] = None) -> None:
        """:param organisation: harvest only this remote organisation's datasets"""
        self.site, self.proxy, self.remote = site, proxy, remote
        self.remote_ids = remote.public_ids(organisation)
        config = CONFIG if config is None else config
        if organisation:
            config = {**config, "organizations_filter_include": [organisation]}
        self.gather = site.consumer("gather")
        self.fetchers = [site.consumer("fetch") for _ in range(fetchers)]
        for consumer in [self.gather, *self.fetchers]:
            consumer.start()
        self.source_id = site.create_ckan_source(proxy, config)
        self.jobs: list[str] = []
        self.imported: set[str] = set()
        self.started = time.monotonic()

    @property
    def fetch(self) -> FaultConsumer:
        return self.fetchers[0]

    @property
    def job(self) -> str:
        return self.jobs[-1]

    def add_fetcher(self) -> None:
        consumer = self.site.consumer("fetch")
        consumer.start()
        self.fetchers.append(consumer)

    def new_job(self) -> str:
        self.jobs.append(self.site.new_job(self.source_id))
        return self.job

    def complete(self) -> int:
        return self.site.count_objects(self.job, "COMPLETE")

    def snapshot(self) -> None:
        """Remember what is imported now: it must still be there at the end."""
        self.imported |= {dataset_id for dataset_id, state
                          in self.site.local_datasets().items() if state == "active"}

    def wait_for(self, condition: Callable[[], bool], what: str,
                 timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.site.check_consumers()
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s\n"
                            + self.site.diagnostics(self.job))
            self.site.run_in_background()
            time.sleep(0.1)

    def keep_going(self, seconds: float) -> None:
        """Let the consumers and cron work for ``seconds``."""
        until = time.monotonic() + seconds
        self.wait_for(lambda: time.monotonic() > until, "pause", seconds + 30)

    def gathering(self) -> bool:
        """The job's gather stage has begun and not ended."""
        job = self.site.job(self.job)
        return job.gather_started is not None and job.gather_finished is None

    def run(self, on_tick: Optional[Callable[[], None]] = None) -> float:
        return self.site.wait_until_finished(self.job, JOB_TIMEOUT, on_tick)

    def outcome(self, allowed_missing: tuple[str, ...] = ()) -> Outcome:
        return self.site.outcome(self.remote_ids, self.jobs, self.imported,
                                 allowed_missing)

    def verdict(self, backend: str, scenario: str, injections: str,
                outcome: Outcome, extra_problems: list[str], seconds: float) -> None:
        """Record the row, then fail on any problem (with diagnostics)."""
        wrong_titles = self.site.different_titles(
            {k: v for k, v in self.remote.titles().items() if k in self.imported
             or k in self.remote_ids})
        problems = outcome.problems() + extra_problems
        if wrong_titles:
            problems.append(f"{len(wrong_titles)} dataset(s) differ from the remote: "
                            f"{wrong_titles[:5]}")
        unreported = self.site.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = ANY(:jobs) "
            "AND state = 'COMPLETE' AND report_status IS NULL", jobs=self.jobs)
        if unreported:
            problems.append(f"{unreported} COMPLETE object(s) without report_status")
        for job_id in self.jobs:
            if self.site.job(job_id).status != "Finished":
                problems.append(f"job {job_id} is {self.site.job(job_id).status}")
        RESULTS.append(Row(backend, scenario, injections, outcome.expected,
                           outcome.present, outcome.duplicated, outcome.stuck,
                           outcome.lost, outcome.errored, seconds,
                           "FAILED" if problems else "ok"))
        assert not problems, ("\n".join(problems) + f"\n{outcome.details}\n"
                              + self.site.diagnostics(self.job))


class EveryNth:
    """Calls ``action`` each time ``count()`` grew by ``step``, at most ``times``."""

    def __init__(self, count: Callable[[], int], step: int, times: int,
                 action: Callable[[], None]) -> None:
        self.count, self.step, self.times, self.action = count, step, times, action
        self.done = 0
        self.at: list[int] = []

    def __call__(self) -> None:
        if self.done >= self.times:
            return
        now = self.count()
        if now >= (self.done + 1) * self.step:
            self.action()
            self.done += 1
            self.at.append(now)


# --- 1. kill -9 --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_of_the_consumers(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "kill9")
    fault_proxy.set(Mode.SLOW, only=SEARCH)  # a gather of seconds: time to kill it
    harvest = Harvest(site, fault_proxy, remote)
    harvest.new_job()
    harvest.wait_for(lambda: fault_proxy.served(SEARCH) >= 3, "3 search pages")
    mid_gather = harvest.gathering()
    harvest.gather.kill9()
    pages = fault_proxy.served(SEARCH)
    fault_proxy.set(Mode.OK)
    harvest.gather.start()

    def kill_fetch() -> None:
        harvest.snapshot()
        harvest.fetch.kill9()
        harvest.fetch.start()

    step = len(harvest.remote_ids) // (FETCH_KILLS + 2)
    killer = EveryNth(harvest.complete, step, FETCH_KILLS + 1, kill_fetch)
    seconds = harvest.run(killer)

    outcome = harvest.outcome()
    harvest.verdict(
        backend, "1 kill -9 consumers",
        f"gather x{harvest.gather.kills} (after {pages} search pages), "
        f"fetch x{harvest.fetch.kills}", outcome,
        [] if mid_gather and harvest.fetch.kills >= FETCH_KILLS else
        [f"kills: gather mid-gather {mid_gather}, fetch {harvest.fetch.kills}"],
        time.monotonic() - harvest.started)
    print(f"\n[{backend}] kill -9: fetch killed at {killer.at} COMPLETE; job took "
          f"{seconds:.0f} s")


# --- 2. broker restarts ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_broker_restarts_in_the_middle_of_the_job(backend, remote, fault_proxy,
                                                  make_fault_site, brokers):
    site = make_fault_site(backend, "restart")
    broker: Broker = brokers(backend)
    harvest = Harvest(site, fault_proxy, remote)
    harvest.new_job()
    downtime: list[float] = []

    def restart() -> None:
        harvest.snapshot()
        site.hold_cron()  # cron would only fail while the broker is down
        downtime.append(broker.restart(down_seconds=3.0))
        site.release_cron()

    restarter = EveryNth(harvest.complete, len(harvest.remote_ids) // 3, 2, restart)
    harvest.run(restarter)

    harvest.verdict(
        backend, "2 broker restart",
        f"{broker.backend} restart x{restarter.done} (down "
        f"{', '.join(f'{d:.0f}' for d in downtime)} s)", harvest.outcome(),
        [] if restarter.done == 2 else ["the job ended before 2 restarts"],
        time.monotonic() - harvest.started)


# --- 3. pg_terminate_backend -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_database_connections_terminated(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "pgkill")
    fault_proxy.set(Mode.SLOW, only=SEARCH)
    harvest = Harvest(site, fault_proxy, remote)
    harvest.new_job()
    harvest.wait_for(lambda: fault_proxy.served(SEARCH) >= 3, "3 search pages")
    in_gather = site.terminate_backends(harvest.gather)
    fault_proxy.set(Mode.OK)
    terminated = [in_gather]

    def terminate() -> None:
        harvest.snapshot()
        terminated.append(site.terminate_backends(harvest.gather, *harvest.fetchers))

    terminator = EveryNth(harvest.complete, len(harvest.remote_ids) // 8, 7, terminate)
    harvest.run(terminator)

    harvest.verdict(
        backend, "3 pg_terminate_backend",
        f"{sum(terminated)} connections in {len(terminated)} rounds "
        f"({in_gather} in gather)", harvest.outcome(),
        [] if len(terminated) >= 6 and in_gather else
        [f"terminations per round: {terminated}"],
        time.monotonic() - harvest.started)


# --- 4. the remote fails, then recovers ---------------------------------------------------


REMOTE_FAILURES = ((Mode.ERROR, 6.0), (Mode.HANG, 10.0), (Mode.CLOSE, 6.0))
#: How each failure shows in the object errors (the harvester gives the cause).
FAILURE_SIGNS = {Mode.ERROR: "HTTP error: 500", Mode.HANG: "Read timed out",
                 Mode.CLOSE: "Connection aborted"}


def _remote_error(message: str) -> bool:
    return "Could not fetch/decode remote" in message


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_failing_then_recovering(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "remote")
    # Each search page fails once (500 or closed connection): retries absorb it.
    fault_proxy.set(Mode.FLAKY, only=SEARCH)
    harvest = Harvest(site, fault_proxy, remote, config=REMOTE_CONFIG)
    first = harvest.new_job()
    harvest.wait_for(lambda: site.job(first).gather_finished is not None, "gather")
    gather_injected = fault_proxy.injected()
    # Then the remote fails while the datasets are imported (their organisations
    # are fetched from it), one way after the other.
    for mode, seconds in REMOTE_FAILURES:
        fault_proxy.set(mode)
        harvest.keep_going(seconds)
    fault_proxy.set(Mode.OK)
    # Importing with remote_orgs is slow (an organization_show per dataset): a second
    # fetch consumer joins once every organisation exists locally. Not before: the
    # CKAN harvester's creation of an organisation is not safe against a concurrent
    # consumer creating the same one.
    organisations = remote.organisations()
    harvest.wait_for(lambda: site.organisations() >= organisations,
                     "remote organisations created locally")
    harvest.add_fetcher()
    harvest.run()
    errors = site.job_errors(first)
    first_outcome = site.outcome(harvest.remote_ids, [first])
    failed = {guid for guid, _, _, message in errors["object"]}
    not_remote = [e for e in errors["object"] if not _remote_error(e[3])]
    harvest.snapshot()

    # A second job, with the remote well again, imports what failed.
    second = harvest.new_job()
    harvest.run()
    second_errors = site.job_errors(second)

    problems = []
    if errors["gather"] or second_errors["gather"]:
        problems.append(f"gather errors: {errors['gather']} {second_errors['gather']}")
    for mode, sign in FAILURE_SIGNS.items():
        if not any(sign in message for _, _, _, message in errors["object"]):
            problems.append(f"no object error shows the remote's {mode.value} ({sign})")
    if not_remote:
        problems.append(f"object errors not caused by the remote: {not_remote[:5]}")
    if first_outcome.errored != len(failed) or first_outcome.lost != len(failed):
        problems.append(f"first job: {first_outcome.errored} errored, "
                        f"{first_outcome.lost} missing, {len(failed)} with errors")
    if second_errors["object"]:
        problems.append(f"second job errors: {second_errors['object'][:5]}")
    outcome = harvest.outcome()
    outcome.errored = first_outcome.errored  # what the failures cost the first job
    harvest.verdict(
        backend, "4 remote 500/hang/close",
        f"{gather_injected} in gather + {fault_proxy.injected() - gather_injected} "
        f"while importing; {len(failed)} objects failed, re-harvested by job 2",
        outcome, problems, time.monotonic() - harvest.started)


# --- 5. two fetch consumers ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_fetch_consumers_on_one_queue(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "two")
    harvest = Harvest(site, fault_proxy, remote, fetchers=2)
    harvest.new_job()
    harvest.run()

    handled = [consumer.messages_handled() for consumer in harvest.fetchers]
    given_back = sum(consumer.log_count("being processed by another consumer")
                     for consumer in harvest.fetchers)
    harvest.verdict(
        backend, "5 two fetch consumers",
        f"messages handled {handled[0]} + {handled[1]} ({given_back} given back as "
        "duplicates)", harvest.outcome(),
        [] if min(handled) > 0 else [f"a consumer did nothing: {handled}"],
        time.monotonic() - harvest.started)


# --- 6. every consumer gone --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_without_consumers_times_out(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "limbo",
                           {"ckan.harvest.timeout": str(TIMEOUT_MINUTES)})
    harvest = Harvest(site, fault_proxy, remote)
    job = harvest.new_job()
    harvest.wait_for(lambda: harvest.complete() >= IMPORTED_BEFORE_THE_END,
                     f"{IMPORTED_BEFORE_THE_END} objects imported")
    harvest.gather.kill9()
    harvest.fetch.kill9()
    gone = time.monotonic()
    harvest.snapshot()
    imported = set(harvest.imported)

    detected = harvest.run()
    states = site.object_states(job)
    gather_errors = site.job_errors(job)["gather"]

    # Consumers coming back later find the job over: they change nothing.
    harvest.fetch.start()
    harvest.wait_for(lambda: site.pending_messages() <= 1, "queue drained", 180)
    after = site.object_states(job)

    problems = []
    if detected > TIMEOUT_MINUTES * 60 + 30:
        problems.append(f"timeout detected after {detected:.0f} s")
    if not any(f"Job {job} timeout ({TIMEOUT_MINUTES} minutes)" in message
               for message in gather_errors):
        problems.append(f"no timeout error: {gather_errors}")
    if after != states:
        problems.append(f"objects changed after the timeout: {states} -> {after}")
    outcome = site.outcome({k: v for k, v in harvest.remote_ids.items() if k in imported},
                           [job], imported)
    harvest.verdict(
        backend, "6 all consumers gone",
        f"gather+fetch kill -9 after {len(imported)} imported; Finished (timeout) "
        f"{detected:.0f} s later", outcome, problems, time.monotonic() - gone)


# --- 7. idle consumers --------------------------------------------------------------


#: Scenario 7: how long the consumers wait on empty queues before the job: more than
#: three heartbeat timeouts of the private RabbitMQ (tests.faults.brokers.AMQP_HEARTBEAT)
#: and than a minute. ``HARVEST_FAULTS_IDLE_SECONDS=600`` is the ten-minute check of
#: docs/testing.rst.
IDLE_SECONDS = float(os.environ.get("HARVEST_FAULTS_IDLE_SECONDS") or 75)
#: Scenario 7 harvests one remote organisation (120 datasets): the point is the
#: idle time, not the size of the job.
IDLE_ORGANISATION = "mapping-agency"
#: What a consumer logs when its broker connection broke (it then reconnects).
CONNECTION_TROUBLE = ("Queue broker connection lost", "Could not refresh consumer",
                      "Traceback")


def _sit_idle(site: FaultSite, seconds: float) -> float:
    """Nothing but watching the consumers (no cron, no message) for ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        site.check_consumers()
        time.sleep(1.0)
    return time.monotonic() - started


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_consumers_take_the_next_job(backend, remote, fault_proxy, make_fault_site):
    site = make_fault_site(backend, "idle")
    harvest = Harvest(site, fault_proxy, remote, organisation=IDLE_ORGANISATION)
    consumers = [harvest.gather, harvest.fetch]
    both = {"gather": 1, "fetch": 1}
    harvest.wait_for(lambda: site.waiting_consumers() == both,
                     "both consumers waiting on the broker")
    pids = [consumer.process.pid for consumer in consumers if consumer.process]
    empty = site.pending_messages() == 0
    idled = _sit_idle(site, IDLE_SECONDS)
    waiting = site.waiting_consumers()

    queued = time.monotonic()
    job = harvest.new_job()
    seconds = harvest.run()
    latency = site.scalar("SELECT extract(epoch FROM gather_started - created) "
                          "FROM harvest_job WHERE id = :id", id=job)

    problems = [] if empty else ["the queues were not empty before the idle time"]
    if waiting != both:
        problems.append(f"after {idled:.0f} s idle, the broker sees {waiting}")
    now = [consumer.process.pid for consumer in consumers if consumer.process]
    if now != pids or any(consumer.starts != 1 for consumer in consumers):
        problems.append(f"consumer processes changed: {pids} -> {now}")
    trouble = {text: n for text in CONNECTION_TROUBLE
               if (n := sum(consumer.log_count(text) for consumer in consumers))}
    if trouble:
        problems.append(f"consumer logs show connection trouble: {trouble}")
    harvest.verdict(
        backend, "7 idle consumers",
        f"gather+fetch idle {idled:.0f} s (same pids); job of {len(harvest.remote_ids)} "
        f"gathered {latency:.1f} s after queueing, finished in {seconds:.0f} s",
        harvest.outcome(), problems, time.monotonic() - queued)


# --- 8. kill -9 while withdrawing vanished datasets ------------------------------------

#: Scenario 8: harvested first; then only the first is listed, the second vanishes.
WITHDRAW_KEPT, WITHDRAW_GONE = "mapping-agency", "national-statistics"
WITHDRAW_KILLS = 5
REMOVAL = {"delete_missing": {"mode": "delete", "after_days": 0, "max_fraction": 1.0}}


def _withdrawn_once(site: FaultSite, job_id: str, gone: set[str]) -> list[str]:
    """What is wrong with the withdrawals of ``job_id``: each dataset of ``gone``
    deleted, by exactly one finished withdrawal object, and nothing else."""
    problems = []
    local = site.local_datasets()
    not_deleted = sorted(d for d in gone if local.get(d) != "deleted")
    if not_deleted:
        problems.append(f"{len(not_deleted)} vanished dataset(s) not withdrawn: "
                        f"{not_deleted[:5]}")
    rows = site.query(
        "SELECT package_id, count(*) FILTER (WHERE report_status = 'deleted'), count(*) "
        "FROM harvest_object o JOIN harvest_object_extra e ON e.harvest_object_id = o.id "
        "AND e.key = 'harvest_withdrawal' WHERE o.harvest_job_id = :job "
        "GROUP BY package_id", job=job_id)
    objects = {row[0]: (row[1], row[2]) for row in rows}
    twice = sorted(d for d, (done, total) in objects.items() if done != 1 or total != 1)
    if twice:
        problems.append(f"{len(twice)} dataset(s) without exactly one withdrawal: "
                        f"{[(d, objects[d]) for d in twice[:5]]}")
    if set(objects) != gone:
        problems.append(f"withdrawal objects for {len(objects)} dataset(s), "
                        f"{len(gone)} vanished")
    return problems


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_while_withdrawing_vanished_datasets(backend, remote, fault_proxy,
                                                     make_fault_site):
    site = make_fault_site(backend, "withdraw")
    kept, gone = remote.public_ids(WITHDRAW_KEPT), remote.public_ids(WITHDRAW_GONE)
    harvest = Harvest(site, fault_proxy, remote, config={
        **REMOVAL, "organizations_filter_include": [WITHDRAW_KEPT, WITHDRAW_GONE]})
    harvest.remote_ids = {**kept, **gone}
    harvest.new_job()
    harvest.run()
    first = {d for d, state in site.local_datasets().items() if state == "active"}
    problems = [] if set(harvest.remote_ids) <= first else [
        f"first harvest: {len(set(harvest.remote_ids) - first)} dataset(s) missing"]

    with site.engine.begin() as connection:
        connection.execute(sa.text("UPDATE harvest_source SET config = :config "
                                   "WHERE id = :id"), {"id": harvest.source_id,
                           "config": json.dumps({**REMOVAL, "organizations_filter_include":
                                                 [WITHDRAW_KEPT]})})
    harvest.remote_ids = kept
    harvest.snapshot()
    harvest.imported &= set(kept)
    harvest.new_job()

    def withdrawn() -> int:
        return int(site.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = :job "
            "AND report_status = 'deleted'", job=harvest.job))

    def kill_fetch() -> None:
        harvest.fetch.kill9()
        harvest.fetch.start()

    killer = EveryNth(withdrawn, max(1, len(gone) // (WITHDRAW_KILLS + 1)),
                      WITHDRAW_KILLS, kill_fetch)
    seconds = harvest.run(killer)

    problems += _withdrawn_once(site, harvest.job, set(gone))
    if harvest.fetch.kills < 2:
        problems.append(f"the fetch consumer was killed {harvest.fetch.kills} time(s)")
    harvest.verdict(
        backend, "8 kill -9 while withdrawing",
        f"fetch x{harvest.fetch.kills} while withdrawing {len(gone)} of "
        f"{len(kept) + len(gone)}", harvest.outcome(), problems,
        time.monotonic() - harvest.started)
    print(f"\n[{backend}] withdrawal: fetch killed at {killer.at} withdrawn; "
          f"job took {seconds:.0f} s")

"""Fixtures of the faults suite (``make test-faults``).

The suite is long (a real harvest of 1,000+ datasets per scenario): ``pytest tests``
(``make test``) deselects it. ``HARVEST_FAULTS=1`` (set by ``make test-faults``)
selects it.

Session-wide: the remote CKAN (seeded once, kept between runs), the fault proxy in
front of it, and one private broker per backend. Per scenario: an empty local
database and index, and a new :class:`~tests.faults.site.FaultSite`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ckanext.harvest.model import migrations
from tests.faults import report
from tests.faults.brokers import Broker, make_broker
from tests.faults.proxy import FaultProxy, Mode
from tests.faults.remote import FaultsRemote
from tests.faults.site import FaultSite

ENABLE_ENV = "HARVEST_FAULTS"
#: The proxy holds a hanging request this long: more than the consumers' read
#: timeout (tests.faults.site.HTTP_TIMEOUTS).
HANG_SECONDS = 8.0


def _enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection scenario (make test-faults, HARVEST_FAULTS=1)")


def pytest_collection_modifyitems(config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if _enabled():
        return
    deselected = [item for item in items if item.get_closest_marker("faults")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not report.RESULTS:
        return
    path = report.write(report.RESULTS)
    terminalreporter.section("fault injection")
    terminalreporter.write_line(report.table(report.RESULTS))
    terminalreporter.write_line(f"(written to {path})")


@pytest.fixture(scope="session")
def faults_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def remote(faults_dir: Path) -> Iterator[FaultsRemote]:
    server = FaultsRemote(faults_dir / "remote")
    try:
        started = time.monotonic()
        server.start()
        done = server.ensure_catalogue()
        print(f"\n[faults] remote CKAN {server.describe()}: catalogue {done} in "
              f"{time.monotonic() - started:.0f} s")
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def proxy(remote: FaultsRemote) -> Iterator[FaultProxy]:
    server = FaultProxy(remote.url, hang_seconds=HANG_SECONDS).start()
    yield server
    server.close()


@pytest.fixture
def fault_proxy(proxy: FaultProxy) -> FaultProxy:
    """The proxy, forwarding everything, its counters reset."""
    proxy.set(Mode.OK)
    proxy.reset_counts()
    return proxy


@pytest.fixture(scope="session")
def brokers(faults_dir: Path) -> Iterator[Callable[[str], Broker]]:
    """``brokers(backend)``: the private broker of a backend, started on first use."""
    started: dict[str, Broker] = {}

    def get(backend: str) -> Broker:
        if backend not in started:
            started[backend] = make_broker(backend, faults_dir / f"broker-{backend}").start()
        broker = started[backend]
        if not broker.ping():  # a scenario that failed half-way may have left it down
            broker.start()
        return broker

    yield get
    for broker in started.values():
        broker.close()


@pytest.fixture
def make_fault_site(tmp_path: Path, reset_db: Callable[[], None],
                    reset_index: Callable[[], None], brokers: Callable[[str], Broker]
                    ) -> Iterator[Callable[..., FaultSite]]:
    """``make_fault_site(backend, label, options=None)``: a site on an empty database."""
    sites: list[FaultSite] = []

    def make(backend: str, label: str, options: dict[str, str] | None = None) -> FaultSite:
        if not sites:
            reset_db()
            migrations.upgrade()
            reset_index()
        directory = tmp_path / f"{label}-{backend}-{len(sites)}"
        directory.mkdir()
        site = FaultSite(directory, brokers(backend), label, options)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()

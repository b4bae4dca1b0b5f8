"""A stalled job with real consumers, and ``job --wait`` in a terminal.

A private harvesting site (``tests/support/site.py``) runs real ``ckan
harvester`` gather and fetch consumers on Redis; ``ckan.harvest.stall_minutes``
is 0.03 (1.8 seconds) and the status e-mails go to a real local SMTP sink.

The fetch consumer is paused with SIGSTOP in the middle of a job: ``ckan
harvester run`` marks the job stalled and mails the sysadmin once, however
often it runs; ``job-status`` says so. After SIGCONT the job finishes. Then
``job SOURCE --wait`` runs in a pseudo-terminal: it shows its progress bar
and prints the finished job's statistics.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller
from ckan.tests import factories

from ckanext.harvest.tests import factories as harvest_factories
from tests.lib.test_mail import _Collector
from tests.support.marks import harvest_site
from tests.support.site import COMMAND_TIMEOUT, REPO, datasets, free_port

pytestmark = harvest_site()

SITE_TITLE = "Stall Test Portal"
STALL_SUBJECT = SITE_TITLE + " - Harvesting Job - Stall Notification"


@pytest.fixture
def smtp():
    collector = _Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield collector, controller.port
    controller.stop()


def _stop_after_first_objects(site, job_id, fetch, timeout=60.0):
    """SIGSTOP the fetch consumer as soon as an object of the job is complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fetch.check_alive()
        if site.object_states(job_id).get("COMPLETE", 0) >= 1:
            os.kill(fetch.process.pid, signal.SIGSTOP)
            return
        time.sleep(0.05)
    pytest.fail("no object completed:\n" + site.diagnostics(job_id))


def _stall_record(site, job_id):
    return site.redis().hgetall("{}:ckanext-harvest:stall:{}".format(site.site_id, job_id))


class Terminal:
    """``ckan harvester <args>`` with its stdout on a pseudo-terminal."""

    def __init__(self, site, *args):
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            site.command(*args), stdin=subprocess.DEVNULL, stdout=slave,
            stderr=subprocess.PIPE, env=dict(site.env, COLUMNS="120"), cwd=REPO)
        os.close(slave)
        self.output = ""

    def _read(self, wait):
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # the terminal closed: the process ended
            return False
        self.output += chunk.decode("utf-8", "replace")
        return bool(chunk)

    def read_until(self, pattern, timeout=COMMAND_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            if not self._read(0.2) and self.process.poll() is not None:
                break
        pytest.fail("no {!r} in the output:\n{!r}".format(pattern, self.output))

    def finish(self):
        """Read until the process ends; its exit status and stderr."""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline and (self._read(0.2) or self.process.poll() is None):
            pass
        os.close(self.master)
        self.process.wait(timeout=COMMAND_TIMEOUT)
        return self.process.returncode, self.process.stderr.read().decode()


def test_paused_fetch_consumer_stalls_the_job_once_and_sigcont_finishes_it(make_site, smtp):
    collector, port = smtp
    factories.Sysadmin(name="ops", email="ops@example.org")
    site = make_site("redis", "stall", options={
        "ckan.harvest.stall_minutes": "0.03",
        "ckan.harvest.status_mail.errored": "true",
        "smtp.server": "127.0.0.1:{}".format(port),
        "ckan.site_title": SITE_TITLE,
    })
    gather, fetch = site.consumer("gather"), site.consumer("fetch")
    gather.start()
    fetch.start()
    source_id = site.create_source("stall-source", {"datasets": datasets(20)})
    harvest_factories.HarvestSource(name="wait-source", url="http://wait.example.org/",
                                    config=json.dumps({"datasets": datasets(12, start=100)}))
    job_id = site.create_job("stall-source", source_id)

    _stop_after_first_objects(site, job_id, fetch)
    try:
        done_when_paused = site.object_states(job_id).get("COMPLETE", 0)
        time.sleep(0.5)  # and the run takes seconds to start: > 1.8 s unmoved
        site.ckan("run")
        site.ckan("run")
        record = _stall_record(site, job_id)
        status = site.ckan("job-status", job_id).stdout
        mails_while_stalled = list(collector.mails)
    finally:
        os.kill(fetch.process.pid, signal.SIGCONT)
    site.wait_until_finished(job_id, timeout=120)

    assert done_when_paused < 20
    assert site.job(job_id).status == "Finished"
    assert site.object_states(job_id) == {"COMPLETE": 20}
    assert "stalled" in record and record["mailed"] == "1"
    assert "\tstalled: yes, objects unmoved since " in status
    assert re.search(r"\tobjects: \d+ of 20 done", status)
    # one mail, to the one sysadmin with an address, however often run ran
    assert [(mail.rcpt_tos, mail.subject) for mail in mails_while_stalled] == [
        (["ops@example.org"], STALL_SUBJECT)]
    assert len(collector.mails) == 1
    assert "Harvest Job Id: {}".format(job_id) in collector.mails[0].body

    # job --wait in a terminal: a progress bar with the ETA (shown while the
    # fetch consumer is paused again), then the finished job's statistics
    terminal = Terminal(site, "job", "wait-source", "--wait")
    wait_job_id = terminal.read_until(r"\tJob id: (\S+)")[1]
    _stop_after_first_objects(site, wait_job_id, fetch)
    try:
        paused_at = terminal.read_until(r"Harvesting wait-source .*?(\d+)/12  ETA \d+")
    finally:
        os.kill(fetch.process.pid, signal.SIGCONT)
    code, errors = terminal.finish()

    assert code == 0, terminal.output + errors
    assert 0 < int(paused_at[1]) < 12
    assert "12/12" in terminal.output
    assert terminal.output.rstrip().endswith(
        "Job {} finished: added 12, updated 0, not modified 0, deleted 0, errored 0".format(
            wait_job_id))
    assert site.job(wait_job_id).status == "Finished"
    assert site.object_states(wait_job_id) == {"COMPLETE": 12}
    assert len(collector.mails) == 1

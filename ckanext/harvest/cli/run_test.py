"""``ckan harvester run-test``: harvest one source in this process.

Meant for developing and debugging harvesters: the job's three stages run
here (:mod:`ckanext.harvest.lib.testrun`) instead of in the consumers, with a
progress bar over the fetched objects in a terminal.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, Optional, cast

import click

from ckanext.harvest.cli.base import (
    SOURCE_ARG,
    NoProgress,
    Progress,
    action,
    guarded,
    progress_bars,
    source_dict,
)
from ckanext.harvest.cli.output import format_jobs
from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.model import JobStatus


class _ProgressHarvester:
    """Wraps a harvester to advance a progress bar as objects are fetched."""

    def __init__(self, harvester: IHarvester, progress: Progress, label: str,
                 stack: ExitStack) -> None:
        self._harvester = harvester
        self._progress = progress
        self._label = label
        self._stack = stack
        self._bar: Any = None

    def gather_stage(self, harvest_job: Any) -> Any:
        ids = self._harvester.gather_stage(harvest_job)
        if isinstance(ids, list) and ids:
            self._bar = self._stack.enter_context(self._progress(ids, self._label))
        return ids

    def fetch_stage(self, harvest_object: Any) -> Any:
        try:
            return self._harvester.fetch_stage(harvest_object)
        finally:
            if self._bar is not None:
                self._bar.update(1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._harvester, name)


class JobToAbort(Exception):
    """The source has a ``Running`` job; run-test may abort it."""

    def __init__(self, source: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        super().__init__("Source {} has a running job".format(source["id"]))
        self.source = source
        self.jobs = jobs

    def describe(self) -> str:
        """The text shown before asking whether to abort the running job."""
        return '\nSource "{}" apparently has a "Running" job:\n{}'.format(
            self.source.get("name") or self.source["id"], format_jobs(self.jobs)
        )


def _job_for_test(source: dict[str, Any], confirm_abort: Callable[[JobToAbort], bool],
                  echo: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """A job to run: a new one, the aborted running one, or the pending New one."""
    from ckanext.harvest.logic import HarvestJobExists

    try:
        return action("harvest_job_create", {"source_id": source["id"]})
    except HarvestJobExists:
        pass
    running = action("harvest_job_list",
                     {"source_id": source["id"], "status": JobStatus.RUNNING.value})
    if running:
        if not confirm_abort(JobToAbort(source, running)):
            return None
        return action("harvest_job_abort", {"source_id": source["id"]})
    echo("Reusing existing harvest job")
    new_jobs = action("harvest_job_list",
                      {"source_id": source["id"], "status": JobStatus.NEW.value})
    assert len(new_jobs) == 1, "Expected exactly one New job, found {}".format(
        len(new_jobs))
    return new_jobs[0]


def run_test_harvester(
    source_id_or_name: str,
    force_import: Optional[str] = None,
    confirm_abort: Callable[[JobToAbort], bool] = lambda pending: False,
    echo: Callable[[str], None] = print,
    progress: Optional[Progress] = None,
    force: bool = False,
) -> bool:
    """Gather, fetch and import a job of a source here, without the consumers.

    :param force_import: only import the objects whose guid is in this text
        (after its last ``=``)
    :param confirm_abort: asked whether to abort a running job of the source
    :param force: import every record, even those whose content hash is
        unchanged since the last import
    :returns: False when the user declined to abort the running job
    :raises SourceNotFound:
    :raises RuntimeError: no harvester for the source's type
    """
    from ckanext.harvest import queue
    from ckanext.harvest.lib.testrun import run_harvest_job
    from ckanext.harvest.model import HarvestJob

    source = source_dict(source_id_or_name)
    job_dict = _job_for_test(source, confirm_abort, echo)
    if job_dict is None:
        return False
    job = HarvestJob.get(job_dict["id"])
    if force_import:
        job.force_import = force_import.split("=")[-1]
    source_type = str(source.get("source_type"))
    harvester = queue.get_harvester(source_type)
    if harvester is None:
        raise RuntimeError("No harvester found for type: {}".format(source_type))
    with ExitStack() as stack:
        label = "Harvesting {}".format(source.get("name") or source["id"])
        wrapped = _ProgressHarvester(harvester, progress or NoProgress, label, stack)
        run_harvest_job(job, cast(IHarvester, wrapped), force=force)
    return True


@click.command(name="run-test", short_help="Harvest one source in this process.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@click.argument("force_import", metavar="[GUID]", required=False)
@click.option("--force", is_flag=True, default=False,
              help="Import every record, even those unchanged since their last "
                   "import (same content hash).")
@guarded()
def run_test_command(source_id_or_name: str, force_import: Optional[str],
                     force: bool) -> None:
    """Harvest one source in this process, to develop or debug a harvester.

    Gathers, fetches and imports a job of the source here, without the
    consumers (the job is also put on the gather queue). With GUID, only the
    objects whose guid is contained in GUID are imported. A pending New job
    is reused; if the source has a Running job, you are asked whether to
    abort it. With --force, every record is imported, even those unchanged
    since their last import (same content hash).
    """
    def confirm(pending: JobToAbort) -> bool:
        click.echo(pending.describe())
        answer = click.prompt("Abort it? (y/n)", default="", show_default=False,
                              prompt_suffix="")
        return answer == "y"

    if not run_test_harvester(source_id_or_name, force_import, confirm,
                              echo=click.echo, progress=progress_bars(), force=force):
        raise click.exceptions.Exit(1)

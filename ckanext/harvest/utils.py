"""Shared names of the harvest framework and the implementations of its CLI.

:mod:`ckanext.harvest.cli` parses the command line and prints; the functions
here call the harvest actions (as the site user) and build the text the
commands print, in the formats scripts rely on (``cli.md``). They raise the
actions' exceptions; the CLI turns them into error lines.

Long operations accept a ``progress`` factory, ``progress(items, label)``,
returning a context manager that iterates ``items`` and has ``update(n)``
(``click.progressbar`` in a terminal); the default shows nothing.
"""
from __future__ import annotations

import datetime
import logging
from contextlib import ExitStack
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ckan import model
from ckan.plugins import toolkit

log = logging.getLogger(__name__)

DATASET_TYPE_NAME = "harvest"


def N_(message: str) -> str:
    """Mark ``message`` for the message catalogue without translating it: the
    template that shows it translates it (``{{ _(value) }}``)."""
    return message

#: ``progress(items, label)``: see the module docstring.
Progress = Callable[[Sequence[Any], str], Any]

_NEW = "New"
_RUNNING = "Running"


class SourceNotFound(toolkit.ObjectNotFound):
    """No harvest source has the id or name given on the command line."""

    def __init__(self, reference: str) -> None:
        super().__init__("Source <{}> not found.".format(reference))
        self.reference = reference

    def __str__(self) -> str:
        return "Source <{}> not found.".format(self.reference)


class NoProgress:
    """The silent stand-in for ``click.progressbar`` (not a terminal)."""

    def __init__(self, items: Sequence[Any], label: str = "") -> None:
        self.items = items

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def update(self, n_steps: int) -> None:
        """Nothing to show."""


# -- context and output blocks -----------------------------------------------------


def _admin_user() -> dict[str, Any]:
    """The site user (a sysadmin), as ``get_site_user`` returns it."""
    return toolkit.get_action("get_site_user")({"ignore_auth": True}, {})


def _context(**extra: Any) -> Any:
    """Action context of the CLI: the site user, plus ``extra`` keys."""
    context = {
        "model": model,
        "session": model.Session,
        "user": _admin_user()["name"],
    }
    context.update(extra)
    return context


def _action(name: str, data_dict: dict[str, Any], **context: Any) -> Any:
    return toolkit.get_action(name)(_context(**context), data_dict)


def _there_are(what: str, sequence: Sequence[Any], condition: str = "") -> str:
    """``There is 1 harvest source`` / ``There are 3 new harvest jobs``."""
    count = len(sequence)
    return "There {} {} {}{}{}".format(
        "is" if count == 1 else "are",
        count,
        condition.lower() + " " if condition else "",
        what,
        "" if count == 1 else "s",
    )


def _print_harvest_source(source: dict[str, Any]) -> str:
    """The source block: ``Source id: ...`` lines and a blank line."""
    lines = ["Source id: {}".format(source.get("id"))]
    if "name" in source:
        lines.append("\tname: {}".format(source["name"]))
    lines.append("\turl: {}".format(source.get("url")))
    lines.append("\ttype: {}".format(source.get("source_type") or source.get("type")))
    active = source["active"] if "active" in source else source.get("state") == "active"
    lines.append("\tactive: {}".format(active))
    lines.append("\tfrequency: {}".format(source.get("frequency")))
    lines.append("\tjobs: {}".format((source.get("status") or {}).get("job_count")))
    return "\n".join(lines) + "\n\n"


def _print_harvest_sources(sources: Iterable[dict[str, Any]]) -> str:
    return "".join(_print_harvest_source(source) for source in sources)


def _print_harvest_job(job: dict[str, Any]) -> str:
    """The job block: ``\\tJob id: ...`` lines."""
    gather_errors = job.get("gather_errors", [])
    lines = [
        "\tJob id: {}".format(job.get("id")),
        "\t\tstatus: {}".format(job.get("status")),
        "\t\tsource: {}".format(job.get("source_id")),
        "\t\tobjects: {}".format(len(job.get("objects", []))),
        "\t\tgather_errors: {}".format(len(gather_errors)),
    ]
    lines.extend("\t\t\t{}".format(error.get("message")) for error in gather_errors)
    return "\n".join(lines) + "\n"


def _print_harvest_jobs(jobs: Iterable[dict[str, Any]]) -> str:
    return "".join(_print_harvest_job(job) for job in jobs)


# -- sources -----------------------------------------------------------------------


def _source_dict(reference: str) -> dict[str, Any]:
    """The source dataset with this id or name.

    :raises SourceNotFound: there is none
    """
    try:
        return _action("harvest_source_show", {"id": reference})
    except toolkit.ObjectNotFound:
        raise SourceNotFound(reference) from None


def create_harvest_source(
    name: str,
    url: str,
    type: str,
    title: Optional[str] = None,
    active: bool = True,
    owner_org: Optional[str] = None,
    frequency: str = "MANUAL",
    config: Optional[str] = None,
) -> str:
    """Create a source (and start a job when ``frequency`` is empty).

    :returns: the text to print
    :raises ValidationError: invalid source fields
    """
    data_dict = {
        "name": name,
        "url": url,
        "source_type": type,
        "title": title,
        "active": active,
        "owner_org": owner_org,
        "frequency": frequency,
        "config": config,
    }
    source = _action("harvest_source_create", data_dict, ignore_auth=True)
    output = "Created new harvest source:\n" + _print_harvest_source(source)
    sources = _action("harvest_source_list", {})
    output += _there_are("harvest source", sources) + "\n"
    if not frequency:
        _action("harvest_job_create", {"source_id": source["id"], "run": True})
        output += "A new Harvest Job for this source has also been created\n"
    return output


def show_harvest_source(source_id_or_name: str) -> str:
    """The source block of a source.

    :raises SourceNotFound:
    """
    return _print_harvest_source(_source_dict(source_id_or_name))


def remove_harvest_source(source_id_or_name: str) -> None:
    """Deactivate a source (its dataset is marked deleted); what it harvested stays.

    :raises SourceNotFound:
    """
    source = _source_dict(source_id_or_name)
    _action("harvest_source_delete", {"id": source["id"]})


def clear_harvest_source(source_id_or_name: str, progress: Optional[Progress] = None) -> None:
    """Hard-delete what a source harvested, and its history; the source remains.

    :raises SourceNotFound:
    """
    source = _source_dict(source_id_or_name)
    label = "Clearing harvest source {}".format(source_id_or_name)
    with (progress or NoProgress)([source["id"]], label) as bar:
        for source_id in bar:
            _action("harvest_source_clear", {"id": source_id})


def clear_harvest_source_history(
    source_id_or_name: Optional[str] = None, keep_current: bool = False
) -> str:
    """Delete the job history of one source, or of every source.

    Without a source, the queues are purged first (unless ``keep_current``):
    their messages would refer to the jobs and objects deleted.

    :returns: the confirmation line to print
    :raises SourceNotFound:
    """
    if source_id_or_name:
        source = _source_dict(source_id_or_name)
        _action("harvest_source_job_history_clear",
                {"id": source["id"], "keep_current": keep_current})
        return "Cleared job history of harvest source: {}".format(source_id_or_name)
    if not keep_current:
        purge_queues()
    cleared = _action("harvest_sources_job_history_clear", {"keep_current": keep_current})
    return "Cleared job history for all harvest sources: {} source(s)".format(len(cleared))


def list_sources(all: bool = False) -> str:
    """Source blocks of the active sources (``all``: inactive ones too)."""
    sources = _action("harvest_source_list", {} if all else {"only_active": True})
    return _print_harvest_sources(sources) + _there_are(
        "harvest source", sources, "" if all else "active"
    ) + "\n"


# -- jobs --------------------------------------------------------------------------


def create_job(source_id_or_name: str) -> str:
    """Start a job for a source now: it is sent to the gather queue.

    :returns: the job block and the count of ``New`` jobs
    :raises SourceNotFound:
    :raises HarvestJobExists: the source has a New or Running job
    """
    source = _source_dict(source_id_or_name)
    job = _action("harvest_job_create", {"source_id": source["id"], "run": True})
    new_jobs = _action("harvest_job_list", {"status": _NEW})
    return _print_harvest_job(job) + _there_are("harvest job", new_jobs, "new") + "\n"


def list_jobs() -> str:
    """Job blocks of every job, newest first, and their count."""
    jobs = _action("harvest_job_list", {})
    return _print_harvest_jobs(jobs) + _there_are("harvest job", jobs) + "\n"


def abort_job(job_or_source_id: str) -> str:
    """Abort a job (or the latest job of a source).

    :returns: ``Job status: <status>``
    :raises ObjectNotFound: no such job or source
    """
    job = _action("harvest_job_abort", {"id": job_or_source_id})
    return "Job status: {}".format(job["status"])


def abort_failed_jobs(
    job_life_span: Any = False, include: Optional[str] = None, exclude: Optional[str] = None
) -> str:
    """Abort the running jobs older than their life span.

    :returns: the action's summary line
    """
    return _action(
        "harvest_abort_failed_jobs",
        {"life_span": job_life_span, "include": include, "exclude": exclude},
    )


def job_all() -> str:
    """Create (and start) a job for every active source without an open job."""
    jobs = _action("harvest_job_create_all", {})
    return "Created {} new harvest jobs".format(len(jobs))


def run_harvester() -> None:
    """Start due scheduled jobs and close the finished ones (cron)."""
    _action("harvest_jobs_run", {})


# -- queues ------------------------------------------------------------------------


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


# -- run-test ----------------------------------------------------------------------


class _ProgressHarvester:
    """Wraps a harvester to advance a progress bar as objects are fetched."""

    def __init__(self, harvester: Any, progress: Progress, label: str,
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
            self.source.get("name") or self.source["id"], _print_harvest_jobs(self.jobs)
        )


def _job_for_test(source: dict[str, Any], confirm_abort: Callable[[JobToAbort], bool],
                  echo: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """A job to run: a new one, the aborted running one, or the pending New one."""
    from ckanext.harvest.logic import HarvestJobExists

    try:
        return _action("harvest_job_create", {"source_id": source["id"]})
    except HarvestJobExists:
        pass
    running = _action("harvest_job_list", {"source_id": source["id"], "status": _RUNNING})
    if running:
        if not confirm_abort(JobToAbort(source, running)):
            return None
        return _action("harvest_job_abort", {"source_id": source["id"]})
    echo("Reusing existing harvest job")
    new_jobs = _action("harvest_job_list", {"source_id": source["id"], "status": _NEW})
    assert len(new_jobs) == 1, "Expected exactly one New job, found {}".format(
        len(new_jobs))
    return new_jobs[0]


def run_test_harvester(
    source_id_or_name: str,
    force_import: Optional[str] = None,
    confirm_abort: Callable[[JobToAbort], bool] = lambda pending: False,
    echo: Callable[[str], None] = print,
    progress: Optional[Progress] = None,
) -> bool:
    """Gather, fetch and import a job of a source here, without the consumers.

    Meant for developing and debugging harvesters.

    :param force_import: only import the objects whose guid is in this text
        (after its last ``=``)
    :param confirm_abort: asked whether to abort a running job of the source
    :returns: False when the user declined to abort the running job
    :raises SourceNotFound:
    :raises RuntimeError: no harvester for the source's type
    """
    from ckanext.harvest import queue
    from ckanext.harvest.model import HarvestJob

    source = _source_dict(source_id_or_name)
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
    try:
        from ckanext.harvest.tests.lib import run_harvest_job
    except ImportError as error:
        raise RuntimeError(
            "run-test needs the test requirements (factory-boy): {}".format(error)
        ) from error
    with ExitStack() as stack:
        label = "Harvesting {}".format(source.get("name") or source["id"])
        run_harvest_job(job, _ProgressHarvester(
            harvester, progress or NoProgress, label, stack))
    return True


# -- import, reindex, maintenance --------------------------------------------------


def import_stage(
    source_id_or_name: Optional[str] = None,
    no_join_datasets: bool = False,
    harvest_object_id: Optional[str] = None,
    guid: Optional[str] = None,
    package_id: Optional[str] = None,
    segments: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> str:
    """Run the import stage again for current objects.

    :returns: ``<n> objects reimported``
    :raises SourceNotFound:
    """
    source_id = _source_dict(source_id_or_name)["id"] if source_id_or_name else None
    data_dict = {
        "source_id": source_id,
        "harvest_object_id": harvest_object_id,
        "package_id": package_id,
        "guid": guid,
    }
    options = {"join_datasets": not no_join_datasets, "segments": segments}
    if progress is None:
        count = _action("harvest_objects_import", data_dict, **options)
    else:
        count = _import_one_by_one(data_dict, options, progress)
    return "{} objects reimported".format(count)


def _import_one_by_one(data_dict: dict[str, Any], options: dict[str, Any],
                       progress: Progress) -> int:
    """Import object by object, advancing a progress bar."""
    from ckanext.harvest.lib import objects

    toolkit.check_access("harvest_objects_import", _context(), data_dict)
    ids = [obj.id for obj in objects.objects_to_import(data_dict, dict(options))]
    count = 0
    with progress(ids, "Importing harvest objects") as bar:
        for object_id in bar:
            count += _action("harvest_objects_import", {"harvest_object_id": object_id},
                             join_datasets=False)
    return count


def reindex(progress: Optional[Progress] = None) -> None:
    """Rebuild the search index entries of the active source datasets."""
    if progress is None:
        toolkit.get_action("harvest_sources_reindex")(
            {"model": model, "user": _admin_user()["name"]}, {}
        )
        return
    from ckanext.harvest.lib import sources

    toolkit.check_access("harvest_sources_reindex", _context(), {})
    with progress(sources.active_source_ids(), "Reindexing harvest sources") as bar:
        for source_id in bar:
            _action("harvest_source_reindex", {"id": source_id})


def clean_harvest_log() -> int:
    """Delete the ``harvest_log`` records older than ``ckan.harvest.log_timeframe`` days.

    :returns: how many records were deleted
    """
    from ckanext.harvest.model import HarvestLog

    days = toolkit.config.get("ckan.harvest.log_timeframe")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    condition = HarvestLog.created <= now - datetime.timedelta(days=int(days))
    deleted = model.Session.query(HarvestLog).filter(condition).delete(
        synchronize_session=False
    )
    model.Session.commit()
    log.info("Deleted %s harvest log records older than %s days", deleted, days)
    return deleted


def harvesters_info() -> list[dict[str, Any]]:
    """What ``harvesters_info_show`` says about the loaded harvesters."""
    return _action("harvesters_info_show", {})


# -- views (web.md) ----------------------------------------------------------------
# The implementations of the web views are added below.
#
# Each view builds its own action contexts (``{'model', 'user'}``), maps
# ObjectNotFound to 404 and NotAuthorized to 403, and flashes the messages
# of web.md. ``views.py`` only parses the request and picks the function.

#: What the confirmation page of each state-changing view checks first.
_CONFIRM_AUTH = {
    "refresh": ("harvest_job_create", "source_id"),
    "clear": ("harvest_source_clear", "id"),
    "delete": ("harvest_source_delete", "id"),
}
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _not_auth_message() -> str:
    """The message of the 403 pages of the harvest views."""
    return toolkit._("Not authorized to see this page")


def _view_context(**extra: Any) -> Any:
    """A fresh action context for the current user (plus ``extra`` keys)."""
    context: dict[str, Any] = {"model": model, "user": toolkit.current_user.name}
    context.update(extra)
    return context


def _view_action(name: str, data_dict: dict[str, Any], **context: Any) -> Any:
    return toolkit.get_action(name)(_view_context(**context), data_dict)


class _Aborting:
    """Context manager: ObjectNotFound → 404 (``not_found``), NotAuthorized → 403."""

    def __init__(self, not_found: str, own_message: bool = False) -> None:
        self.not_found = not_found
        self.own_message = own_message

    def __enter__(self) -> _Aborting:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            return
        if issubclass(exc_type, toolkit.ObjectNotFound):
            message = str(exc or "") if self.own_message else ""
            toolkit.abort(404, message or self.not_found)
        if issubclass(exc_type, toolkit.NotAuthorized):
            toolkit.abort(403, _not_auth_message())


def _source_not_found() -> _Aborting:
    return _Aborting(toolkit._("Harvest source not found"))


def _job_not_found() -> _Aborting:
    return _Aborting(toolkit._("Harvest job not found"))


def _render(template: str, **extra_vars: Any) -> str:
    extra_vars.setdefault("dataset_type", DATASET_TYPE_NAME)
    return toolkit.render(template, extra_vars)


def _show_source(reference: str) -> dict[str, Any]:
    """The source dataset (id or name) as the current user may see it; 404/403."""
    with _source_not_found():
        return _view_action("harvest_source_show", {"id": reference})


def _get_source_for_job(source_id: str) -> dict[str, Any]:
    """The source of the job pages; 404 ``Harvest source not found``, 403."""
    return _show_source(source_id)


def admin_view(id: str) -> str:
    """``harvester.admin``: the dashboard of a source (update permission)."""
    with _source_not_found():
        toolkit.check_access("harvest_source_update", _view_context(), {"id": id})
    return _render("source/admin.html", harvest_source=_show_source(id))


def about_view(id: str) -> str:
    """``harvester.about``: the description and details of a source."""
    return _render("source/about.html", harvest_source=_show_source(id))


def job_list_view(source: str) -> str:
    """``harvester.job_list``: every job of a source, newest first."""
    source_dict = _get_source_for_job(source)
    with _source_not_found():
        jobs = _view_action("harvest_job_list", {"source_id": source_dict["id"]})
    return _render("source/job/list.html", harvest_source=source_dict, jobs=jobs)


def job_show_view(
    id: str, source_dict: Optional[dict[str, Any]] = None, is_last: bool = False
) -> str:
    """``harvester.job_show``: the report of a job."""
    with _job_not_found():
        job = _view_action("harvest_job_show", {"id": id})
        report = _view_action("harvest_job_report", {"id": id})
    if not source_dict:
        source_dict = _get_source_for_job(job["source_id"])
    return _render(
        "source/job/read.html", harvest_source=source_dict, job=job,
        job_report=report, is_last_job=is_last,
    )


def job_show_last_view(source: str) -> str:
    """``harvester.job_show_last``: the report of the latest job of a source."""
    source_dict = _get_source_for_job(source)
    last_job = (source_dict.get("status") or {}).get("last_job")
    if not last_job:
        return toolkit.abort(404, toolkit._("No jobs yet for this source"))
    return job_show_view(last_job["id"], source_dict=source_dict, is_last=True)


def _error_text(error: Exception) -> str:
    if isinstance(error, toolkit.ValidationError):
        summary = error.error_summary or {}
        return "; ".join("{}: {}".format(k, v) for k, v in summary.items()) or str(error)
    return str(error)


def _flash_unexpected(error: Exception) -> None:
    """An error the user cannot fix (broker down...): logged, and flashed."""
    log.exception("Harvest view failed")
    model.Session.rollback()
    toolkit.h.flash_error(
        toolkit._("An error occurred: [{}]").format(_error_text(error))
    )


def _abort_for(error: Exception, not_found: str) -> None:
    """404 for ObjectNotFound, 403 for NotAuthorized; nothing for other errors."""
    with _Aborting(not_found):
        raise error


def refresh_view(id: str) -> Any:
    """``harvester.refresh`` (POST): create and start a job for the source."""
    from ckanext.harvest.logic import HarvestJobExists, HarvestSourceInactiveError

    source_id = _show_source(id)["id"]
    try:
        _view_action("harvest_job_create", {"source_id": source_id, "run": True},
                     session=model.Session)
    except HarvestSourceInactiveError:
        toolkit.h.flash_error(toolkit._(
            "Cannot create new harvest jobs on inactive sources. First, please "
            'change the source status to "active".'
        ))
    except HarvestJobExists:
        toolkit.h.flash_notice(
            toolkit._("A harvest job has already been scheduled for this source")
        )
    except (toolkit.ObjectNotFound, toolkit.NotAuthorized) as error:
        _abort_for(error, toolkit._("Harvest source not found"))
    except Exception as error:  # broker down...: a message, not a 500
        _flash_unexpected(error)
    else:
        toolkit.h.flash_success(
            toolkit._("Harvest will start shortly. Refresh this page for updates.")
        )
    return toolkit.redirect_to("harvester.admin", id=id)


def clear_view(id: str) -> Any:
    """``harvester.clear`` (POST): delete the source's datasets, jobs and objects."""
    source_id = _show_source(id)["id"]
    try:
        _view_action("harvest_source_clear", {"id": source_id}, session=model.Session)
    except (toolkit.ObjectNotFound, toolkit.NotAuthorized) as error:
        _abort_for(error, toolkit._("Harvest source not found"))
    except Exception as error:  # search index down...: a message, not a 500
        _flash_unexpected(error)
    else:
        toolkit.h.flash_success(toolkit._("Harvest source cleared"))
    return toolkit.redirect_to("harvester.admin", id=id)


def delete_view(id: str, clear_source: Optional[bool] = None) -> Any:
    """``harvester.delete`` (POST): deactivate the source (and clear it).

    :param clear_source: also clear it; None: the ``clear`` query argument
        (``true`` or ``1``)
    """
    if clear_source is None:
        clear_source = toolkit.request.args.get("clear", "").lower() in ("true", "1")
    with _source_not_found():
        _view_action("harvest_source_delete", {"id": id}, clear_source=clear_source)
    if clear_source:
        toolkit.h.flash_success(toolkit._("Harvesting source successfully cleared"))
    else:
        toolkit.h.flash_success(toolkit._("Harvesting source successfully inactivated"))
    return toolkit.redirect_to("harvester.admin", id=id)


def job_abort_view(source: str, id: str) -> Any:
    """``harvester.job_abort`` (POST): stop a job."""
    with _job_not_found():
        _view_action("harvest_job_abort", {"id": id})
    toolkit.h.flash_success(toolkit._("Harvest job stopped"))
    return toolkit.redirect_to("harvester.admin", id=source)


def _confirm_job(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The source and the job of a job_abort confirmation; 404/403."""
    with _job_not_found():
        job = _view_action("harvest_job_show", {"id": job_id}, return_error_summary=False)
        toolkit.check_access("harvest_job_abort", _view_context(), {"id": job_id})
    return _get_source_for_job(job["source_id"]), job


def confirm_view(action: str, id: str, job_id: Optional[str] = None,
                 clear: bool = False) -> str:
    """The GET side of the state-changing views: a confirmation form.

    Nothing changes; the form posts back to the same URL with the CSRF token.

    :param action: ``refresh``, ``clear``, ``delete`` or ``job_abort``
    :param id: the source (id or name) of the URL
    :param job_id: the job, for ``job_abort``
    :param clear: for ``delete``: the ``clear`` query argument was set
    """
    job = None
    if action == "job_abort":
        source_dict, job = _confirm_job(job_id or "")
        form_action = toolkit.url_for("harvester.job_abort", source=id, id=job_id)
    else:
        source_dict = _show_source(id)
        auth, key = _CONFIRM_AUTH[action]
        with _source_not_found():
            toolkit.check_access(auth, _view_context(), {key: source_dict["id"]})
        url_args = {"clear": "True"} if action == "delete" and clear else {}
        form_action = toolkit.url_for("harvester." + action, id=id, **url_args)
    return _render(
        "source/confirm.html", harvest_source=source_dict, action=action, job=job,
        clear=clear, form_action=form_action,
    )


def _is_xml(text: str) -> bool:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        etree.fromstring(text.encode("utf-8"), parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        return False
    return True


def _is_json(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _without_xml_declaration(text: str) -> str:
    start = text.find("<?xml")
    end = text.find("?>", start)
    if start == -1 or end == -1:
        return text
    return text[:start] + text[end + 2:]


def _document(content: str) -> tuple[str, str]:
    """The body and content type of a raw harvested document."""
    if _is_xml(_without_xml_declaration(content)):
        if "<?xml" not in content.split("\n", 1)[0]:
            content = _XML_DECLARATION + content
        return content, "application/xml; charset=utf-8"
    if _is_json(content):
        return content, "application/json; charset=utf-8"
    # Never text/html: the document comes from a remote site (stored XSS).
    return content, "text/plain; charset=utf-8"


def object_show_view(id: str, ref_type: str = "object", response: Any = None) -> Any:
    """``harvester.object_show``: the raw document of a harvest object.

    :param id: the object id (``ref_type='object'``) or a dataset id or name
        (``ref_type='dataset'``: its current object)
    :param response: a Flask response to fill (default: a new one)
    """
    from flask import make_response

    data_dict = {"id": id} if ref_type == "object" else {"dataset_id": id}
    with _Aborting(toolkit._("Harvest object not found"), own_message=True):
        obj = _view_action("harvest_object_show", data_dict)
    content = obj.get("content") or (obj.get("extras") or {}).get("original_document")
    if not content:
        return toolkit.abort(404, toolkit._("No content found"))
    body, content_type = _document(content)
    response = response if response is not None else make_response()
    response.set_data(body)
    response.headers["Content-Type"] = content_type
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response

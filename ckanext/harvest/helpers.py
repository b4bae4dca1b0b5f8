"""Template helpers of the harvest web interface (``ITemplateHelpers``).

The helpers of the specification keep their names and results; the
``harvest_*`` extras feed the job chart, the job progress box, the
confirmation texts and the facet labels. Helpers call actions (or, for plain
counts, :mod:`ckanext.harvest.lib.progress`); none renders harvested text
unescaped.
"""
from __future__ import annotations

import datetime
import logging
import math
from typing import Any, Callable, Optional, Union

from ckan.lib.pagination import Page
from ckan.plugins import toolkit
from markupsafe import Markup

from ckanext.harvest.constants import DATASET_TYPE_NAME, N_
from ckanext.harvest.lib import harvesters, progress, stalls
from ckanext.harvest.model import UPDATE_FREQUENCIES, JobStatus, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "package_list_for_source",
    "package_count_for_source",
    "harvesters_info",
    "harvester_types",
    "harvest_frequencies",
    "link_for_harvest_object",
    "harvest_source_extra_fields",
    "get_harvest_source",
    "harvest_job_chart_data",
    "harvest_job_progress",
    "harvest_job_stall",
    "harvest_duration",
    "harvest_stats_items",
    "harvest_errors_by_message",
    "harvest_confirm_text",
    "harvest_facet_label",
    "harvest_source_type_title",
    "harvest_schedule_preview",
]

#: Datasets per page of a source page.
PACKAGES_PER_PAGE = 20
#: Jobs drawn by the chart of the source dashboard.
CHART_JOBS = 10

#: Job statistics in display order: (stats key, ``data-diff`` value, colour).
#: The colours are the fallbacks of the CSS variables of ``harvest.css``.
STATS_SERIES: tuple[tuple[str, str, str], ...] = (
    ("added", "added", "#198754"),
    ("updated", "updated", "#0d6efd"),
    ("not modified", "not modified", "#6c757d"),
    ("deleted", "deleted", "#6f42c1"),
    ("errored", "error", "#dc3545"),
)


#: Job statuses as the pages show them (``{{ _(job.status) }}``).
JOB_STATUS_LABELS = (N_("New"), N_("Running"), N_("Finished"), N_("Aborted"))


def _stats_labels() -> dict[str, tuple[str, str]]:
    """``{stats key: (badge label, chart label)}``, translated."""
    _ = toolkit._
    return {
        "added": (_("added"), _("Added")),
        "updated": (_("updated"), _("Updated")),
        "not modified": (_("not modified"), _("Not modified")),
        "deleted": (_("deleted"), _("Deleted")),
        "errored": (_("errors"), _("Errored")),
    }


def _context() -> Any:
    return {"user": toolkit.current_user.name if toolkit.current_user else ""}


def _action(name: str, data_dict: dict[str, Any], **context: Any) -> Any:
    return toolkit.get_action(name)(dict(_context(), **context), data_dict)


# -- helpers of the specification ----------------------------------------------------


def _source_fq(source_id: str) -> str:
    return '+harvest_source_id:"{0}"'.format(source_id)


def _current_page() -> int:
    try:
        return max(1, int(toolkit.request.args.get("page", 1)))
    except (TypeError, ValueError):
        return 1


def package_list_for_source(source_id: str) -> Markup:
    """The datasets of a source (20 a page, latest changes first) with a pager.

    :param source_id: the source id
    :returns: HTML: ``snippets/package_list.html`` and a pager, or
        ``snippets/package_list_empty.html``
    """
    page = _current_page()
    # include_private: CKAN's permission labels limit the list to what the
    # viewer may read (the original's ``ignore_capacity_check``).
    query = _action("package_search", {
        "fq": _source_fq(source_id),
        "rows": PACKAGES_PER_PAGE,
        "sort": "metadata_modified desc",
        "start": (page - 1) * PACKAGES_PER_PAGE,
        "include_private": True,
    })
    if not query["results"]:
        return Markup(toolkit.render_snippet("snippets/package_list_empty.html", {}))
    source_name = _source_name(source_id)

    def pager_url(q: Any = None, page: Optional[int] = None) -> str:
        return toolkit.url_for("{}.read".format(DATASET_TYPE_NAME), id=source_name, page=page)

    pager = Page(
        collection=query["results"], page=page, url=pager_url,
        item_count=query["count"], items_per_page=PACKAGES_PER_PAGE,
    )
    pager.items = query["results"]
    packages = toolkit.render_snippet(
        "snippets/package_list.html", {"packages": query["results"]}
    )
    return Markup(packages) + pager.pager()


def _source_name(source_id: str) -> str:
    # The page's own source dataset, when it is this one: showing it again
    # would count its status (jobs, datasets) a second time.
    shown = getattr(toolkit.g, "pkg_dict", None) or {}
    if shown.get("id") == source_id and shown.get("name"):
        return shown["name"]
    try:
        return _action("harvest_source_show", {"id": source_id})["name"]
    except (toolkit.ObjectNotFound, toolkit.NotAuthorized):
        return source_id


def package_count_for_source(source_id: str) -> int:
    """How many datasets of a source the viewer may see.

    :param source_id: the source id
    """
    query = _action("package_search", {
        "fq": _source_fq(source_id), "rows": 0, "include_private": True,
    })
    return int(query["count"])


def harvesters_info() -> list[dict[str, Any]]:
    """What ``harvesters_info_show`` says about the loaded harvesters."""
    return _action("harvesters_info_show", {})


def harvester_types() -> list[dict[str, str]]:
    """Options of the harvester type: ``[{'text': title, 'value': name}]``."""
    # The titles come from the harvesters (their catalogues translate them).
    titles = [(info["title"], info["name"]) for info in harvesters_info()]
    return [{"text": toolkit._(title), "value": name} for title, name in titles]


def harvest_frequencies() -> list[dict[str, str]]:
    """Options of the update frequency (``Manual`` ... ``Always``)."""
    return [
        {"text": toolkit._(frequency.title()), "value": frequency}
        for frequency in UPDATE_FREQUENCIES
    ]


def link_for_harvest_object(
    id: Optional[str] = None, guid: Optional[str] = None, text: Optional[str] = None
) -> Optional[Markup]:
    """A link to the raw document of a harvest object.

    :param id: the object id
    :param guid: the object's guid, when the id is not known
    :param text: the link text (default: the guid, else the id)
    :returns: ``<a href=...>`` (text escaped) or None without id and guid
    """
    if not id and not guid:
        return None
    if guid:
        # The original read ``.id`` off the dict here (quirk Q52).
        obj = _action("harvest_object_show", {"id": guid, "attr": "guid"})
        id = obj["id"]
    url = toolkit.url_for("harvester.object_show", id=id)
    return toolkit.h.link_to(text or guid or id, url)


def harvest_source_extra_fields() -> dict[str, list[str]]:
    """The extra form fields of each harvester: ``{name: [field, ...]}``."""
    fields = {}
    for harvester in harvesters.all_harvesters():
        name = harvesters.harvester_name(harvester)
        if name and hasattr(harvester, "extra_schema"):
            fields[name] = list(harvester.extra_schema().keys())
    return fields


def get_harvest_source(source_id: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The source of the page: the one named, else the page's dataset.

    :param source_id: the source id or name
    """
    if source_id:
        return _action("harvest_source_show", {"id": source_id})
    pkg_dict = getattr(toolkit.g, "pkg_dict", None)
    if pkg_dict:
        return pkg_dict
    pkg = getattr(toolkit.g, "pkg", None)
    if pkg:
        return _action("harvest_source_show", {"id": pkg.id})
    return None


# -- job statistics --------------------------------------------------------------------


def harvest_stats_items(
    stats: Optional[dict[Any, int]], hide_zero: bool = False
) -> list[dict[str, Any]]:
    """A job's statistics in display order, for badges.

    :param stats: ``job['stats']``
    :param hide_zero: leave out the zero counts
    :returns: ``[{'key', 'diff', 'label', 'count', 'color'}]``
    """
    stats = stats or {}
    labels = _stats_labels()
    items = []
    for key, diff, color in STATS_SERIES:
        count = int(stats.get(key) or 0)
        if count or not hide_zero:
            items.append({
                "key": key, "diff": diff, "label": labels[key][0],
                "count": count, "color": color,
            })
    return items


def harvest_errors_by_message(job_report: dict[str, Any]) -> list[dict[str, Any]]:
    """The object errors of a job report grouped by message, most frequent first.

    :param job_report: ``harvest_job_report``
    :returns: ``[{'message', 'count', 'objects': [{'id', 'guid', 'line',
        'original_url'}]}]``
    """
    groups: dict[str, dict[str, Any]] = {}
    for object_id, entry in (job_report.get("object_errors") or {}).items():
        for error in entry.get("errors") or []:
            message = error.get("message") or ""
            group = groups.setdefault(message, {"message": message, "objects": []})
            group["objects"].append({
                "id": object_id, "guid": entry.get("guid"), "line": error.get("line"),
                "original_url": entry.get("original_url"),
            })
    for group in groups.values():
        group["count"] = len(group["objects"])
    return sorted(groups.values(), key=lambda group: (-group["count"], group["message"]))


def _parse_datetime(value: Any) -> Optional[datetime.datetime]:
    if isinstance(value, datetime.datetime):
        return value
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def harvest_duration(seconds: Union[int, float, None]) -> str:
    """A short duration: ``45 s``, ``2 min 5 s``, ``1 h 3 min``, ``2 d 4 h``."""
    total = max(0, int(seconds or 0))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return toolkit._("{d} d {h} h").format(d=days, h=hours)
    if hours:
        return toolkit._("{h} h {m} min").format(h=hours, m=minutes)
    if minutes:
        return toolkit._("{m} min {s} s").format(m=minutes, s=secs)
    return toolkit._("{s} s").format(s=secs)


def harvest_job_progress(job: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Progress of a ``New`` or ``Running`` job (None for other jobs).

    :param job: a job dict (``harvest_job_show``)
    :returns: ``{'status', 'done', 'total', 'gathering', 'percent',
        'elapsed_seconds', 'elapsed', 'rate_per_minute', 'eta_seconds', 'eta',
        'stall'}``; ``total`` is only final once gathering is over; ``eta``
        is None until it can be told; ``stall`` see :func:`harvest_job_stall`
    """
    if job.get("status") not in (JobStatus.NEW.value, JobStatus.RUNNING.value):
        return None
    counts = progress.object_state_counts(job["id"])
    start = _parse_datetime(job.get("gather_started")) or _parse_datetime(job.get("created"))
    elapsed = (utcnow() - start).total_seconds() if start else 0
    figures = progress.JobProgress(
        job_id=job["id"], status=job["status"], total=sum(counts.values()),
        done=progress.objects_done(counts), gathering=not job.get("gather_finished"),
        elapsed_seconds=max(0.0, elapsed), counts=counts)
    eta = figures.eta_seconds
    rate = figures.rate_per_minute
    return {
        "status": job["status"],
        "done": figures.done,
        "total": figures.total,
        "gathering": figures.gathering,
        "percent": figures.percent,
        "elapsed_seconds": int(figures.elapsed_seconds),
        "elapsed": harvest_duration(elapsed),
        "rate_per_minute": round(rate, 1) if rate is not None else None,
        "eta_seconds": int(eta) if eta is not None else None,
        "eta": harvest_duration(eta) if eta is not None else None,
        "stall": harvest_job_stall(job),
    }


def harvest_job_stall(job: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The stall of a ``Running`` job, as ``ckan harvester run`` last found it.

    :param job: a job dict
    :returns: None when the job is not stalled, else ``{'since',
        'last_moved', 'unmoved'}`` (datetimes, and the unmoved time as text)
    """
    if job.get("status") != JobStatus.RUNNING.value:
        return None
    state = stalls.states_of([job["id"]]).get(job["id"])
    if state is None or state.stalled_since is None:
        return None
    unmoved = (utcnow() - state.last_moved).total_seconds() if state.last_moved else 0
    return {"since": state.stalled_since, "last_moved": state.last_moved,
            "unmoved": harvest_duration(unmoved)}


# -- the chart of the source dashboard -------------------------------------------------

_CHART_WIDTH = 640
_CHART_HEIGHT = 260
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 48, 628, 16, 214


def _nice_step(maximum: int, ticks: int = 4) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... giving at most ``ticks`` steps."""
    raw = max(1.0, maximum / ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def _chart_job(job: dict[str, Any]) -> dict[str, Any]:
    created = _parse_datetime(job.get("gather_started")) or _parse_datetime(job.get("created"))
    h = toolkit.h
    stats = job.get("stats") or {}
    counts = {series[0]: int(stats.get(series[0]) or 0) for series in STATS_SERIES}
    return {
        "id": job["id"],
        "url": toolkit.url_for(
            "harvester.job_show", source=job["source_id"], id=job["id"]
        ),
        "datetime": created.isoformat() if created else "",
        "date": h.render_datetime(created, "%d %b") if created else "",
        "time": h.render_datetime(created, "%H:%M") if created else "",
        "label": h.render_datetime(created, with_hours=True) if created else "",
        "counts": counts,
        "total": sum(counts.values()),
    }


def _chart_series(jobs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The series drawn: always added/updated/not modified/errored, deleted if any."""
    labels = _stats_labels()
    return [
        {"key": key, "diff": diff, "label": labels[key][1], "color": color}
        for key, diff, color in STATS_SERIES
        if key != "deleted" or any(job["counts"]["deleted"] for job in jobs)
    ]


def _place_bars(jobs: list[dict[str, Any]], series: list[dict[str, str]], top: int) -> None:
    """Add ``x`` and the stacked ``segments`` (SVG rectangles) to each job."""
    plot_height = _PLOT_BOTTOM - _PLOT_TOP
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / max(len(jobs), 1)
    bar_width = round(min(slot * 0.6, 40.0), 1)
    for index, job in enumerate(jobs):
        center = _PLOT_LEFT + slot * (index + 0.5)
        job["x"] = round(center, 1)
        y = float(_PLOT_BOTTOM)
        job["segments"] = []
        for item in series:
            count = job["counts"][item["key"]]
            if not count:
                continue
            height = plot_height * count / top
            y -= height
            job["segments"].append(dict(
                item, count=count, x=round(center - bar_width / 2, 1),
                y=round(y, 1), width=bar_width, height=round(height, 1),
            ))


def harvest_job_chart_data(source_id: str) -> Optional[dict[str, Any]]:
    """The chart of a source's recent finished jobs (oldest first).

    :param source_id: the source id
    :returns: None when the source has no finished job (or the viewer may not
        see its jobs); else the SVG geometry: ``width``, ``height``, ``plot``
        (left/right/top/bottom), ``ticks`` ``[{'value', 'y'}]``, ``series``
        ``[{'key', 'diff', 'label', 'color'}]`` and ``jobs`` (``id``, ``url``,
        ``date``, ``time``, ``label``, ``counts``, ``total``, ``x``,
        ``segments`` ``[{..series, 'count', 'x', 'y', 'width', 'height'}]``)
    """
    try:
        toolkit.check_access("harvest_job_list", _context(), {"source_id": source_id})
    except (toolkit.NotAuthorized, toolkit.ObjectNotFound):
        return None
    # One call: the statistics of the jobs are counted together.
    finished = _action("harvest_job_list", {
        "source_id": source_id, "status": JobStatus.FINISHED.value, "limit": CHART_JOBS,
    })
    if not finished:
        return None
    jobs = [_chart_job(job) for job in reversed(finished)]
    series = _chart_series(jobs)
    step = _nice_step(max(job["total"] for job in jobs))
    top = step * max(1, math.ceil(max(job["total"] for job in jobs) / step))
    _place_bars(jobs, series, top)
    plot_height = _PLOT_BOTTOM - _PLOT_TOP
    return {
        "width": _CHART_WIDTH,
        "height": _CHART_HEIGHT,
        "plot": {"left": _PLOT_LEFT, "right": _PLOT_RIGHT,
                 "top": _PLOT_TOP, "bottom": _PLOT_BOTTOM},
        "ticks": [
            {"value": value, "y": round(_PLOT_BOTTOM - plot_height * value / top, 1)}
            for value in range(0, top + 1, step)
        ],
        "series": series,
        "jobs": jobs,
    }


# -- small texts -----------------------------------------------------------------------


def harvest_confirm_text(action: str, clear: bool = False, detach: bool = False) -> str:
    """The question asked before a state change (modal and confirmation page).

    :param action: ``refresh``, ``clear``, ``job_abort`` or ``delete``
    :param clear: for ``delete``: the source is cleared too
    :param detach: for ``delete``: its datasets are detached first
    """
    _ = toolkit._
    if action == "refresh":
        return _("Start a new harvest job for this source now?")
    if action == "clear":
        return _("This will delete every dataset harvested from this source and its "
                 "job history. The source itself stays. This cannot be undone. "
                 "Do you want to continue?")
    if action == "job_abort":
        return _("Stop this job? It will be marked as finished, and the documents it "
                 "has not processed yet will be marked as errors.")
    if clear:
        return _("This will delete the source, every dataset harvested from it and "
                 "its job history. This cannot be undone. Do you want to continue?")
    if detach:
        return _("This will delete (deactivate) the source and detach its datasets: "
                 "they become ordinary datasets of this site, which no harvest job "
                 "will update or delete again. This cannot be undone. Do you want "
                 "to continue?")
    return _("This will delete (deactivate) the source: it will not be harvested "
             "any more. Its datasets stay. Do you want to continue?")


def harvest_source_type_title(source_type: Optional[str]) -> str:
    """The title of a harvester type (the type itself when unknown)."""
    for info in harvesters_info():
        if info.get("name") == source_type:
            return toolkit._(info.get("title") or source_type)
    return source_type or ""


def harvest_facet_label(field: str) -> Optional[Callable[[dict[str, Any]], str]]:
    """The ``label_function`` of a source search facet (None: CKAN's default).

    :param field: ``frequency`` or ``source_type``
    """
    if field == "frequency":
        return lambda item: toolkit._(str(item.get("display_name") or "").title())
    if field == "source_type":
        return lambda item: harvest_source_type_title(item.get("display_name"))
    return None


def harvest_schedule_preview(expression: Any) -> Optional[dict[str, Any]]:
    """The next three run times of a cron schedule, for the source form and page.

    :returns: ``{"schedule", "timezone", "next_runs": ["2026-12-05 03:00", ...]}``
        (local times of ``ckan.harvest.timezone``), or None for an empty or
        invalid expression (the form shows the validation error instead)
    """
    if not expression or not isinstance(expression, str):
        return None
    try:
        shown = toolkit.get_action("harvest_schedule_preview")(
            {"ignore_auth": True}, {"schedule": expression})
    except toolkit.ValidationError:
        return None
    shown["next_runs"] = [datetime.datetime.fromisoformat(time).strftime("%Y-%m-%d %H:%M")
                          for time in shown["next_runs"]]
    return shown


def get_helpers() -> dict[str, Callable[..., Any]]:
    """Every helper of ``__all__`` by name (``ITemplateHelpers``)."""
    return {name: globals()[name] for name in __all__}

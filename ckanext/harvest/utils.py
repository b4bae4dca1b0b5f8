"""Kept for the original extension's import path, ``ckanext.harvest.utils``.

Downstream code imports the shared constants and the implementations of the
CLI and of the views from here; they now live where they belong, and this
module only re-exports them (``spec/layout.md``). New code should import from
their homes:

* :mod:`ckanext.harvest.constants`: ``DATASET_TYPE_NAME``, ``N_``;
* :mod:`ckanext.harvest.cli` (one module per command group): the command
  implementations (``create_harvest_source``, ``list_jobs``...) and the
  printed blocks (:mod:`ckanext.harvest.cli.output`);
* :mod:`ckanext.harvest.views`: the view implementations (``*_view``).
"""
from __future__ import annotations

from ckanext.harvest.cli.base import NoProgress, Progress, SourceNotFound
from ckanext.harvest.cli.base import admin_user as _admin_user
from ckanext.harvest.cli.jobs import (
    abort_failed_jobs,
    abort_job,
    create_job,
    job_all,
    list_jobs,
    run_harvester,
)
from ckanext.harvest.cli.maintenance import (
    clean_harvest_log,
    harvesters_info,
    import_stage,
    reindex,
)
from ckanext.harvest.cli.output import format_job as _print_harvest_job
from ckanext.harvest.cli.output import format_jobs as _print_harvest_jobs
from ckanext.harvest.cli.output import format_source as _print_harvest_source
from ckanext.harvest.cli.output import format_sources as _print_harvest_sources
from ckanext.harvest.cli.output import there_are as _there_are
from ckanext.harvest.cli.queues import fetch_consumer, gather_consumer, purge_queues
from ckanext.harvest.cli.run_test import JobToAbort, run_test_harvester
from ckanext.harvest.cli.sources import (
    clear_harvest_source,
    clear_harvest_source_history,
    create_harvest_source,
    list_sources,
    remove_harvest_source,
    show_harvest_source,
)
from ckanext.harvest.constants import DATASET_TYPE_NAME, N_
from ckanext.harvest.views import (
    _get_source_for_job,
    _not_auth_message,
    about_view,
    admin_view,
    clear_view,
    confirm_view,
    delete_view,
    job_abort_view,
    job_list_view,
    job_show_last_view,
    job_show_view,
    object_show_view,
    refresh_view,
)

__all__ = [
    "DATASET_TYPE_NAME",
    "N_",
    # CLI implementations (cli.md)
    "JobToAbort",
    "NoProgress",
    "Progress",
    "SourceNotFound",
    "_admin_user",
    "_print_harvest_job",
    "_print_harvest_jobs",
    "_print_harvest_source",
    "_print_harvest_sources",
    "_there_are",
    "abort_failed_jobs",
    "abort_job",
    "clean_harvest_log",
    "clear_harvest_source",
    "clear_harvest_source_history",
    "create_harvest_source",
    "create_job",
    "fetch_consumer",
    "gather_consumer",
    "harvesters_info",
    "import_stage",
    "job_all",
    "list_jobs",
    "list_sources",
    "purge_queues",
    "reindex",
    "remove_harvest_source",
    "run_harvester",
    "run_test_harvester",
    "show_harvest_source",
    # view implementations (web.md)
    "_get_source_for_job",
    "_not_auth_message",
    "about_view",
    "admin_view",
    "clear_view",
    "confirm_view",
    "delete_view",
    "job_abort_view",
    "job_list_view",
    "job_show_last_view",
    "job_show_view",
    "object_show_view",
    "refresh_view",
]

"""``ckan harvester import | reindex | clean-harvest-log | harvesters_info``.

Looking after what was harvested: import fetched objects again, rebuild the
search index of the sources, trim the database log, list the harvesters.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Optional

import click
from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.cli.base import (
    Progress,
    SourceNotFound,
    action,
    admin_user,
    guarded,
    progress_bars,
    site_context,
    source_dict,
)

log = logging.getLogger(__name__)


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
    source_id = source_dict(source_id_or_name)["id"] if source_id_or_name else None
    data_dict = {
        "source_id": source_id,
        "harvest_object_id": harvest_object_id,
        "package_id": package_id,
        "guid": guid,
    }
    options = {"join_datasets": not no_join_datasets, "segments": segments}
    if progress is None:
        count = action("harvest_objects_import", data_dict, **options)
    else:
        count = _import_one_by_one(data_dict, options, progress)
    return "{} objects reimported".format(count)


def _import_one_by_one(data_dict: dict[str, Any], options: dict[str, Any],
                       progress: Progress) -> int:
    """Import object by object, advancing a progress bar."""
    from ckanext.harvest.lib import objects

    toolkit.check_access("harvest_objects_import", site_context(), data_dict)
    ids = [obj.id for obj in objects.objects_to_import(data_dict, dict(options))]
    count = 0
    with progress(ids, "Importing harvest objects") as bar:
        for object_id in bar:
            count += action("harvest_objects_import", {"harvest_object_id": object_id},
                            join_datasets=False)
    return count


def reindex(progress: Optional[Progress] = None) -> None:
    """Rebuild the search index entries of the active source datasets."""
    if progress is None:
        toolkit.get_action("harvest_sources_reindex")(
            {"model": model, "user": admin_user()["name"]}, {}
        )
        return
    from ckanext.harvest.lib import sources

    toolkit.check_access("harvest_sources_reindex", site_context(), {})
    with progress(sources.active_source_ids(), "Reindexing harvest sources") as bar:
        for source_id in bar:
            action("harvest_source_reindex", {"id": source_id})


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
    return action("harvesters_info_show", {})


# -- commands ------------------------------------------------------------------------


@click.command(name="import", short_help="Import fetched objects again.")
@click.argument("source_id_or_name", metavar="[SOURCE_ID_OR_NAME]", required=False)
@click.option("-j", "--no-join-datasets", is_flag=True, default=False,
              help="Also import objects whose dataset is missing or deleted "
                   "(by default only objects of active datasets are imported).")
@click.option("-o", "--harvest-object-id",
              help="Import only the harvest object with this id.")
@click.option("-p", "--package-id",
              help="Import only the current objects of this dataset (id or name).")
@click.option("-g", "--guid",
              help="Import only the current objects with this guid.")
@click.option("--segments",
              help="Import only part of the objects: each object falls in one of "
                   "16 segments, the first hex digit of the MD5 of its id; give "
                   "the digits of the segments wanted (e.g. 05af) to share a big "
                   "import between processes.")
@guarded()
def import_command(source_id_or_name: Optional[str], no_join_datasets: bool,
                   harvest_object_id: Optional[str], package_id: Optional[str],
                   guid: Optional[str], segments: Optional[str]) -> None:
    """Run the import stage again on objects already fetched, without fetching.

    Picks the current objects of SOURCE_ID_OR_NAME, or the objects chosen
    with an option; with neither, every current object. The harvester of
    each object's source imports it with force_import set. Prints how many
    objects were imported.
    """
    try:
        result = import_stage(
            source_id_or_name, no_join_datasets, harvest_object_id, guid, package_id,
            segments, progress=progress_bars(),
        )
    except SourceNotFound as error:
        toolkit.error_shout(error)
        return
    click.echo(result)


@click.command(name="clean-harvest-log", short_help="Delete old records of the harvest log.")
@guarded()
def clean_harvest_log_command() -> None:
    """Delete old records of the harvest database log.

    Records older than ckan.harvest.log_timeframe days (30 by default) are
    deleted. Prints nothing; run it daily.
    """
    clean_harvest_log()


@click.command(name="reindex", short_help="Rebuild the search index of the sources.")
@guarded()
def reindex_command() -> None:
    """Rebuild the search index entries of every active source dataset.

    The datasets the sources harvested are not reindexed: use
    ``ckan search-index rebuild`` for those.
    """
    reindex(progress=progress_bars())


@click.command(name="harvesters_info")
@guarded()
def harvesters_info_command() -> None:
    click.echo(harvesters_info())

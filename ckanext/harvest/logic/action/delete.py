"""Delete actions of the harvest API."""
from __future__ import annotations

from ckan.plugins import toolkit
from ckan.types import Context, DataDict

__all__ = ["harvest_source_delete"]


def harvest_source_delete(context: Context, data_dict: DataDict) -> None:
    """Delete (deactivate) a harvest source; with ``clear_source`` also clear it.

    The ``harvest_source`` row, its jobs and objects are kept; the source is
    marked inactive. When the context has ``clear_source``, the harvested
    datasets and the job history are deleted too.

    :param id: the id or name of the source
    """
    toolkit.check_access("harvest_source_delete", Context(context), data_dict)
    toolkit.get_action("package_delete")(Context(context), data_dict)
    if context.get("clear_source"):
        package = toolkit.get_action("package_show")(Context(context), data_dict)
        toolkit.get_action("harvest_source_clear")(Context(context), {"id": package["id"]})

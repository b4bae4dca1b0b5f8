"""The shapes of the dicts the harvest actions return (``TypedDict``).

They document the API for readers and for mypy; at run time they are plain
dicts, exactly as the original extension returned them.
"""
from __future__ import annotations

from typing import Any, Optional, TypedDict


class SourceStatus(TypedDict):
    """``harvest_source_show_status``."""

    job_count: int
    last_job: Optional[dict[str, Any]]
    total_datasets: int


class ObjectReport(TypedDict, total=False):
    """One object's entry in :class:`JobReport` (``original_url`` when known)."""

    guid: Optional[str]
    errors: list[dict[str, Any]]
    original_url: str


class JobReport(TypedDict):
    """``harvest_job_report``: gather errors, and object errors by object id."""

    gather_errors: list[dict[str, Any]]
    object_errors: dict[str, ObjectReport]


class HarvesterInfo(TypedDict, total=False):
    """One harvester in ``harvesters_info_show``: its ``info()`` plus ``show_config``."""

    name: str
    title: str
    description: str
    form_config_interface: str
    show_config: bool


class Recipient(TypedDict):
    """One recipient of ``harvest_get_notifications_recipients``."""

    name: str
    email: str


class SourceRef(TypedDict):
    """``{'id': <source id>}``, returned by the clear actions."""

    id: str


class SourceDetached(TypedDict):
    """``harvest_source_detach``: the source id and how many datasets it let go."""

    id: str
    detached: int

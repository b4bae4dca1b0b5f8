"""Names shared by every layer of the harvest framework.

Kept apart so that the core (``lib/``, ``logic/``) and the faces (CLI, views,
plugin) can use them without importing each other.
"""
from __future__ import annotations

#: The dataset type of harvest sources (``package.type``), also the URL prefix
#: of their pages (``/harvest/...``).
DATASET_TYPE_NAME = "harvest"


def N_(message: str) -> str:
    """Mark ``message`` for the message catalogue without translating it: the
    template that shows it translates it (``{{ _(value) }}``)."""
    return message

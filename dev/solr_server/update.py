"""Parsing of ``/update`` messages (XML and JSON) into commands."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from .document import RawDoc, normalise_input
from .errors import SolrError

ADD, DELETE_ID, DELETE_QUERY, COMMIT, OPTIMIZE, ROLLBACK = (
    "add", "delete_id", "delete_query", "commit", "optimize", "rollback")
_JSON_COMMANDS = {"add", "delete", "commit", "optimize", "rollback"}


@dataclass
class Command:
    """One update operation."""

    kind: str
    docs: list[RawDoc] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


def parse_update(body: bytes, content_type: str,
                 docs_only: bool = False) -> list[Command]:
    """Parse an update body; format from content type, else sniffed."""
    text = body.decode("utf-8-sig").strip() if body else ""
    if not text:
        return []
    if "xml" in content_type or (
            "json" not in content_type and text.startswith("<")):
        return parse_xml(text)
    return parse_json(text, docs_only)


# -- XML ----------------------------------------------------------------------
def parse_xml(text: str) -> list[Command]:
    """Parse ``<add>``, ``<delete>``, ``<commit/>``... (or ``<update>``)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise SolrError(f"Unexpected XML in update request: {err}") from None
    elements = list(root) if root.tag == "update" else [root]
    commands: list[Command] = []
    for elem in elements:
        commands.extend(_xml_command(elem))
    return commands


def _xml_command(elem: ET.Element) -> list[Command]:
    """Convert one XML command element."""
    if elem.tag == "add":
        return [Command(ADD, docs=[_xml_doc(d) for d in elem.iter("doc")])]
    if elem.tag == "delete":
        return _xml_delete(elem)
    if elem.tag in (COMMIT, OPTIMIZE, ROLLBACK):
        return [Command(elem.tag)]
    raise SolrError(f"Unknown command '{elem.tag}'")


def _xml_delete(elem: ET.Element) -> list[Command]:
    """``<delete><id>..</id><query>..</query></delete>``."""
    ids = [(e.text or "").strip() for e in elem.findall("id")]
    queries = [(e.text or "").strip() for e in elem.findall("query")]
    commands = []
    if ids:
        commands.append(Command(DELETE_ID, values=ids))
    if queries:
        commands.append(Command(DELETE_QUERY, values=queries))
    return commands


def _xml_doc(elem: ET.Element) -> RawDoc:
    """``<doc><field name="x">v</field>...</doc>``."""
    doc: RawDoc = {}
    for fld in elem.findall("field"):
        if fld.get("update"):
            raise SolrError("Atomic updates are not supported by the "
                            "development Solr server")
        if fld.get("null") == "true":
            continue
        doc.setdefault(fld.get("name", ""), []).append(fld.text or "")
    return doc


# -- JSON ---------------------------------------------------------------------
def parse_json(text: str, docs_only: bool = False) -> list[Command]:
    """Parse a JSON update: a list of docs or an object of commands."""
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
    except ValueError as err:
        raise SolrError(f"Cannot parse provided JSON: {err}") from None
    if isinstance(data, list):
        return [Command(ADD, docs=[_json_doc(d) for d in data])]
    if not isinstance(data, _Pairs):
        raise SolrError("Unexpected JSON in update request")
    if docs_only or not any(key in _JSON_COMMANDS for key, _ in data.pairs):
        return [Command(ADD, docs=[_json_doc(data)])]
    return [c for key, value in data.pairs for c in _json_command(key, value)]


class _Pairs(dict):  # type: ignore[type-arg]
    """A JSON object remembering duplicate keys (Solr allows them)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        """Keep the raw pairs and a normal dict view."""
        super().__init__(pairs)
        self.pairs = pairs


def _json_command(key: str, value: Any) -> list[Command]:
    """Convert one ``"add"``/``"delete"``/``"commit"``... entry."""
    if key == "add":
        items = value if isinstance(value, list) else [value]
        docs = [_json_doc(i.get("doc", i) if isinstance(i, dict) else i)
                for i in items]
        return [Command(ADD, docs=docs)]
    if key == "delete":
        return _json_delete(value)
    if key in (COMMIT, OPTIMIZE, ROLLBACK):
        return [Command(key)]
    raise SolrError(f"Unknown command '{key}'")


def _json_delete(value: Any) -> list[Command]:
    """``"delete": "id" | ["id", ...] | {"id": ..} | {"query": ..}``."""
    items = value if isinstance(value, list) else [value]
    commands = []
    for item in items:
        if isinstance(item, dict) and "query" in item:
            commands.append(Command(DELETE_QUERY, values=[str(item["query"])]))
        elif isinstance(item, dict) and "id" in item:
            commands.append(Command(DELETE_ID, values=[str(item["id"])]))
        elif isinstance(item, (str, int)):
            commands.append(Command(DELETE_ID, values=[str(item)]))
        else:
            raise SolrError(f"Invalid delete command: {item!r}")
    return commands


def _json_doc(doc: Any) -> RawDoc:
    """Normalise one JSON document."""
    if not isinstance(doc, dict):
        raise SolrError(f"Expected a JSON document object, got {doc!r}")
    return normalise_input(dict(doc))

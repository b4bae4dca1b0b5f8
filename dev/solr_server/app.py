"""Transport-independent request routing (``/solr/<core>/<handler>``)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from .core import Core, CoreRegistry
from .errors import SolrError
from .params import Params
from .schema import FieldDef, Schema
from .search import parse_fl, render_doc
from .update import parse_update

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "application/xml; charset=utf-8"
SOLR_SPEC_VERSION = "9.6.0"
_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class Reply:
    """An HTTP reply."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE


class SolrApp:
    """Dispatches requests to the cores of a :class:`CoreRegistry`."""

    def __init__(self, registry: CoreRegistry) -> None:
        """Serve the cores of ``registry``."""
        self.registry = registry

    def handle(self, path: str, query: str, body: bytes,
               content_type: str) -> Reply:
        """Handle one request; errors become Solr-style JSON replies."""
        started = time.perf_counter()
        try:
            parts = [p for p in path.split("/") if p]
            if not parts or parts[0] != "solr":
                raise SolrError(f"Not Found: {path}", 404)
            is_update = len(parts) > 2 and parts[2] == "update"
            params = _params(query, body, content_type, is_update)
            with self.registry.lock:
                result = self._route(parts[1:], params, body, content_type)
        except SolrError as err:
            log.info("Solr error %s on %s: %s", err.code, path, err.msg)
            return _json_reply(err.to_json(), err.code)
        except Exception as err:  # noqa: BLE001 - report as Solr would
            log.exception("Internal error on %s", path)
            return _json_reply(SolrError(repr(err), 500).to_json(), 500)
        if isinstance(result, Reply):
            return result
        return self._finish(result, params, started)

    @staticmethod
    def _finish(result: dict[str, Any], params: Params,
                started: float) -> Reply:
        """Add the ``responseHeader`` and serialise."""
        header: dict[str, Any] = {
            "status": 0, "QTime": int((time.perf_counter() - started) * 1000)}
        if params.values:
            header["params"] = params.echo()
        body = result if params.get_bool("omitHeader") else \
            {"responseHeader": header, **result}
        return _json_reply(body, 200, params.get_bool("indent"))

    def _route(self, parts: list[str], params: Params, body: bytes,
               content_type: str) -> dict[str, Any] | Reply:
        """Route ``/solr/...`` (``parts`` excludes the ``solr`` prefix)."""
        if parts[:1] == ["admin"]:
            return self._admin(parts[1:], params)
        if len(parts) < 2:
            raise SolrError("Not Found: no request handler given", 404)
        core = self.registry.get(parts[0])
        handler, rest = parts[1], parts[2:]
        if handler in ("select", "query"):
            return core.select(params)
        if handler == "update":
            docs_only = rest[-1:] == ["docs"]
            core.apply(parse_update(body, content_type, docs_only), params)
            return {}
        if handler == "schema":
            return schema_route(core.schema, rest, params)
        if handler == "get":
            return realtime_get(core, params)
        if handler == "admin":
            return self._core_admin(core, rest, params)
        raise SolrError(f"Not Found: /solr/{'/'.join(parts)}", 404)

    def _core_admin(self, core: Core, rest: list[str],
                    params: Params) -> dict[str, Any] | Reply:
        """``/solr/<core>/admin/ping`` and ``/admin/file?file=schema.xml``."""
        if rest == ["ping"]:
            return {"status": "OK"}
        if rest == ["file"] and params.get("file") in (
                "schema.xml", "managed-schema", "managed-schema.xml"):
            return Reply(200, core.schema.xml_text.encode("utf-8"), XML_TYPE)
        raise SolrError(f"Not Found: /admin/{'/'.join(rest)}", 404)

    def _admin(self, rest: list[str], params: Params) -> dict[str, Any]:
        """Container-level ``/solr/admin/cores`` and ``/admin/info/system``."""
        if rest == ["cores"]:
            status = {name: {"name": name, "index": {
                "numDocs": self.registry.get(name).num_docs}}
                for name in self.registry.names()}
            return {"initFailures": {}, "status": status}
        if rest == ["info", "system"]:
            return {"mode": "std", "lucene": {
                "solr-spec-version": SOLR_SPEC_VERSION,
                "lucene-spec-version": SOLR_SPEC_VERSION},
                "note": "ckanext-harvest development Solr server"}
        raise SolrError(f"Not Found: /solr/admin/{'/'.join(rest)}", 404)


def _params(query: str, body: bytes, content_type: str,
            is_update: bool) -> Params:
    """Query-string parameters plus, for searches, a form-encoded body."""
    if body and not is_update and content_type.startswith(_FORM_TYPE):
        return Params.from_query(query, body.decode("utf-8"))
    return Params.from_query(query)


def _json_reply(data: Any, status: int, indent: bool = False) -> Reply:
    """Serialise ``data`` as a JSON reply."""
    text = json.dumps(data, indent=2 if indent else None, ensure_ascii=False,
                      default=str)
    return Reply(status, text.encode("utf-8"))


def realtime_get(core: Core, params: Params) -> dict[str, Any]:
    """``/get?id=...`` (single) or ``/get?ids=a,b`` (list)."""
    fl = parse_fl(params.getlist("fl"))
    ids = params.getlist("id")
    for value in params.getlist("ids"):
        ids.extend(i for i in value.split(",") if i)
    docs = [core.realtime_get(i) for i in ids]
    rendered = [render_doc(d, 0.0, fl) for d in docs if d is not None]
    if len(ids) == 1 and not params.getlist("ids"):
        return {"doc": rendered[0] if rendered else None}
    return {"response": {"numFound": len(rendered), "start": 0,
                         "docs": rendered}}


def schema_route(schema: Schema, rest: list[str],
                 params: Params) -> dict[str, Any] | Reply:
    """The Schema API subset: XML dump, JSON dump and a few sub-resources."""
    if not rest and params.get("wt") == "schema.xml":
        return Reply(200, schema.xml_text.encode("utf-8"), XML_TYPE)
    full = schema_json(schema)
    if not rest:
        return {"schema": full}
    key = {"name": "name", "version": "version", "uniquekey": "uniqueKey",
           "fields": "fields", "dynamicfields": "dynamicFields",
           "copyfields": "copyFields"}.get(rest[0].lower())
    if key is None:
        raise SolrError(f"Not Found: /schema/{'/'.join(rest)}", 404)
    if key == "fields" and len(rest) > 1:
        return {"field": _field_json(schema.field(rest[1]))}
    return {key: full[key]}


def schema_json(schema: Schema) -> dict[str, Any]:
    """JSON representation of the schema (Schema API style)."""
    return {
        "name": schema.name,
        "version": float(schema.version or 0),
        "uniqueKey": schema.unique_key,
        "fields": [_field_json(f) for f in schema.fields.values()],
        "dynamicFields": [_field_json(f, p) for p, f in schema.dynamic],
        "copyFields": [{"source": s, "dest": d}
                       for s, d in schema.copy_fields],
    }


def _field_json(fdef: FieldDef, name: str | None = None) -> dict[str, Any]:
    """One field definition as JSON."""
    return {"name": name or fdef.name, "type": fdef.ftype.name,
            "multiValued": fdef.multi, "indexed": fdef.indexed,
            "stored": fdef.stored, "required": fdef.required}

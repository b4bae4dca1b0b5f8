"""The ``/select`` handler: query, filter, sort, page, fl and facets."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from .dates import parse_date
from .document import Document
from .errors import SolrError
from .matchers import Matcher, MatchNone
from .params import Params
from .query import QueryContext, parse_boosted_fields, parse_query, strip_local_params
from .schema import NGRAM, STRING, TEXT, FieldDef, Schema

log = logging.getLogger(__name__)

_PARSERS = {"lucene": False, "standard": False, "dismax": True,
            "edismax": True}
_FL_SPLIT = re.compile(r"[\s,]+")

Match = tuple[Document, float]


@dataclass
class FieldList:
    """The parsed ``fl`` parameter."""

    everything: bool = False
    names: set[str] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)
    score: bool = False

    def wants(self, name: str) -> bool:
        """Whether stored field ``name`` should be returned."""
        return self.everything or name in self.names or any(
            fnmatchcase(name, p) for p in self.patterns)


def request_now(params: Params) -> datetime | None:
    """Solr's ``NOW`` parameter (milliseconds since the epoch), if given."""
    value = params.get("NOW")
    if value is None:
        return None
    return parse_date("1970-01-01T00:00:00Z+%dMILLIS" % int(value))


def query_context(params: Params, schema: Schema, now: datetime,
                  main: bool) -> QueryContext:
    """Build the parsing context for ``q`` (``main``) or an ``fq``."""
    def_type = params.get("defType", "lucene") if main else "lucene"
    if def_type not in _PARSERS:
        raise SolrError(f"Unknown query parser '{def_type}'")
    dismax = _PARSERS[def_type]
    df = params.get("df") or "text"
    fields = parse_boosted_fields(params.get("qf") or df) if dismax \
        else [(df, 1.0)]
    tie = float(params.get("tie") or 0.0)
    q_op = (params.get("q.op") or "OR").upper()
    return QueryContext(schema, now, fields, q_op, dismax, params.get("mm"),
                        tie)


def main_query(params: Params, schema: Schema, now: datetime) -> Matcher:
    """Compile ``q`` (falling back to ``q.alt`` for dismax parsers)."""
    ctx = query_context(params, schema, now, main=True)
    text = params.get("q") or ""
    if not text.strip() and ctx.dismax and params.get("q.alt"):
        alt_ctx = query_context(params, schema, now, main=False)
        return parse_query(params.get("q.alt") or "", alt_ctx)
    if not text.strip():
        return MatchNone()
    return parse_query(text, ctx)


def filter_queries(params: Params, schema: Schema,
                   now: datetime) -> list[Matcher]:
    """Compile every non-empty ``fq``."""
    ctx = query_context(params, schema, now, main=False)
    return [parse_query(fq, ctx) for fq in params.getlist("fq")
            if strip_local_params(fq).strip()]


def find_matches(docs: list[Document], query: Matcher,
                 filters: list[Matcher]) -> list[Match]:
    """Documents passing all filters and the query, with scores."""
    matches = []
    for doc in docs:
        if any(f.score(doc) is None for f in filters):
            continue
        score = query.score(doc)
        if score is not None:
            matches.append((doc, score))
    return matches


def parse_sort(spec: str | None, schema: Schema) -> list[tuple[str, bool]]:
    """Parse ``sort`` into ``[(field, descending)]`` (default score desc)."""
    if not spec or not spec.strip():
        return [("score", True)]
    keys = []
    for part in spec.split(","):
        bits = part.split()
        if not bits:
            continue
        if len(bits) != 2 or bits[1].lower() not in ("asc", "desc"):
            raise SolrError("Can't determine a Sort Order (asc or desc) in "
                            f"sort spec '{part.strip()}'")
        if bits[0] != "score":
            _check_sortable(schema.field(bits[0]))
        keys.append((bits[0], bits[1].lower() == "desc"))
    return keys


def _check_sortable(fdef: FieldDef) -> None:
    """Reject sorting on multi-valued fields, as Solr does."""
    if fdef.multi:
        raise SolrError(f"can not sort on multivalued field: {fdef.name} "
                        f"of type: {fdef.ftype.name}")


def sort_matches(matches: list[Match],
                 keys: list[tuple[str, bool]]) -> list[Match]:
    """Multi-key stable sort; missing values always sort last."""
    ordered = list(matches)
    for name, descending in reversed(keys):
        if name == "score":
            ordered.sort(key=lambda m: m[1], reverse=descending)
            continue
        present = [m for m in ordered if _sort_value(m[0], name) is not None]
        missing = [m for m in ordered if _sort_value(m[0], name) is None]
        present.sort(key=lambda m: _sort_value(m[0], name),
                     reverse=descending)
        ordered = present + missing
    return ordered


def _sort_value(doc: Document, name: str) -> Any:
    """The value a document sorts by on field ``name`` (None if absent)."""
    data = doc.get(name)
    if data is None or not data.values:
        return None
    if data.fdef.kind in (TEXT, NGRAM):
        return data.raw[0].lower()
    return data.raw[0] if data.fdef.kind == STRING else data.values[0]


def parse_fl(values: list[str]) -> FieldList:
    """Parse one or more ``fl`` parameters."""
    fl = FieldList()
    items = [i for v in values for i in _FL_SPLIT.split(v) if i]
    for item in items or ["*"]:
        if item == "*":
            fl.everything = True
        elif item == "score":
            fl.score = True
        elif item.startswith("["):
            log.debug("Ignoring document transformer %s", item)
        elif "*" in item or "?" in item:
            fl.patterns.append(item)
        else:
            fl.names.add(item.split(":", 1)[-1])
    return fl


def render_doc(doc: Document, score: float, fl: FieldList) -> dict[str, Any]:
    """The JSON form of one result document."""
    out = {k: v for k, v in doc.stored.items() if fl.wants(k)}
    if fl.score:
        out["score"] = score
    return out

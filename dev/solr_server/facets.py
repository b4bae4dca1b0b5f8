"""Field and query faceting (``facet_counts``)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from .document import Document, FieldData, as_text
from .errors import SolrError
from .params import Params
from .query import parse_query, strip_local_params
from .schema import NGRAM, STRING, TEXT, Schema
from .search import query_context

#: Solr's default ``facet.limit``.
DEFAULT_LIMIT = 100


def facet_counts(matched: list[Document], all_docs: list[Document],
                 params: Params, schema: Schema,
                 now: datetime) -> dict[str, Any]:
    """Compute the ``facet_counts`` section of a select response."""
    nl = params.get("json.nl", "flat") or "flat"
    queries = {}
    ctx = query_context(params, schema, now, main=False)
    for text in params.getlist("facet.query"):
        matcher = parse_query(text, ctx)
        queries[text] = sum(1 for d in matched if matcher.score(d) is not None)
    fields = {}
    for spec in params.getlist("facet.field"):
        name = strip_local_params(spec).strip()
        pairs = field_facet(name, matched, all_docs, params)
        fields[name] = format_pairs(pairs, nl)
    return {"facet_queries": queries, "facet_fields": fields,
            "facet_ranges": {}, "facet_intervals": {}, "facet_heatmaps": {}}


def facet_values(data: FieldData | None) -> dict[str, Any]:
    """Distinct facet terms of one document's field, with sort keys."""
    if data is None or not data.fdef.indexed:
        return {}
    if data.fdef.kind == TEXT:
        return {t: t for t in data.terms}
    if data.fdef.kind in (STRING, NGRAM):
        return {r: r for r in data.raw}
    return {as_text(v): v for v in data.values}


def field_facet(name: str, matched: list[Document], all_docs: list[Document],
                params: Params) -> list[tuple[str | None, int]]:
    """Counts for one ``facet.field`` honouring limit/mincount/sort/..."""
    limit = _int(params.field_param(name, "facet.limit"), DEFAULT_LIMIT)
    mincount = _int(params.field_param(name, "facet.mincount"), 0)
    offset = _int(params.field_param(name, "facet.offset"), 0)
    sort = params.field_param(name, "facet.sort") or \
        ("count" if limit > 0 else "index")
    prefix = params.field_param(name, "facet.prefix") or ""
    counts, keys = _count(name, matched, all_docs if mincount <= 0 else [])
    items = [(term, n) for term, n in counts.items()
             if n >= mincount and term.startswith(prefix)]
    if sort == "index":
        items.sort(key=lambda item: keys[item[0]])
    else:
        items.sort(key=lambda item: (-item[1], keys[item[0]]))
    items = items[offset:] if limit < 0 else items[offset:offset + limit]
    pairs: list[tuple[str | None, int]] = list(items)
    if (params.field_param(name, "facet.missing") or "") in ("true", "on"):
        pairs.append((None, sum(1 for d in matched if not facet_values(
            d.get(name)))))
    return pairs


def _count(name: str, matched: list[Document], zero_docs: list[Document]
           ) -> tuple[Counter[str], dict[str, Any]]:
    """Document counts per term, plus each term's sort key."""
    counts: Counter[str] = Counter()
    keys: dict[str, Any] = {}
    for doc in matched:
        values = facet_values(doc.get(name))
        counts.update(values.keys())
        keys.update(values)
    for doc in zero_docs:
        for term, key in facet_values(doc.get(name)).items():
            counts.setdefault(term, 0)
            keys.setdefault(term, key)
    return counts, keys


def format_pairs(pairs: list[tuple[str | None, int]], nl: str) -> Any:
    """Render (term, count) pairs according to ``json.nl``."""
    if nl == "map":
        return {term: count for term, count in pairs}
    if nl == "arrarr":
        return [[term, count] for term, count in pairs]
    if nl == "arrmap":
        return [{term: count} for term, count in pairs]
    return [x for pair in pairs for x in pair]


def _int(value: str | None, default: int) -> int:
    """Parse an integer facet parameter."""
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SolrError(f"Invalid integer facet parameter: {value}") from None

"""Indexed documents: type coercion, copyFields, defaults and validation."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import analysis
from .dates import format_date, parse_date
from .errors import SolrError
from .schema import BOOL, DATE, FLOAT, INT, NGRAM, TEXT, FieldDef, Schema

RawDoc = dict[str, list[Any]]


@dataclass
class FieldData:
    """The indexed form of one field of one document."""

    fdef: FieldDef
    values: list[Any] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    positions: list[list[str]] = field(default_factory=list)
    terms: Counter[str] = field(default_factory=Counter)

    @property
    def length(self) -> int:
        """Number of positional tokens (at least 1) for length norms."""
        return max(1, sum(len(p) for p in self.positions))


@dataclass
class Document:
    """A document as stored in a core."""

    key: str
    stored: dict[str, Any]
    fields: dict[str, FieldData]

    def get(self, name: str) -> FieldData | None:
        """Return the indexed data of field ``name`` if present."""
        return self.fields.get(name)


def normalise_input(doc: dict[str, Any]) -> RawDoc:
    """Turn a JSON document into ``{name: [values]}`` without nulls."""
    raw: RawDoc = {}
    for name, value in doc.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        flat = [v for v in _flatten(values) if v is not None]
        if flat:
            raw.setdefault(name, []).extend(flat)
    return raw


def _flatten(values: list[Any] | tuple[Any, ...]) -> list[Any]:
    """Flatten nested lists one level deep (Solr ignores the nesting)."""
    out: list[Any] = []
    for value in values:
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


def build_document(raw: RawDoc, schema: Schema, now: datetime) -> Document:
    """Validate and index a raw document according to ``schema``."""
    key_values = raw.get(schema.unique_key)
    if not key_values:
        raise SolrError("Document is missing mandatory uniqueKey field: "
                        f"{schema.unique_key}")
    key = as_text(key_values[0])
    raw = dict(raw)
    for fdef in schema.default_fields:
        if fdef.name not in raw:
            raw[fdef.name] = [now if fdef.default == "NOW" else fdef.default]
    fields = {name: _index_field(schema.field(name), values, key, now)
              for name, values in raw.items()}
    _apply_copy_fields(raw, fields, schema, key, now)
    _check(fields, schema, key)
    stored = {name: _stored_value(data) for name, data in fields.items()
              if data.fdef.stored and data.values}
    return Document(key, stored, fields)


def _apply_copy_fields(raw: RawDoc, fields: dict[str, FieldData],
                       schema: Schema, key: str, now: datetime) -> None:
    """Copy source values into their copyField destinations."""
    for name in list(raw):
        for dest in schema.copy_dests(name):
            data = fields.get(dest)
            if data is None:
                data = fields[dest] = FieldData(schema.field(dest))
            for value in fields[name].raw:
                _add_value(data, value, key, now)


def _check(fields: dict[str, FieldData], schema: Schema, key: str) -> None:
    """Enforce required fields and single-valued fields."""
    for fdef in schema.required_fields:
        if fdef.name not in fields or not fields[fdef.name].values:
            raise SolrError(f"[doc={key}] missing required field: {fdef.name}")
    for name, data in fields.items():
        if not data.fdef.multi and len(data.values) > 1:
            shown = ", ".join(data.raw)
            raise SolrError(
                f"ERROR: [doc={key}] multiple values encountered for non "
                f"multiValued field {name}: [{shown}]")


def _index_field(fdef: FieldDef, values: list[Any], key: str,
                 now: datetime) -> FieldData:
    """Index every value of one input field."""
    data = FieldData(fdef)
    for value in values:
        _add_value(data, value, key, now)
    return data


def _add_value(data: FieldData, value: Any, key: str, now: datetime) -> None:
    """Coerce and index a single value into ``data``."""
    if isinstance(value, dict):
        raise SolrError(f"ERROR: [doc={key}] atomic updates and child "
                        "documents are not supported by the dev Solr server")
    typed = coerce(data.fdef, value, key, now)
    data.values.append(typed)
    text = as_text(typed)
    data.raw.append(text)
    if data.fdef.kind == TEXT:
        positions, terms = analysis.index_tokens(text, data.fdef.ftype)
        data.positions.append(positions)
        data.terms.update(positions)
        data.terms.update(t for t in terms if t not in data.terms)
    elif data.fdef.kind == NGRAM:
        data.positions.append([text.lower()])


def coerce(fdef: FieldDef, value: Any, key: str, now: datetime) -> Any:
    """Convert an input value to the Python type for the field's kind."""
    kind = fdef.kind
    try:
        if kind == INT:
            return _to_int(value)
        if kind == FLOAT:
            return float(value)
        if kind == DATE:
            return value if isinstance(value, datetime) else \
                parse_date(str(value), now)
        if kind == BOOL:
            return to_bool(value)
    except (ValueError, TypeError, SolrError) as err:
        raise SolrError(f"ERROR: [doc={key}] Error adding field "
                        f"'{fdef.name}'='{value}' msg={err}") from None
    return as_text(value)


def _to_int(value: Any) -> int:
    """Strict integer conversion (``"1.5"`` is an error, as in Solr)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):
        raise ValueError(f'For input string: "{value}"')
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f'For input string: "{value}"') from None


def to_bool(value: Any) -> bool:
    """Solr's BoolField parsing: ``true``, ``t``, ``1``, ``on``..."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "t", "1", "on", "yes", "y")


def as_text(value: Any) -> str:
    """The string form Solr uses for a value (copyFields, facets...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_date(value)
    return str(value)


def _stored_value(data: FieldData) -> Any:
    """JSON form of a stored field: scalar, or list when multiValued."""
    values = [_json_value(v) for v in data.values]
    return values if data.fdef.multi else values[0]


def _json_value(value: Any) -> Any:
    """JSON-serialisable form of a typed value."""
    return format_date(value) if isinstance(value, datetime) else value

"""Solr schema model loaded from CKAN's ``schema.xml``.

Only the parts of the schema that influence behaviour are modelled: field
types (reduced to a *kind* plus analysis flags), fields, dynamic fields,
copy fields, defaults, ``multiValued``/``stored``/``required`` and the
unique key.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SolrError

log = logging.getLogger(__name__)

#: Kinds of field types understood by the server.
STRING, TEXT, NGRAM, INT, FLOAT, DATE, BOOL, BINARY = (
    "string", "text", "ngram", "int", "float", "date", "bool", "binary")

_CLASS_KINDS = {
    "StrField": STRING, "TextField": TEXT, "SortableTextField": TEXT,
    "BoolField": BOOL, "BinaryField": BINARY,
    "IntPointField": INT, "LongPointField": INT, "TrieIntField": INT,
    "TrieLongField": INT, "FloatPointField": FLOAT,
    "DoublePointField": FLOAT, "TrieFloatField": FLOAT,
    "TrieDoubleField": FLOAT, "DatePointField": DATE, "TrieDateField": DATE,
    "DateRangeField": DATE,
}


@dataclass(frozen=True)
class FieldType:
    """A ``<fieldType>``: its kind plus the analysis features we emulate."""

    name: str
    kind: str
    multi: bool = False
    stem: bool = False
    case_split: bool = False
    min_gram: int = 2
    max_gram: int = 10

    @property
    def tokenized(self) -> bool:
        """Whether values are analysed into tokens (text-like types)."""
        return self.kind in (TEXT, NGRAM)


@dataclass(frozen=True)
class FieldDef:
    """A concrete field (explicit or resolved from a dynamic field)."""

    name: str
    ftype: FieldType
    multi: bool
    stored: bool = True
    indexed: bool = True
    required: bool = False
    default: str | None = None

    @property
    def kind(self) -> str:
        """Shortcut to the field type's kind."""
        return self.ftype.kind


@dataclass
class Schema:
    """The parsed schema, with field resolution helpers."""

    name: str
    ckan_version: str
    version: str
    xml_text: str
    unique_key: str
    types: dict[str, FieldType]
    fields: dict[str, FieldDef]
    dynamic: list[tuple[str, FieldDef]]
    copy_fields: list[tuple[str, str]]
    _cache: dict[str, FieldDef] = field(default_factory=dict, repr=False)

    def field(self, name: str) -> FieldDef:
        """Return the definition for ``name`` (explicit or dynamic)."""
        found = self._cache.get(name)
        if found is not None:
            return found
        found = self.fields.get(name) or self._dynamic_for(name)
        self._cache[name] = found
        return found

    def _dynamic_for(self, name: str) -> FieldDef:
        """Resolve ``name`` against the dynamic fields (longest first)."""
        for pattern, proto in self.dynamic:
            if fnmatch.fnmatchcase(name, pattern):
                return FieldDef(name, proto.ftype, proto.multi, proto.stored,
                                proto.indexed, proto.required, proto.default)
        raise SolrError(f"undefined field {name}")

    def copy_dests(self, name: str) -> list[str]:
        """Return the copyField destinations for source field ``name``."""
        dests = []
        for source, dest in self.copy_fields:
            if source == dest or not fnmatch.fnmatchcase(name, source):
                continue
            dests.append(_expand_dest(name, source, dest))
        return [d for d in dests if d != name]

    @property
    def required_fields(self) -> list[FieldDef]:
        """Explicit fields marked ``required="true"``."""
        return [f for f in self.fields.values() if f.required]

    @property
    def default_fields(self) -> list[FieldDef]:
        """Explicit fields having a ``default`` value."""
        return [f for f in self.fields.values() if f.default is not None]


def _expand_dest(name: str, source: str, dest: str) -> str:
    """Expand a ``*`` in a copyField destination from the source match."""
    if "*" not in dest or "*" not in source:
        return dest
    prefix, _, suffix = source.partition("*")
    matched = name[len(prefix):len(name) - len(suffix) or None]
    return dest.replace("*", matched)


def default_schema_path() -> Path:
    """Locate ``ckan/config/solr/schema.xml`` without importing CKAN."""
    spec = importlib.util.find_spec("ckan")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "CKAN is not installed: pass --schema PATH to schema.xml")
    base = Path(list(spec.submodule_search_locations)[0])
    return base / "config" / "solr" / "schema.xml"


def load_schema(path: Path | None = None,
                version_override: str | None = None) -> Schema:
    """Load and parse a schema file (CKAN's by default)."""
    path = path or default_schema_path()
    text = path.read_text(encoding="utf-8")
    if version_override:
        text = _rewrite_version(text, version_override)
    log.info("Loading Solr schema from %s", path)
    return parse_schema(text)


def _rewrite_version(text: str, version: str) -> str:
    """Replace the ``name="ckan-X.Y"`` attribute of the root element."""
    root = ET.fromstring(text.encode("utf-8"))
    old = root.get("name", "")
    if old:
        return text.replace(f'name="{old}"', f'name="ckan-{version}"', 1)
    return text.replace("<schema", f'<schema name="ckan-{version}"', 1)


def parse_schema(text: str) -> Schema:
    """Parse schema XML text into a :class:`Schema`."""
    root = ET.fromstring(text.encode("utf-8"))
    types = {t.name: t for t in _parse_types(root)}
    fields: dict[str, FieldDef] = {}
    dynamic: list[tuple[str, FieldDef]] = []
    for elem in root.iter("field"):
        fdef = _parse_field(elem, types)
        fields[fdef.name] = fdef
    for elem in root.iter("dynamicField"):
        dynamic.append((elem.get("name", "*"), _parse_field(elem, types)))
    dynamic.sort(key=lambda item: -len(item[0]))
    copies = [(c.get("source", ""), c.get("dest", ""))
              for c in root.iter("copyField")]
    name = root.get("name", "")
    version = root.get("version", "")
    ckan_version = name.split("-", 1)[1] if name.startswith("ckan-") \
        else version
    unique = root.findtext("uniqueKey") or "id"
    return Schema(name, ckan_version, version, text, unique.strip(), types,
                  fields, dynamic, copies)


def _parse_types(root: ET.Element) -> list[FieldType]:
    """Parse every ``<fieldType>``/``<fieldtype>`` element."""
    elems = list(root.iter("fieldType")) + list(root.iter("fieldtype"))
    return [_parse_type(elem) for elem in elems]


def _parse_type(elem: ET.Element) -> FieldType:
    """Reduce one field type element to a :class:`FieldType`."""
    cls = elem.get("class", "").rsplit(".", 1)[-1]
    kind = _CLASS_KINDS.get(cls, STRING)
    analyzer = _index_analyzer(elem)
    stem = case_split = False
    min_gram, max_gram = 2, 10
    if analyzer is not None:
        tokenizer = analyzer.find("tokenizer")
        if tokenizer is not None and "NGram" in tokenizer.get("class", ""):
            kind = NGRAM
            min_gram = int(tokenizer.get("minGramSize", "1"))
            max_gram = int(tokenizer.get("maxGramSize", "2"))
        for filt in analyzer.iter("filter"):
            fcls = filt.get("class", "")
            stem = stem or "Stem" in fcls or "Snowball" in fcls
            case_split = case_split or (
                "WordDelimiter" in fcls
                and filt.get("splitOnCaseChange", "1") == "1")
    return FieldType(elem.get("name", ""), kind, _bool(elem.get("multiValued")),
                     stem, case_split, min_gram, max_gram)


def _index_analyzer(elem: ET.Element) -> ET.Element | None:
    """Return the index-time analyzer (or the only analyzer) of a type."""
    analyzers = elem.findall("analyzer")
    for analyzer in analyzers:
        if analyzer.get("type") in (None, "index"):
            return analyzer
    return analyzers[0] if analyzers else None


def _parse_field(elem: ET.Element, types: dict[str, FieldType]) -> FieldDef:
    """Parse a ``<field>`` or ``<dynamicField>`` element."""
    type_name = elem.get("type", "string")
    ftype = types.get(type_name) or FieldType(type_name, STRING)
    multi_attr = elem.get("multiValued")
    multi = ftype.multi if multi_attr is None else _bool(multi_attr)
    return FieldDef(
        name=elem.get("name", ""), ftype=ftype, multi=multi,
        stored=_bool(elem.get("stored"), True),
        indexed=_bool(elem.get("indexed"), True),
        required=_bool(elem.get("required")),
        default=elem.get("default"))


def _bool(value: str | None, default: bool = False) -> bool:
    """Parse a schema boolean attribute."""
    if value is None:
        return default
    return value.strip().lower() == "true"

"""Exact-term index of the searchable documents, to narrow a select.

Real Solr answers ``id:"X" OR name:"X"`` (CKAN's ``package_show`` cache
lookup) from its inverted index; scoring every document instead made such a
lookup cost as much as a full search, and grow with the number of datasets.
The index maps, for each string field asked about, each value to the keys of
the documents that hold it. It is built for a field on its first use and kept
up to date at each commit from the documents changed since the previous one.
A query the index cannot narrow (text, ranges, negations ...) scans all
documents as before, so results never depend on it.
"""
from __future__ import annotations

from typing import Iterable

from .document import Document
from .matchers import Boolean, Boosted, DisMax, ExactTerm, Matcher
from .schema import STRING

Keys = set[str]


class TermIndex:
    """Value -> document keys, per string field, over one core's visible docs."""

    def __init__(self) -> None:
        """An empty index: fields are added when first asked about."""
        self._fields: dict[str, dict[str, Keys]] = {}

    def clear(self) -> None:
        """Forget every field (the visible documents were replaced wholesale)."""
        self._fields.clear()

    def update(self, old: Document | None, new: Document | None) -> None:
        """Replace ``old`` by ``new`` (either may be None) in the indexed fields."""
        for name, values in self._fields.items():
            if old is not None:
                for value in _values(old, name):
                    keys = values.get(value)
                    if keys is not None:
                        keys.discard(old.key)
            if new is not None:
                for value in _values(new, name):
                    values.setdefault(value, set()).add(new.key)

    def candidates(self, matcher: Matcher, docs: Iterable[Document]) -> Keys | None:
        """Keys of the documents that may match ``matcher`` (a superset), or
        None when the index cannot tell."""
        if isinstance(matcher, Boosted):
            return self.candidates(matcher.inner, docs)
        if isinstance(matcher, ExactTerm):
            if matcher.fdef.kind != STRING or not matcher.fdef.indexed:
                return None
            return set(self._field(matcher.fdef.name, docs).get(matcher.value, ()))
        if isinstance(matcher, DisMax):
            return self._union(matcher.subs, docs)
        if isinstance(matcher, Boolean):
            if matcher.must:
                return self.narrowest(matcher.must, docs)
            return self._union(matcher.should, docs) if matcher.should else None
        return None

    def narrowest(self, matchers: Iterable[Matcher], docs: Iterable[Document]
                  ) -> Keys | None:
        """Intersection of what each matcher allows (all must match)."""
        result: Keys | None = None
        for matcher in matchers:
            keys = self.candidates(matcher, docs)
            if keys is not None:
                result = keys if result is None else result & keys
        return result

    def _union(self, matchers: list[Matcher], docs: Iterable[Document]) -> Keys | None:
        result: Keys = set()
        for matcher in matchers:
            keys = self.candidates(matcher, docs)
            if keys is None:
                return None
            result |= keys
        return result

    def _field(self, name: str, docs: Iterable[Document]) -> dict[str, Keys]:
        values = self._fields.get(name)
        if values is None:
            values = {}
            for doc in docs:
                for value in _values(doc, name):
                    values.setdefault(value, set()).add(doc.key)
            self._fields[name] = values
        return values


def _values(doc: Document, name: str) -> list[str]:
    """The raw values of string field ``name`` as :class:`ExactTerm` compares them."""
    data = doc.get(name)
    if data is None or not data.values or data.fdef.kind != STRING \
            or not data.fdef.indexed:
        return []
    return data.raw

"""In-memory Solr cores with commit semantics, and the core registry."""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from .dates import utc_now
from .document import Document, RawDoc, build_document
from .errors import SolrError
from .facets import facet_counts
from .params import Params
from .query import QueryContext, parse_query
from .schema import Schema
from .search import (
    filter_queries,
    find_matches,
    main_query,
    parse_fl,
    parse_sort,
    render_doc,
    request_now,
    sort_matches,
)
from .termindex import TermIndex
from .update import ADD, DELETE_ID, DELETE_QUERY, ROLLBACK, Command

log = logging.getLogger(__name__)

_CORE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class Core:
    """One core: uncommitted (live) documents and the searchable snapshot.

    Not thread-safe by itself: the :class:`CoreRegistry` lock guards it.
    """

    def __init__(self, name: str, schema: Schema) -> None:
        """Create an empty core."""
        self.name = name
        self.schema = schema
        self._live: dict[str, Document] = {}
        self._visible: dict[str, Document] = {}
        self._terms = TermIndex()  # over _visible
        self._changed: set[str] = set()  # keys added or deleted since the commit

    @property
    def num_docs(self) -> int:
        """Number of searchable (committed) documents."""
        return len(self._visible)

    def add(self, raw_docs: list[RawDoc], overwrite: bool = True) -> None:
        """Validate all documents, then add them (replacing same keys)."""
        now = utc_now()
        docs = [build_document(raw, self.schema, now) for raw in raw_docs]
        for doc in docs:
            if overwrite:
                self._live.pop(doc.key, None)
            self._live[doc.key] = doc
            self._changed.add(doc.key)
        log.debug("core %s: added %d docs", self.name, len(docs))

    def delete_ids(self, ids: list[str]) -> None:
        """Delete documents by unique key."""
        for key in ids:
            self._live.pop(key, None)
            self._changed.add(key)

    def delete_query(self, text: str, params: Params) -> None:
        """Delete every (live) document matching a Lucene query."""
        ctx = QueryContext(self.schema, utc_now(),
                           [(params.get("df") or "text", 1.0)],
                           (params.get("q.op") or "OR").upper())
        matcher = parse_query(text, ctx)
        doomed = [k for k, d in self._live.items()
                  if matcher.score(d) is not None]
        for key in doomed:
            del self._live[key]
            self._changed.add(key)
        log.debug("core %s: deleted %d docs by query %r", self.name,
                  len(doomed), text)

    def commit(self) -> None:
        """Make the live documents searchable."""
        for key in self._changed:
            self._terms.update(self._visible.get(key), self._live.get(key))
        self._changed.clear()
        self._visible = dict(self._live)

    def rollback(self) -> None:
        """Discard uncommitted changes."""
        self._live = dict(self._visible)
        self._changed.clear()

    def realtime_get(self, key: str) -> Document | None:
        """Return the latest (possibly uncommitted) version of a document."""
        return self._live.get(key)

    def apply(self, commands: list[Command], params: Params) -> None:
        """Run parsed update commands, then honour commit parameters."""
        overwrite = params.get_bool("overwrite", True)
        for command in commands:
            if command.kind == ADD:
                self.add(command.docs, overwrite)
            elif command.kind == DELETE_ID:
                self.delete_ids(command.values)
            elif command.kind == DELETE_QUERY:
                for text in command.values:
                    self.delete_query(text, params)
            elif command.kind == ROLLBACK:
                self.rollback()
            else:
                self.commit()
        if _wants_commit(params):
            self.commit()

    def select(self, params: Params) -> dict[str, Any]:
        """Run a search and build the ``response``/``facet_counts`` body."""
        now = request_now(params) or utc_now()
        docs = list(self._visible.values())
        query = main_query(params, self.schema, now)
        filters = filter_queries(params, self.schema, now)
        keys = self._terms.narrowest([query, *filters], docs)
        # Kept in index order, as a full scan finds them (ties sort stably).
        candidates = docs if keys is None else [d for d in docs if d.key in keys]
        matches = sort_matches(find_matches(candidates, query, filters),
                               parse_sort(params.get("sort"), self.schema))
        start, rows = params.get_int("start", 0), params.get_int("rows", 10)
        if start < 0 or rows < 0:
            raise SolrError("'start' and 'rows' must not be negative")
        fl = parse_fl(params.getlist("fl"))
        response: dict[str, Any] = {
            "numFound": len(matches), "start": start, "numFoundExact": True,
            "docs": [render_doc(d, s, fl) for d, s in
                     matches[start:start + rows]]}
        if fl.score:
            response["maxScore"] = max((s for _, s in matches), default=0.0)
        body: dict[str, Any] = {"response": response}
        if params.get_bool("facet"):
            body["facet_counts"] = facet_counts(
                [d for d, _ in matches], docs, params, self.schema, now)
        return body


def _wants_commit(params: Params) -> bool:
    """``commit``/``softCommit``/``optimize``/``commitWithin`` params.

    ``commitWithin`` is honoured immediately (no background commits).
    """
    return (params.get_bool("commit") or params.get_bool("softCommit")
            or params.get_bool("optimize")
            or params.get("commitWithin") is not None)


class CoreRegistry:
    """All cores, created on first use, guarded by one re-entrant lock."""

    def __init__(self, schema: Schema) -> None:
        """Create an empty registry sharing ``schema`` between cores."""
        self.schema = schema
        self.lock = threading.RLock()
        self.started = time.time()
        self._cores: dict[str, Core] = {}

    def get(self, name: str) -> Core:
        """Return core ``name``, creating it if needed (hold ``lock``)."""
        if not _CORE_NAME_RE.match(name):
            raise SolrError(f"Invalid core name: {name}")
        core = self._cores.get(name)
        if core is None:
            log.info("Creating core %s", name)
            core = self._cores[name] = Core(name, self.schema)
        return core

    def names(self) -> list[str]:
        """Names of the existing cores."""
        return sorted(self._cores)

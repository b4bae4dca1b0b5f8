"""Compiled query nodes: each scores a document or rejects it (``None``).

Scores loosely follow Lucene's classic similarity (square root of the term
frequency, divided by the square root of the field length, times boosts)
so that e.g. a title match outranks a match in a long description.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .document import Document, FieldData
from .schema import NGRAM, STRING, TEXT, FieldDef


class Matcher:
    """Base class of all compiled query nodes."""

    def score(self, doc: Document) -> float | None:
        """Return the score of ``doc``, or ``None`` if it does not match."""
        raise NotImplementedError


def indexed_data(doc: Document, fdef: FieldDef) -> FieldData | None:
    """Return the document's data for ``fdef`` if searchable and present."""
    data = doc.get(fdef.name)
    if data is None or not data.values or not fdef.indexed:
        return None
    return data


def targets(data: FieldData) -> Iterable[str]:
    """Strings that wildcard/regex/fuzzy/range text queries compare with."""
    if data.fdef.kind == TEXT:
        return data.terms.keys()
    if data.fdef.kind == NGRAM:
        return (r.lower() for r in data.raw)
    return data.raw


class MatchAll(Matcher):
    """``*:*``: matches every document with a constant score."""

    def score(self, doc: Document) -> float | None:
        """Always 1.0."""
        return 1.0


class MatchNone(Matcher):
    """Matches nothing (e.g. an empty query)."""

    def score(self, doc: Document) -> float | None:
        """Never matches."""
        return None


@dataclass
class Boosted(Matcher):
    """Multiplies the score of the wrapped matcher (``term^2``)."""

    inner: Matcher
    boost: float

    def score(self, doc: Document) -> float | None:
        """Boosted inner score."""
        value = self.inner.score(doc)
        return None if value is None else value * self.boost


@dataclass
class Exists(Matcher):
    """``field:*`` and ``field:[* TO *]``: the field has a value."""

    fdef: FieldDef

    def score(self, doc: Document) -> float | None:
        """1.0 when the field is present."""
        return 1.0 if indexed_data(doc, self.fdef) else None


@dataclass
class ExactTerm(Matcher):
    """Exact match on a non-tokenised field (string, number, date, bool)."""

    fdef: FieldDef
    value: Any

    def score(self, doc: Document) -> float | None:
        """1.0 when one of the field's values equals the term."""
        data = indexed_data(doc, self.fdef)
        if data is None:
            return None
        values = data.raw if self.fdef.kind == STRING else data.values
        return 1.0 if self.value in values else None


@dataclass
class TextTerm(Matcher):
    """A word on a text field: every analysed part must be present."""

    fdef: FieldDef
    tokens: list[str]

    def score(self, doc: Document) -> float | None:
        """Sum of sqrt(tf) over the parts, normalised by field length."""
        data = indexed_data(doc, self.fdef)
        if data is None or any(t not in data.terms for t in self.tokens):
            return None
        total = sum(math.sqrt(data.terms[t]) for t in self.tokens)
        return total / math.sqrt(data.length)


@dataclass
class TextPhrase(Matcher):
    """A phrase on a text field, optionally sloppy (``"a b"~2``)."""

    fdef: FieldDef
    tokens: list[str]
    slop: int = 0

    def score(self, doc: Document) -> float | None:
        """sqrt(number of occurrences) normalised by field length."""
        data = indexed_data(doc, self.fdef)
        if data is None:
            return None
        hits = sum(_phrase_hits(p, self.tokens, self.slop)
                   for p in data.positions)
        return math.sqrt(hits) / math.sqrt(data.length) if hits else None


def _phrase_hits(positions: list[str], tokens: list[str], slop: int) -> int:
    """Count the start positions at which the phrase occurs."""
    hits = 0
    for start, token in enumerate(positions):
        if token != tokens[0]:
            continue
        if all(_near(positions, tok, start + i, slop)
               for i, tok in enumerate(tokens[1:], 1)):
            hits += 1
    return hits


def _near(positions: list[str], token: str, pos: int, slop: int) -> bool:
    """Whether ``token`` occurs within ``slop`` of position ``pos``."""
    low, high = max(0, pos - slop), min(len(positions), pos + slop + 1)
    return token in positions[low:high]


@dataclass
class NgramTerm(Matcher):
    """A term on an n-gram field: each word must be a substring."""

    fdef: FieldDef
    words: list[str]

    def score(self, doc: Document) -> float | None:
        """1.0 when all words are n-grams of one of the values."""
        data = indexed_data(doc, self.fdef)
        if data is None:
            return None
        low, high = self.fdef.ftype.min_gram, self.fdef.ftype.max_gram
        for word in self.words:
            if not low <= len(word) <= high:
                return None
            if not any(word in value for value in targets(data)):
                return None
        return 1.0


@dataclass
class Predicate(Matcher):
    """Constant-score match of a predicate over the field's targets.

    Used for wildcards, regular expressions, fuzzy terms and ranges.
    ``typed`` compares the typed values instead of the string targets.
    """

    fdef: FieldDef
    test: Callable[[Any], bool]
    typed: bool = False

    def score(self, doc: Document) -> float | None:
        """1.0 when one of the values passes the predicate."""
        data = indexed_data(doc, self.fdef)
        if data is None:
            return None
        values = data.values if self.typed else targets(data)
        return 1.0 if any(self.test(v) for v in values) else None


@dataclass
class Boolean(Matcher):
    """A Lucene BooleanQuery with MUST / SHOULD / MUST_NOT clauses."""

    must: list[Matcher] = field(default_factory=list)
    should: list[Matcher] = field(default_factory=list)
    must_not: list[Matcher] = field(default_factory=list)
    min_should: int = 0

    def score(self, doc: Document) -> float | None:
        """Sum of the scores of the matching MUST and SHOULD clauses."""
        total = 0.0
        for clause in self.must:
            value = clause.score(doc)
            if value is None:
                return None
            total += value
        if any(c.score(doc) is not None for c in self.must_not):
            return None
        scores = [s for s in (c.score(doc) for c in self.should)
                  if s is not None]
        needed = self.min_should or (0 if self.must else 1)
        if self.should and len(scores) < needed:
            return None
        return total + sum(scores)


@dataclass
class DisMax(Matcher):
    """Disjunction max over several fields: max + tie * (sum - max)."""

    subs: list[Matcher]
    tie: float = 0.0

    def score(self, doc: Document) -> float | None:
        """Best field score plus ``tie`` times the others."""
        scores = [s for s in (m.score(doc) for m in self.subs) if s is not None]
        if not scores:
            return None
        best = max(scores)
        return best + self.tie * (sum(scores) - best)


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Lucene wildcard (``*``, ``?``, ``\\`` escapes) to a regex."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char in "*?":
            out.append(".*" if char == "*" else ".")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def levenshtein(a: str, b: str, limit: int) -> int:
    """Edit distance between ``a`` and ``b`` (stops early past ``limit``)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]

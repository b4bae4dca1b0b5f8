"""Lucene query syntax (parsed with ``luqum``) compiled into matchers.

Supports what CKAN and harvesting extensions send: ``field:value``, phrases,
``+``/``-``/``NOT``/``AND``/``OR`` (and ``&&``/``||``/``!``), groups,
``field:(a OR b)``, ``*:*``, ``field:*``, inclusive/exclusive ranges with
dates and date math, wildcards, regexes, fuzzy and proximity terms, boosts,
and unfielded terms over the default field (``df``) or, for
dismax/edismax, the ``qf`` fields with ``mm`` and ``tie``.

Deviation from Lucene: ``AND`` binds tighter than ``OR`` (luqum's boolean
precedence) instead of Lucene's left-to-right clause marking.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from luqum import tree
from luqum.exceptions import ParseError
from luqum.thread import parse as luqum_parse

from . import analysis
from .dates import parse_date
from .document import to_bool
from .errors import SolrError
from .matchers import (
    Boolean,
    Boosted,
    DisMax,
    ExactTerm,
    Exists,
    MatchAll,
    Matcher,
    MatchNone,
    NgramTerm,
    Predicate,
    TextPhrase,
    TextTerm,
    levenshtein,
    wildcard_regex,
)
from .schema import BOOL, DATE, FLOAT, INT, NGRAM, TEXT, FieldDef, Schema

log = logging.getLogger(__name__)

MUST, SHOULD, MUST_NOT = "must", "should", "must_not"
_ESCAPE_RE = re.compile(r'([+\-&|!(){}\[\]^~*?:\\/])')
_UNESCAPE_RE = re.compile(r"\\(.)")
_LOCAL_PARAM_KEYS = {"tag", "ex", "cache", "cost", "type", "lucene"}
_TYPED_KINDS = (INT, FLOAT, DATE, BOOL)


@dataclass
class QueryContext:
    """Everything that influences how a query string is interpreted."""

    schema: Schema
    now: datetime
    fields: list[tuple[str, float]]
    default_op: str = "OR"
    dismax: bool = False
    mm: str | None = None
    tie: float = 0.0


def parse_query(text: str, ctx: QueryContext) -> Matcher:
    """Parse ``text`` and compile it against the schema."""
    text = strip_local_params(text).strip()
    if not text:
        return MatchNone()
    if text == "*:*":
        return MatchAll()
    node = _parse(text, ctx.dismax)
    return _Compiler(ctx).compile(node, None, top=True) or MatchNone()


def parse_boosted_fields(spec: str) -> list[tuple[str, float]]:
    """Parse ``qf`` syntax: ``"name^4 title^4 text"``."""
    fields = []
    for item in spec.split():
        name, _, boost = item.partition("^")
        fields.append((name, float(boost) if boost else 1.0))
    return fields


def strip_local_params(text: str) -> str:
    """Remove a harmless ``{!tag=x cache=false}`` prefix; reject others."""
    stripped = text.lstrip()
    if not stripped.startswith("{!"):
        return text
    end = stripped.find("}")
    if end < 0:
        raise SolrError(f"Syntax error in local params: {text}")
    for item in stripped[2:end].split():
        key = item.split("=", 1)[0]
        value = item.split("=", 1)[-1]
        if key not in _LOCAL_PARAM_KEYS or (key == "type" and value != "lucene"):
            raise SolrError(f"Local params '{item}' are not supported "
                            "by the development Solr server")
    return stripped[end + 1:]


def _parse(text: str, lenient: bool) -> tree.Item:
    """Parse with luqum; dismax-style parsers retry with escaping."""
    try:
        return luqum_parse(_rewrite_operators(text))
    except ParseError as err:
        if lenient:
            try:
                return luqum_parse(_escape_all(text))
            except ParseError:
                pass
        raise SolrError("org.apache.solr.search.SyntaxError: "
                        f"Cannot parse '{text}': {err}") from None


def _rewrite_operators(text: str) -> str:
    """Translate ``&&``, ``||`` and prefix ``!`` into AND/OR/NOT."""
    out: list[str] = []
    i, quoted = 0, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        quoted = not quoted if char == '"' else quoted
        if not quoted and text.startswith(("&&", "||"), i):
            out.append(" AND " if char == "&" else " OR ")
            i += 2
            continue
        if not quoted and char == "!" and (i == 0 or text[i - 1] in " \t(+-"):
            out.append("NOT ")
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _escape_all(text: str) -> str:
    """Escape every special character (and drop unbalanced quotes)."""
    if text.count('"') % 2:
        text = text.replace('"', " ")
    return _ESCAPE_RE.sub(r"\\\1", text)


def unescape(text: str) -> str:
    """Remove Lucene backslash escapes."""
    return _UNESCAPE_RE.sub(r"\1", text)


def min_should_match(optional: int, spec: str | None) -> int:
    """Solr's ``mm`` computation (``"2<-1 5<80%"``, ``"100%"``, ``"-1"``)."""
    if not spec:
        return 0
    spec = re.sub(r"\s*<\s*", "<", spec.strip())
    if "<" not in spec:
        return _mm_simple(optional, spec)
    result = optional
    for condition in spec.split():
        upper, _, value = condition.partition("<")
        if optional <= int(upper):
            return result
        result = _mm_simple(optional, value)
    return result


def _mm_simple(optional: int, spec: str) -> int:
    """One unconditional ``mm`` expression (integer or percentage)."""
    try:
        if spec.endswith("%"):
            calc = optional * int(spec[:-1]) / 100.0
            result = optional + int(calc) if calc < 0 else int(calc)
        else:
            calc_int = int(spec)
            result = optional + calc_int if calc_int < 0 else calc_int
    except ValueError:
        raise SolrError(f"Invalid 'mm' value: {spec}") from None
    return min(optional, max(0, result))


class _Compiler:
    """Turns a luqum tree into :mod:`matchers` objects."""

    def __init__(self, ctx: QueryContext) -> None:
        """Bind the compiler to a query context."""
        self.ctx = ctx
        self.schema: Schema = ctx.schema

    def compile(self, node: tree.Item, field: str | None,
                top: bool = False) -> Matcher | None:
        """Compile ``node``; ``None`` means the clause analysed away."""
        handler = getattr(self, "_" + type(node).__name__.lower(), None)
        if handler is None:
            raise SolrError(f"Unsupported query syntax: {node}")
        result: Matcher | None = handler(node, field, top)
        return result

    # -- structure ---------------------------------------------------------
    def _searchfield(self, node: tree.SearchField, field: str | None,
                     top: bool) -> Matcher | None:
        """``name:expr``."""
        expr = node.expr
        if node.name == "*":
            if isinstance(expr, tree.Word) and expr.value == "*":
                return MatchAll()
            raise SolrError(f"Invalid query: {node}")
        if node.name in ("_query_", "_val_"):
            raise SolrError("Magic fields are not supported")
        if isinstance(expr, tree.SearchField):
            expr = tree.Word(str(expr).replace(":", "\\:"))
        return self.compile(expr, node.name)

    def _group(self, node: tree.Group, field: str | None,
               top: bool) -> Matcher | None:
        """``( ... )``."""
        return self.compile(node.expr, field)

    _fieldgroup = _group

    def _plus(self, node: tree.Plus, field: str | None,
              top: bool) -> Matcher | None:
        """A lone ``+clause``."""
        return self.compile(node.a, field)

    def _prohibit(self, node: tree.Prohibit, field: str | None,
                  top: bool) -> Matcher | None:
        """A lone ``-clause`` / ``NOT clause`` (pure negative query)."""
        inner = self.compile(node.a, field)
        return None if inner is None else _boolean([], [], [inner])

    _not = _prohibit

    def _andoperation(self, node: tree.AndOperation, field: str | None,
                      top: bool) -> Matcher | None:
        """``a AND b``."""
        return self._operation(node, field, MUST, None)

    def _oroperation(self, node: tree.OrOperation, field: str | None,
                     top: bool) -> Matcher | None:
        """``a OR b``."""
        return self._operation(node, field, SHOULD, None)

    def _unknownoperation(self, node: tree.UnknownOperation,
                          field: str | None, top: bool) -> Matcher | None:
        """``a b``: q.op decides, except top-level dismax which uses mm."""
        if self.ctx.dismax and top:
            mm = self.ctx.mm
            if mm is None:
                mm = "100%" if self.ctx.default_op == "AND" else "0%"
            return self._operation(node, field, SHOULD, mm)
        default = MUST if self.ctx.default_op == "AND" else SHOULD
        return self._operation(node, field, default, None)

    _booloperation = _unknownoperation

    def _operation(self, node: tree.BaseOperation, field: str | None,
                   default: str, mm: str | None) -> Matcher | None:
        """Build a boolean query from an operation's operands."""
        clauses: dict[str, list[Matcher]] = {MUST: [], SHOULD: [], MUST_NOT: []}
        for operand in node.operands:
            occur, inner = _occurrence(operand, default)
            matcher = self.compile(inner, field)
            if matcher is not None:
                clauses[occur].append(matcher)
        min_should = min_should_match(len(clauses[SHOULD]), mm)
        return _boolean(clauses[MUST], clauses[SHOULD], clauses[MUST_NOT],
                        min_should)

    def _boost(self, node: tree.Boost, field: str | None,
               top: bool) -> Matcher | None:
        """``clause^2``."""
        inner = self.compile(node.expr, field, top)
        return None if inner is None else Boosted(inner, float(node.force))

    # -- leaves ------------------------------------------------------------
    def _word(self, node: tree.Word, field: str | None,
              top: bool) -> Matcher | None:
        """A bare word: term, wildcard or ``*``."""
        if node.value == "*":
            return MatchAll() if field is None else \
                Exists(self.schema.field(field))
        if node.has_wildcard():
            return self._per_field(
                field, lambda fdef: self._wildcard(fdef, node.value))
        text = unescape(node.value)
        return self._per_field(field, lambda fdef: self._term(fdef, text))

    def _phrase(self, node: tree.Phrase, field: str | None,
                top: bool) -> Matcher | None:
        """``"a quoted phrase"``."""
        text = unescape(node.value[1:-1])
        return self._per_field(field, lambda fdef: self._phrase_for(fdef, text))

    def _proximity(self, node: tree.Proximity, field: str | None,
                   top: bool) -> Matcher | None:
        """``"a phrase"~N``."""
        text = unescape(node.term.value[1:-1])
        slop = int(node.degree)
        return self._per_field(
            field, lambda fdef: self._phrase_for(fdef, text, slop))

    def _fuzzy(self, node: tree.Fuzzy, field: str | None,
               top: bool) -> Matcher | None:
        """``word~`` / ``word~1``."""
        degree = float(node.degree)
        edits = 2 if node._implicit_degree or degree < 1 else min(2, int(degree))
        text = unescape(node.term.value)
        return self._per_field(field, lambda fdef: self._fuzzy_for(
            fdef, text, edits))

    def _regex(self, node: tree.Regex, field: str | None,
               top: bool) -> Matcher | None:
        """``/regular expression/``."""
        pattern = node.value[1:-1]
        return self._per_field(field, lambda fdef: self._regex_for(
            fdef, pattern))

    def _range(self, node: tree.Range, field: str | None,
               top: bool) -> Matcher | None:
        """``[low TO high]`` / ``{low TO high}``."""
        low, high = _bound(node.low), _bound(node.high)
        return self._per_field(field, lambda fdef: self._range_for(
            fdef, low, high, node.include_low, node.include_high))

    def _from(self, node: tree.From, field: str | None,
              top: bool) -> Matcher | None:
        """``field:>=x`` / ``field:>x``."""
        low = _bound(node.a)
        return self._per_field(field, lambda fdef: self._range_for(
            fdef, low, "*", node.include, True))

    def _to(self, node: tree.To, field: str | None,
            top: bool) -> Matcher | None:
        """``field:<=x`` / ``field:<x``."""
        high = _bound(node.a)
        return self._per_field(field, lambda fdef: self._range_for(
            fdef, "*", high, True, node.include))

    # -- per field ---------------------------------------------------------
    def _per_field(self, field: str | None,
                   build: Callable[[FieldDef], Matcher | None]
                   ) -> Matcher | None:
        """Apply ``build`` to the field, or dismax over the default fields."""
        if field is not None:
            return build(self.schema.field(field))
        subs: list[Matcher] = []
        for name, boost in self.ctx.fields:
            matcher = build(self.schema.field(name))
            if matcher is not None:
                subs.append(matcher if boost == 1 else Boosted(matcher, boost))
        if len(subs) <= 1:
            return subs[0] if subs else None
        return DisMax(subs, self.ctx.tie)

    def _term(self, fdef: FieldDef, text: str) -> Matcher | None:
        """An exact/analysed term on one field."""
        if fdef.kind == TEXT:
            words = analysis.query_tokens(text, fdef.ftype)
            terms: list[Matcher] = [TextTerm(fdef, w) for w in words]
            return _boolean(terms, [], [])
        if fdef.kind == NGRAM:
            grams = text.lower().split()
            return NgramTerm(fdef, grams) if grams else None
        return ExactTerm(fdef, self._typed(fdef, text))

    def _phrase_for(self, fdef: FieldDef, text: str,
                    slop: int = 0) -> Matcher | None:
        """A phrase on one field (exact value on non-text fields)."""
        if fdef.kind == TEXT:
            words = analysis.query_tokens(text, fdef.ftype)
            tokens = [t for word in words for t in word]
            if len(tokens) <= 1:
                return TextTerm(fdef, tokens) if tokens else None
            return TextPhrase(fdef, tokens, slop)
        if fdef.kind == NGRAM:
            needle = text.lower()
            return Predicate(fdef, lambda value: needle in value)
        return ExactTerm(fdef, self._typed(fdef, text))

    def _wildcard(self, fdef: FieldDef, pattern: str) -> Matcher:
        """A wildcard term (lower-cased on text fields)."""
        if fdef.kind in (TEXT, NGRAM):
            pattern = analysis.fold(pattern)
        regex = wildcard_regex(pattern)
        return Predicate(fdef, lambda value: regex.fullmatch(value) is not None)

    def _regex_for(self, fdef: FieldDef, pattern: str) -> Matcher:
        """A regular expression term."""
        if fdef.kind in (TEXT, NGRAM):
            pattern = analysis.fold(pattern)
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise SolrError(
                f"Invalid regular expression /{pattern}/: {err}") from None
        return Predicate(fdef, lambda value: regex.fullmatch(value) is not None)

    def _fuzzy_for(self, fdef: FieldDef, text: str, edits: int) -> Matcher:
        """A fuzzy term: edit distance at most ``edits``."""
        if fdef.kind in (TEXT, NGRAM):
            text = analysis.fold(text)
        return Predicate(
            fdef, lambda value: levenshtein(value, text, edits) <= edits)

    def _range_for(self, fdef: FieldDef, low: str, high: str,
                   include_low: bool, include_high: bool) -> Matcher:
        """A range on one field, typed for numbers/dates/booleans."""
        if low == "*" and high == "*":
            return Exists(fdef)
        typed = fdef.kind in _TYPED_KINDS
        lo, hi = (None if b == "*" else self._bound_value(fdef, b)
                  for b in (low, high))

        def test(value: Any) -> bool:
            if lo is not None and (value < lo or (value == lo and not include_low)):
                return False
            return hi is None or value < hi or (value == hi and include_high)
        return Predicate(fdef, test, typed=typed)

    def _bound_value(self, fdef: FieldDef, text: str) -> Any:
        """Convert a range bound to the field's comparison type."""
        if fdef.kind in _TYPED_KINDS:
            return self._typed(fdef, text, lenient=True)
        return analysis.fold(text) if fdef.kind in (TEXT, NGRAM) else text

    def _typed(self, fdef: FieldDef, text: str, lenient: bool = False) -> Any:
        """Convert query text to the field's value type."""
        kind = fdef.kind
        if kind == DATE:
            return parse_date(text, self.ctx.now)
        if kind == BOOL:
            return to_bool(text)
        if kind not in (INT, FLOAT):
            return text
        try:
            return int(text) if kind == INT and not lenient else float(text)
        except ValueError:
            raise SolrError(f"Invalid Number: {text}") from None


def _occurrence(node: tree.Item, default: str) -> tuple[str, tree.Item]:
    """Occurrence of an operand: ``+`` MUST, ``-``/``NOT`` MUST_NOT."""
    if isinstance(node, tree.Plus):
        return MUST, node.a
    if isinstance(node, (tree.Prohibit, tree.Not)):
        return MUST_NOT, node.a
    return default, node


def _bound(node: tree.Item) -> str:
    """Text of a range bound (word or quoted phrase)."""
    if isinstance(node, tree.Phrase):
        return unescape(node.value[1:-1])
    return "*" if node.value == "*" else unescape(node.value)


def _boolean(must: list[Matcher], should: list[Matcher],
             must_not: list[Matcher], min_should: int = 0) -> Matcher | None:
    """Build a (simplified) boolean; pure negatives match all-but."""
    if not (must or should or must_not):
        return None
    if must_not and not (must or should):
        must = [MatchAll()]
    if len(must) == 1 and not should and not must_not:
        return must[0]
    if len(should) == 1 and not must and not must_not:
        return should[0]
    return Boolean(must, should, must_not, min_should)

"""Text analysis approximating the analyzers of CKAN's schema.

* ``text``: whitespace tokenizer, word delimiter (split on non-alphanumerics,
  letter/digit transitions and - when the type says so - case changes; the
  index side also adds the catenated word), lower-casing, English Snowball
  stemming and ASCII folding.
* ``text_general``: the same without stemming and case-change splitting.
* ``text_ngram``: the lower-cased value is matched by substring (equivalent
  to indexing all 2..10 character n-grams).
"""
from __future__ import annotations

import re
import threading
import unicodedata
from typing import Callable

from .schema import FieldType

_PART_RE = re.compile(r"[^\W_]+", re.UNICODE)


def _load_stemmer() -> Callable[[str], str]:
    """Return Snowball's English stemmer, or a minimal plural stemmer.

    Snowball stemmer objects keep state while stemming, so calls are
    serialised with a lock private to the returned function.
    """
    try:
        import snowballstemmer
    except ImportError:  # pragma: no cover - depends on the environment
        return minimal_stem
    stemmer = snowballstemmer.stemmer("english")
    lock = threading.Lock()

    def stem(word: str) -> str:
        with lock:
            return str(stemmer.stemWord(word))
    return stem


def minimal_stem(word: str) -> str:
    """Lucene's EnglishMinimalStemmer: strip plural endings only."""
    if len(word) < 3 or not word.endswith("s") or word[-2] in "us":
        return word
    if word[-2] == "e":
        if len(word) > 3 and word[-3] == "i" and word[-4] not in "ae":
            return word[:-3] + "y"
        if word[-3] in "iaoe":
            return word
    return word[:-1]


STEM: Callable[[str], str] = _load_stemmer()


def strip_accents(text: str) -> str:
    """Strip diacritics (an approximation of ASCII folding)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold(token: str) -> str:
    """Lower-case and strip diacritics."""
    return strip_accents(token.lower())


def split_word(word: str, case_split: bool) -> list[str]:
    """Split one whitespace token into word-delimiter parts."""
    if word.lower().endswith(("'s", "\u2019s")):
        word = word[:-2]
    parts: list[str] = []
    for chunk in _PART_RE.findall(strip_accents(word)):
        parts.extend(_split_chunk(chunk, case_split))
    return parts


def _split_chunk(chunk: str, case_split: bool) -> list[str]:
    """Split an alphanumeric run on letter/digit and lower/upper changes."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(chunk)):
        prev, cur = chunk[i - 1], chunk[i]
        if prev.isdigit() != cur.isdigit() or (
                case_split and prev.islower() and cur.isupper()):
            parts.append(chunk[start:i])
            start = i
    parts.append(chunk[start:])
    return parts


def _normalise(part: str, ftype: FieldType) -> str:
    """Lower-case/fold a token and stem it if the type stems."""
    token = fold(part)
    return STEM(token) if ftype.stem else token


def index_tokens(value: str, ftype: FieldType) -> tuple[list[str], set[str]]:
    """Analyse a stored value: (positional tokens, all indexed terms)."""
    positions: list[str] = []
    extra: set[str] = set()
    for word in value.split():
        parts = split_word(word, ftype.case_split)
        tokens = [_normalise(p, ftype) for p in parts]
        positions.extend(tokens)
        if len(parts) > 1:
            extra.add(_normalise("".join(parts), ftype))
    return positions, set(positions) | extra


def query_tokens(text: str, ftype: FieldType) -> list[list[str]]:
    """Analyse query text: one list of tokens per whitespace word."""
    words = []
    for word in text.split():
        tokens = [_normalise(p, ftype) for p in split_word(word, ftype.case_split)]
        if tokens:
            words.append(tokens)
    return words


def wildcard_term(pattern: str) -> str:
    """Normalise a wildcard/regex pattern for text fields (lower-case)."""
    return fold(pattern)

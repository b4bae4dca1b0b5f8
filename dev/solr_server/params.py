"""Request parameters with Solr's conventions (multi-valued, per-field)."""
from __future__ import annotations

from urllib.parse import parse_qs

from .errors import SolrError


class Params:
    """Multi-valued request parameters (query string plus form body)."""

    def __init__(self, values: dict[str, list[str]] | None = None) -> None:
        """Wrap ``{name: [values]}``."""
        self.values: dict[str, list[str]] = values or {}

    @classmethod
    def from_query(cls, *query_strings: str) -> Params:
        """Merge one or more ``application/x-www-form-urlencoded`` strings."""
        merged: dict[str, list[str]] = {}
        for text in query_strings:
            for key, vals in parse_qs(text, keep_blank_values=True).items():
                merged.setdefault(key, []).extend(vals)
        return cls(merged)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` or ``default``."""
        vals = self.values.get(name)
        return vals[0] if vals else default

    def getlist(self, name: str) -> list[str]:
        """All values of ``name``."""
        return list(self.values.get(name, []))

    def get_int(self, name: str, default: int) -> int:
        """Integer parameter, 400 if malformed."""
        value = self.get(name)
        if value is None or value.strip() == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise SolrError(
                f"Invalid integer value for '{name}': {value}") from None

    def get_bool(self, name: str, default: bool = False) -> bool:
        """Boolean parameter (``true``/``on``/``yes``)."""
        value = self.get(name)
        if value is None:
            return default
        return value.strip().lower() in ("true", "on", "yes", "1")

    def field_param(self, field: str, name: str) -> str | None:
        """``f.<field>.<name>`` falling back to ``<name>``."""
        return self.get(f"f.{field}.{name}", self.get(name))

    def echo(self) -> dict[str, object]:
        """Parameters as Solr echoes them in ``responseHeader.params``."""
        return {k: v[0] if len(v) == 1 else v for k, v in self.values.items()}

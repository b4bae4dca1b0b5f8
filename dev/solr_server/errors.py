"""Error type carrying a Solr-style HTTP status code and message."""
from __future__ import annotations


class SolrError(Exception):
    """An error reported to the client as Solr's ``{"error": ...}`` JSON."""

    def __init__(self, msg: str, code: int = 400) -> None:
        """Create an error with message ``msg`` and HTTP status ``code``."""
        super().__init__(msg)
        self.msg = msg
        self.code = code

    def to_json(self) -> dict[str, object]:
        """Return the error body the way Solr 8/9 renders it."""
        solr_class = "org.apache.solr.common.SolrException"
        return {
            "responseHeader": {"status": self.code, "QTime": 0},
            "error": {
                "metadata": ["error-class", solr_class,
                             "root-error-class", solr_class],
                "msg": self.msg,
                "code": self.code,
            },
        }

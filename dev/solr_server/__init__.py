"""A small Solr-compatible HTTP server for development and CI.

It implements what CKAN's search code (``ckan.lib.search``) and pysolr use:
``/select`` (lucene, dismax and edismax parsers, fq, sort, paging, fl,
facets), ``/update`` (XML and JSON add/delete/commit), ``/admin/ping`` and
the schema endpoints used by CKAN's start-up schema check. Documents are
kept in memory; any core name in the URL is created on demand. The field
definitions come from the installed CKAN's ``schema.xml``.

Run ``python -m dev.solr_server --port 8983`` or ``dev/solr.sh start``.
Not for production use.
"""
from __future__ import annotations

from .server import SolrHTTPServer, main, make_server, serve_in_thread

__all__ = ["SolrHTTPServer", "main", "make_server", "serve_in_thread"]

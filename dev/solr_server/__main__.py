"""Entry point for ``python -m dev.solr_server`` and ``python dev/solr_server``."""
from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as ``python dev/solr_server``: sys.path[0] is this directory, whose
    # module names must not shadow anything; import the package from the
    # repository root instead.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent.parent))
    from dev.solr_server.server import main
else:
    from .server import main

if __name__ == "__main__":
    sys.exit(main())

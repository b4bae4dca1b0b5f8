"""Loaded by the consumer processes of the faults suite (``PYTHONPATH``), only there.

The CKAN harvester waits up to 60 s for a remote answer (``HTTP_TIMEOUT``) and
retries a timed-out read once: a remote that hangs would cost the fault scenario two
minutes per request. ``HARVEST_FAULTS_HTTP_TIMEOUT="<connect>,<read>"`` shortens
those timeouts in this process, so that the proxy can hang longer than the
harvester's read timeout within seconds. Nothing else changes.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

_MODULE = "ckanext.harvest.harvesters.ckanharvester"
_SETTING = os.environ.get("HARVEST_FAULTS_HTTP_TIMEOUT", "")


class _PatchTimeout(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the harvester module normally, then shortens its HTTP timeouts."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        self.timeout = timeout
        self.spec: Optional[importlib.machinery.ModuleSpec] = None

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != _MODULE or self.spec is not None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self.spec = spec
        return importlib.machinery.ModuleSpec(fullname, self, origin=spec.origin,
                                              is_package=False)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return None

    def exec_module(self, module: ModuleType) -> None:
        assert self.spec is not None and self.spec.loader is not None
        module.__file__ = self.spec.origin
        self.spec.loader.exec_module(module)  # type: ignore[union-attr]
        module.HTTP_TIMEOUT = self.timeout  # type: ignore[attr-defined]


if _SETTING:
    _connect, _read = (float(part) for part in _SETTING.split(","))
    sys.meta_path.insert(0, _PatchTimeout((_connect, _read)))

"""Stage faces that import their modules on first use.

A stage package's ``__init__`` names what other stages may use. Importing a package runs its
``__init__`` before any of its modules, so an eager face would make every module as heavy as the
heaviest: ``partition.read``, which Ray reader workers import, would pull in torch and DGL
(2.5 s of CPU per worker, see ``worker_setup``), and ``train.config`` would need Ray to parse a
config. A face built here resolves each name from its module when first asked (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_face(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose name ``n`` lives in module ``exports[n]``
    (relative to the package)."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__

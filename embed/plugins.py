"""Import every module of a package once, so that adding a backbone/layout is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache


@cache
def import_submodules(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")

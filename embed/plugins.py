"""Plugins: adding a backbone, head, importer or layout is one new module of its package, imported
here on first lookup, registering itself by name."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Generic, TypeVar

from embed.errors import ConfigError

T = TypeVar("T")


@cache
def import_submodules(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Named plugins of one kind (classes with a `name`), each defined in a module of `package`."""

    def __init__(self, package: str, kind: str):
        self.package, self.kind, self._items = package, kind, {}

    def register(self, item: T) -> T:
        self._items[item.name] = item
        return item

    def names(self) -> list[str]:
        import_submodules(self.package)
        return sorted(self._items)

    def get(self, name: str) -> T:
        import_submodules(self.package)
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; fix: use one of {', '.join(sorted(self._items))}")
        return self._items[name]

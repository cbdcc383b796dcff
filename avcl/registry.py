"""The one name table: backbones, methods, protocols, evaluation datasets, checkpoint formats and dataset
recipes each live in a `Registry`. Torch-free.

Entries register themselves from the module that defines them (`@REGISTRY.register(name)`). A registry that
names its `package` imports every module of that package before its first lookup (discovery: adding a method
or a protocol is adding one file), plus the modules and packages listed in the environment variable
AVTOOLS_PLUGINS (comma-separated import names), so code outside avtools registers the same way.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Callable

from avcl.errors import UserError

PLUGINS = "AVTOOLS_PLUGINS"


class UnknownName(UserError):
    """A name no registry entry has; the message lists the valid ones."""


class Registry:
    def __init__(self, kind: str, package: str | None = None):
        self.kind, self.package = kind, package
        self._factories: dict[str, Callable] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def add(factory: Callable) -> Callable:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory
        return add

    def get(self, name: str) -> Callable:
        self.discover()
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._factories)

    def items(self) -> list[tuple[str, Callable]]:
        return [(name, self._factories[name]) for name in self.names()]

    def discover(self) -> None:
        """Import every module of the package and of the plugins, once."""
        if self._discovered:
            return
        self._discovered = True
        import_tree(self.package)
        for name in plugins():
            try:
                import_tree(name)
            except Exception as exc:  # a plugin is outside code: any failure to import it is the user's to fix
                self._discovered = False
                raise UserError(f"{PLUGINS}={os.environ.get(PLUGINS)!r}: plugin {name!r} does not import "
                                f"({type(exc).__name__}: {exc}); fix it or remove it from {PLUGINS}") from None


def plugins() -> list[str]:
    return [name.strip() for name in os.environ.get(PLUGINS, "").split(",") if name.strip()]


def import_tree(name: str) -> None:
    """Import module `name` and, when it is a package, each of its modules (not sub-packages' tests)."""
    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            importlib.import_module(f"{name}.{info.name}")

"""A small name -> factory registry: backbones, methods, datasets and protocols are each listed in one."""
from __future__ import annotations

from typing import Callable

from avcl.errors import UserError


class UnknownName(UserError):
    """A name no registry entry has; the message lists the valid ones."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def add(factory: Callable) -> Callable:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory
        return add

    def get(self, name: str) -> Callable:
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

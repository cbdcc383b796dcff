"""What can be named on the command line, read from the registries: datasets (manifests/datasets.toml),
methods, evaluation protocols, backbones, checkpoint formats and dataset recipes, each with one line about it.
The engine's registries import torch, so they are read only when asked (`avtools list`, `--help`)."""
from __future__ import annotations

import sys
from typing import Callable

def datasets() -> dict[str, str]:
    from avtools.recipes import definitions

    return {name: definition.get("about", "") for name, definition in definitions().items()}


def methods() -> dict[str, str]:
    from avcl.methods.base import METHODS

    return {name: _first_line(sys.modules[cls.__module__].__doc__) for name, cls in METHODS.items()}


def protocols() -> dict[str, str]:
    from avcl.eval.engine import PROTOCOLS

    return {name: protocol.about for name, protocol in PROTOCOLS.items()}


def backbones() -> dict[str, str]:
    from avcl.models.video import BACKBONES

    return {name: _first_line(factory.__doc__) for name, factory in BACKBONES.items()}


def formats() -> dict[str, str]:
    from avcl.eval.pretrained import FORMATS

    return {name: _first_line(convert.__doc__) for name, convert in FORMATS.items()}


def recipes() -> dict[str, str]:
    from avtools.recipes import RECIPES

    return {name: _first_line(sys.modules[recipe.__module__].__doc__) for name, recipe in RECIPES.items()}


READERS: dict[str, Callable[[], dict[str, str]]] = {
    "datasets": datasets, "methods": methods, "protocols": protocols, "backbones": backbones, "formats": formats,
    "recipes": recipes}
KINDS = tuple(READERS)


def table(kind: str) -> dict[str, str]:
    return READERS[kind]()


def listed(kind: str) -> str:
    """The names of `kind` as a comma-separated list, for help texts."""
    return ", ".join(table(kind))


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""

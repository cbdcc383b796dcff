"""Data, not code: class lists, dataset definitions, presets and published reference rows. Installed as the
package `avtools_manifests`; code reads it only through these functions."""
from __future__ import annotations

import tomllib
from importlib import resources
from importlib.abc import Traversable


def path(relative: str) -> Traversable:
    return resources.files(__name__).joinpath(relative)


def text(relative: str) -> str:
    return path(relative).read_text()


def toml(relative: str) -> dict:
    return tomllib.loads(text(relative))


def datasets() -> dict[str, dict]:
    """datasets.toml: {dataset name: definition}."""
    return toml("datasets.toml")

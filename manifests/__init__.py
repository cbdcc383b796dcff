"""Data, not code: class lists, dataset definitions, presets and published reference rows. Installed as the
package `avtools_manifests`; code reads it only through these functions."""
from __future__ import annotations

import tomllib
from importlib import resources
from importlib.abc import Traversable


def path(relative: str) -> Traversable:
    return resources.files(__name__).joinpath(relative)


class ManifestError(ValueError):
    """A manifest that is missing or not what its reader expects: the message names the file."""


def text(relative: str) -> str:
    try:
        return path(relative).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path(relative)}: cannot read it ({exc}); reinstall avtools or restore "
                            "the file") from None


def toml(relative: str) -> dict:
    try:
        return tomllib.loads(text(relative))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {path(relative)}: not valid TOML ({exc}); fix the file or reinstall "
                            "avtools") from None


def datasets() -> dict[str, dict]:
    """datasets.toml: {dataset name: definition}."""
    return toml("datasets.toml")

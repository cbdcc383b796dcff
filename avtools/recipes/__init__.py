"""Recipes: which clips a dataset has, with which label and split, and where each clip's media comes from.

A recipe is a function `(definition, options) -> list[Clip]`, registered by name with `@recipe("name")`;
dataset definitions (class lists, Kinetics releases) live in manifests/datasets.toml.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import tomllib
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Callable

RECIPES: dict[str, Callable] = {}
_MODULES = ("kinetics", "ucf101", "hmdb51", "esc50", "vggsound", "folder", "demo")


@dataclasses.dataclass
class Clip:
    clip_id: str
    label: str | None
    split: str
    label_index: int = -1
    youtube_id: str = ""
    start: float | None = None  # seconds in the source video; None = from its beginning
    end: float | None = None  # None = to its end
    path: str | None = None  # local media file, for datasets read from a local copy
    audio_only: bool = False
    extra: dict = dataclasses.field(default_factory=dict)  # recipe-specific json fields (folds, ...)


@dataclasses.dataclass
class RecipeOptions:
    source: Path | None = None  # local copy / mirror
    annotations: list[str] = dataclasses.field(default_factory=list)  # paths or URLs overriding the defaults
    kinetics: int = 400
    splits: list[str] | None = None  # keep only these splits (None: all)
    classes: list[str] | None = None  # keep only these classes (None: all)
    fold: int = 1  # UCF101/HMDB51 official split whose train/test decides a clip's shard split
    val_fraction: float = 0.1  # folder recipe without split folders
    cache: Path | None = None  # where downloaded annotation files are kept


class RecipeError(ValueError):
    """A problem with the dataset's inputs that stops the build before it starts (names the bad input)."""


def recipe(name: str):
    def register(fn):
        RECIPES[name] = fn
        return fn

    return register


def definitions() -> dict[str, dict]:
    """manifests/datasets.toml as {dataset name: definition}."""
    return tomllib.loads(manifest_text("datasets.toml"))


def build_defaults(dataset: str) -> dict:
    """The dataset's own defaults for build options (its `build` table in datasets.toml); {} if unknown."""
    return dict(definitions().get(dataset, {}).get("build", {}))


def manifest_text(relative: str) -> str:
    return resources.files("manifests").joinpath(relative).read_text()


def class_list(relative: str) -> list[str]:
    """A manifest class list (one name per line), sorted: label_index is the position in this list."""
    return sorted({line.strip() for line in manifest_text(relative).splitlines() if line.strip()})


def plan(dataset: str, options: RecipeOptions) -> list[Clip]:
    """Every clip of `dataset` (before partitioning), filtered by --split/--classes."""
    defs = definitions()
    if dataset not in defs:
        raise RecipeError(f"unknown dataset {dataset!r}; choose one of: {', '.join(defs)}")
    definition = dict(defs[dataset], name=dataset)
    for module in _MODULES:
        importlib.import_module(f"avtools.recipes.{module}")
    clips = RECIPES[definition["recipe"]](definition, options)
    if options.splits:
        clips = [c for c in clips if c.split in options.splits]
    if options.classes:
        unknown = set(options.classes) - {c.label for c in clips}
        if unknown:
            raise RecipeError(f"--classes not in {dataset}: {sorted(unknown)}")
        clips = [c for c in clips if c.label in options.classes]
    return clips


def fetch_annotation(location: str, cache: Path | None) -> Path:
    """A local path for an annotation file: paths as they are, URLs downloaded once into the cache."""
    if "://" not in location:
        path = Path(location).expanduser()
        if not path.exists():
            raise RecipeError(f"annotation file {location} does not exist")
        return path
    cache = Path(cache or Path.home() / ".cache" / "avtools") / "annotations"
    cache.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(location.encode()).hexdigest()[:10] + "-" + location.rstrip("/").rsplit("/", 1)[-1]
    target = cache / name
    if not target.exists():
        tmp = target.with_suffix(f".part{os.getpid()}")
        try:
            with urllib.request.urlopen(location, timeout=60) as response, open(tmp, "wb") as out:
                out.write(response.read())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RecipeError(f"cannot download annotations {location}: {exc}; "
                              "pass a local copy with --annotations PATH") from exc
        os.replace(tmp, target)
    return target


def label_indices(classes: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes)}

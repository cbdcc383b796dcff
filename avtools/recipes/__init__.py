"""Recipes: which clips a dataset has, with which label and split, and where each clip's media comes from.

A recipe is a function `(definition, options) -> Plan`, registered by name with `@recipe("name")`; dataset
definitions (class lists, Kinetics releases) live in manifests/datasets.toml.

Annotation files come from the internet (`--annotations URL`), so every field is untrusted input. A row that
cannot be read (a missing field, a time that is not a finite number) is rejected by its recipe with its
file:line; every clip is then checked here (`problem`): split names from a safe alphabet (they become file
names), labels printable without path separators, times finite with 0 <= start < end. Rejected rows are
counted and listed, never fatal one by one; a plan with no clip left is an error that says why.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import math
import os
import re
import urllib.request
from pathlib import Path
from typing import IO

import avtools_manifests
from avcl.errors import UserError
from avcl.registry import Registry
from avcl.storage import cache_dir

RECIPES = Registry("dataset recipe", package="avtools.recipes")
MEDIA_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".wav", ".flac", ".mp3", ".ogg", ".m4a")


@dataclasses.dataclass(slots=True)  # a Kinetics-700 plan holds 650,000 of them
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
    origin: str = ""  # the annotation row it came from, "file:line" (for messages)


@dataclasses.dataclass
class Plan:
    """What a recipe made of its annotations: the clips, the rows it rejected as (file:line, why) and how many
    rows name a class the dataset does not have (Kinetics-Sounds from the full Kinetics CSVs: most of them)."""
    clips: list[Clip]
    rejected: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    other_classes: int = 0
    split_rule: dict = dataclasses.field(default_factory=dict)  # the options deciding splits (recorded, never changed)


SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")  # split names become shard and ledger file names
BAD_LABEL = re.compile(r"[\x00-\x1f\x7f/\\]")  # labels are printed and stored: no control characters, no separators
CONTROL = re.compile(r"[\x00-\x1f]")


def problem(clip: Clip) -> str | None:
    """Why a clip cannot be built as planned (None when it can)."""
    if not SPLIT_NAME.fullmatch(clip.split or ""):
        return f"split {clip.split!r} is not 1-32 letters, digits, '_' or '-' starting with a letter or digit"
    if clip.label is not None and (not clip.label.strip() or len(clip.label) > 128 or BAD_LABEL.search(clip.label)):
        return f"label {clip.label!r} is empty, too long or holds control characters or path separators"
    if not clip.clip_id or CONTROL.search(clip.clip_id):
        return f"clip id {clip.clip_id!r} is empty or holds control characters"
    for t in (clip.start, clip.end):
        if t is not None and not math.isfinite(t):
            return f"time {t} is not a finite number"
    if clip.start is not None and clip.start < 0:
        return f"start {clip.start} is negative"
    if clip.start is not None and clip.end is not None and not clip.start < clip.end:
        return f"end {clip.end} is not after start {clip.start}"
    return None


def seconds(value: str | None) -> float:
    """A time field as a finite float; ValueError naming the value otherwise."""
    number = float((value or "").strip())
    if not math.isfinite(number):
        raise ValueError(f"time {value!r} is not finite")
    return number


def open_annotation(path: Path) -> IO[str]:
    """A text stream of an annotation file: UTF-8 with or without a byte-order mark (Excel), gzip or plain."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    raw = gzip.open(path) if gzipped else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


@dataclasses.dataclass
class RecipeOptions:
    source: Path | None = None  # local copy / mirror
    annotations: list[str] = dataclasses.field(default_factory=list)  # paths or URLs overriding the defaults
    kinetics: int | None = None  # Kinetics release of the annotations; None: the dataset's own (its first)
    splits: list[str] | None = None  # keep only these splits (None: all)
    classes: list[str] | None = None  # keep only these classes (None: all)
    fold: int = 1  # UCF101/HMDB51 official split whose train/test decides a clip's shard split
    val_fraction: float = 0.1  # folder recipe without split folders
    cache: Path | None = None  # where downloaded annotation files are kept


class RecipeError(UserError):
    """A problem with the dataset's inputs that stops the build before it starts (names the bad input)."""


recipe = RECIPES.register


def definitions() -> dict[str, dict]:
    """manifests/datasets.toml as {dataset name: definition}."""
    return avtools_manifests.datasets()


def build_defaults(dataset: str) -> dict:
    """The dataset's own defaults for build options (its `build` table in datasets.toml); {} if unknown."""
    return dict(definitions().get(dataset, {}).get("build", {}))


manifest_text = avtools_manifests.text


def manifest_rows(text: str) -> list[dict]:
    """Rows of a manifest CSV whose header may follow '#' comment lines (the rule that made it)."""
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def class_list(relative: str) -> list[str]:
    """A manifest class list, sorted: label_index is the position in this list. A .txt list has one name per
    line; a .csv list (KS100 v2, with its evidence) names the class in its first column."""
    text = manifest_text(relative)
    if relative.endswith(".csv"):
        rows = manifest_rows(text)
        names = [row[next(iter(row))] for row in rows]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return sorted(set(names))


def class_list_stamp(dataset: str) -> dict:
    """What dataset.json records of the class list: its manifest file, version and content hash."""
    definition = definitions().get(dataset, {})
    relative = definition.get("classes")
    if relative is None:
        return {}
    digest = hashlib.sha256(manifest_text(relative).encode()).hexdigest()
    return {"file": f"manifests/{relative}", "version": definition.get("version", ""),
            "classes": len(class_list(relative)), "sha256": digest}


def plan(dataset: str, options: RecipeOptions) -> Plan:
    """Every clip of `dataset` (before partitioning), checked, filtered by --split/--classes; an error when no
    clip is left."""
    defs = definitions()
    if dataset not in defs:
        raise RecipeError(f"unknown dataset {dataset!r}; choose one of: {', '.join(defs)}")
    definition = dict(defs[dataset], name=dataset)
    try:
        made = RECIPES.get(definition["recipe"])(definition, options)
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{dataset}: an annotation file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    checked = []
    for clip in made.clips:
        why = problem(clip)
        if why:
            made.rejected.append((clip.origin or clip.clip_id, why))
        else:
            checked.append(clip)
    made.clips = checked
    if options.splits:
        made.clips = [c for c in made.clips if c.split in options.splits]
    if options.classes:
        unknown = set(options.classes) - {c.label for c in made.clips}
        if unknown:
            raise RecipeError(f"--classes not in {dataset}: {sorted(unknown)}")
        made.clips = [c for c in made.clips if c.label in options.classes]
    if not made.clips:
        raise RecipeError(f"no clip of {dataset} is left to build: {len(made.rejected)} annotation row(s) rejected"
                          + (f" (the first: {': '.join(made.rejected[0])})" if made.rejected else "")
                          + f", {made.other_classes} row(s) of classes {dataset} does not have"
                          + (f", --split {options.splits}" if options.splits else "")
                          + f"; are these {dataset}'s annotation files?")
    return made


def fetch_annotation(location: str, cache: Path | None) -> Path:
    """A local path for an annotation file: paths as they are, URLs downloaded once into the cache."""
    if "://" not in location:
        path = Path(location).expanduser()
        if not path.exists():
            raise RecipeError(f"annotation file {location} does not exist")
        return path
    cache = Path(cache or cache_dir()) / "annotations"
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

"""Frozen class lists derived by rule: Kinetics-Sounds100 v1.

Rule (reproducible from public lists shipped in manifests/): start from KS32. Score every other Kinetics-400
class by its best token overlap (Jaccard over lower-cased word stems, ignoring the words in STOP_WORDS) with
a VGG-Sound class name (VGG-Sound's classes are audio-visually verified); break ties by that VGG-Sound
class's clip count (stat.csv), then by name; take the 68 best. Regenerate with
`avtools manifest kinetics-sounds100`; the per-class scores are written beside the list.
"""
from __future__ import annotations

import csv
import io
import re
from importlib import resources

KS100 = "kinetics_sounds/ks100_v1.txt"
SCORES = "kinetics_sounds/ks100_v1_scores.csv"
TARGET = 100
STOP_WORDS = {"playing", "people", "person", "on", "or", "the", "a", "an", "of", "and", "with", "in", "at",
              "doing", "using"}


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[:-len(suffix)]
    return word


def tokens(name: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z]+", name.lower()) if w not in STOP_WORDS}


def best_match(name: str, vggsound: list[tuple[str, int]]) -> tuple[float, str, int]:
    """(Jaccard, VGG-Sound class, its clip count) of the best-matching VGG-Sound class."""
    mine = tokens(name)
    best = (0.0, "", 0)
    for other, count in vggsound:
        theirs = tokens(other)
        score = len(mine & theirs) / len(mine | theirs) if mine | theirs else 0.0
        if (score, count) > (best[0], best[2]):
            best = (score, other, count)
    return best


def select_ks100(ks32: list[str], k400: list[str], vggsound: list[tuple[str, int]]) -> list[tuple[str, float, str, int]]:
    """The 68 added classes as (k400 class, score, matched VGG-Sound class, its count), best first."""
    base = set(ks32)
    scored = [(name, *best_match(name, vggsound)) for name in k400 if name not in base]
    scored.sort(key=lambda r: (-r[1], -r[3], r[0]))
    return scored[:TARGET - len(base)]


def regenerate_ks100(write: bool = True) -> bool:
    """Recompute KS100 v1 from manifests/; write it (and its scores) if `write`. Returns whether it changed."""
    root = resources.files("manifests")
    ks32 = _lines(root.joinpath("kinetics_sounds/ks32.txt").read_text())
    k400 = _lines(root.joinpath("kinetics/k400_classes.txt").read_text())
    vggsound = [(row[0], int(row[1])) for row in csv.reader(io.StringIO(root.joinpath("vggsound/stat.csv").read_text()))]
    added = select_ks100(ks32, k400, vggsound)
    text = "".join(f"{name}\n" for name in sorted(ks32 + [a[0] for a in added]))
    scores = io.StringIO()
    writer = csv.writer(scores, lineterminator="\n")
    writer.writerow(["k400_class", "jaccard", "vggsound_class", "vggsound_clips"])
    writer.writerows((name, f"{score:.4f}", match, count) for name, score, match, count in added)
    target = root.joinpath(KS100)
    changed = not target.is_file() or target.read_text() != text
    if write and changed:
        with resources.as_file(target) as path:
            path.write_text(text)
        with resources.as_file(root.joinpath(SCORES)) as path:
            path.write_text(scores.getvalue())
    return changed


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]

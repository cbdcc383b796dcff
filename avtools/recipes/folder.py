"""Your own data: `DIR/<class>/<video>`, or `DIR/{train,val,test}/<class>/<video>`.

Without split folders, each class is split on its own: its files are ranked by a hash of their path relative
to DIR and the first `round(val_fraction * n)` of them go to `val` (at least one when the class has two files
or more and the fraction is above 0, never all of them). The split depends only on the class's own files, not on
listing order or other classes; adding files to a class can move a file across the quota boundary, which a
rerun into the same --out refuses by name (clips never change split within one output).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from avtools.recipes import MEDIA_SUFFIXES, Clip, Plan, RecipeError, RecipeOptions, recipe

SPLIT_FOLDERS = ("train", "val", "test")


def path_hash(relative: str) -> int:
    return int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16)


def stratified_val(relatives: list[str], val_fraction: float) -> set[str]:
    """The paths of one class that go to val: the `round(val_fraction * n)` lowest hashes, at least one of two or
    more when the fraction is above 0, never the whole class."""
    n = len(relatives)
    quota = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        quota = min(max(quota, 1), n - 1)
    return set(sorted(relatives, key=lambda r: (path_hash(r), r))[:quota])


@recipe("folder")
def folder(definition: dict, options: RecipeOptions) -> Plan:
    root = options.source
    if root is None or not Path(root).is_dir():
        raise RecipeError(f"folder needs --source DIR with class subfolders, got {root}")
    if not 0 <= options.val_fraction < 1:
        raise RecipeError(f"--val-fraction {options.val_fraction}: the share of each class put in val, in [0, 1)")
    root = Path(root)
    split_dirs = [root / s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    found = []  # (split or None, class, path)
    for base in split_dirs or [root]:
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for path in sorted(class_dir.rglob("*")):
                if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES:
                    found.append((base.name if split_dirs else None, class_dir.name, path))
    if not found:
        raise RecipeError(f"no media files under {root}/<class>/ (suffixes {', '.join(MEDIA_SUFFIXES)})")
    index = {name: i for i, name in enumerate(sorted({cls for _, cls, _ in found}))}
    relative = {path: path.relative_to(root).with_suffix("").as_posix() for _, _, path in found}
    val = set()
    if not split_dirs:
        for cls in index:
            val |= stratified_val([relative[p] for _, c, p in found if c == cls], options.val_fraction)
    clips = [Clip(clip_id=relative[path].replace("/", "__"), label=cls,
                  split=split or ("val" if relative[path] in val else "train"),
                  label_index=index[cls], path=str(path), origin=str(path))
             for split, cls, path in found]
    rule = {"split_folders": [d.name for d in split_dirs]} if split_dirs else \
        {"val_fraction": options.val_fraction, "rule": "per-class hash quota"}
    return Plan(clips, split_rule=rule)

"""Your own data: `DIR/<class>/<video>`, or `DIR/{train,val,test}/<class>/<video>`.

Without split folders, a clip goes to `val` when a hash of its path relative to DIR falls below
`--val-fraction`: deterministic, and stable when files are added or removed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from avtools.recipes import MEDIA_SUFFIXES, Clip, Plan, RecipeError, RecipeOptions, recipe

SPLIT_FOLDERS = ("train", "val", "test")


def hashed_split(relative: str, val_fraction: float) -> str:
    digest = int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if digest < val_fraction else "train"


@recipe("folder")
def folder(definition: dict, options: RecipeOptions) -> Plan:
    root = options.source
    if root is None or not Path(root).is_dir():
        raise RecipeError(f"folder needs --source DIR with class subfolders, got {root}")
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
    clips = []
    for split, cls, path in found:
        relative = path.relative_to(root).with_suffix("").as_posix()
        clips.append(Clip(clip_id=relative.replace("/", "__"), label=cls,
                          split=split or hashed_split(relative, options.val_fraction),
                          label_index=index[cls], path=str(path), origin=str(path)))
    return Plan(clips)

"""UCF101 from a local copy, with the official three train/test splits (ucfTrainTestlist).

The list files have CRLF line endings; `classInd.txt` says `HandstandPushups` while the video files are
named `v_HandStandPushups_*`, so files are matched case-insensitively. Each video is stored once: its shard
split is its role in `--fold` (default 1) and the json field `folds` gives its role in all three.
"""
from __future__ import annotations

from pathlib import Path

from avtools.recipes import Clip, RecipeError, RecipeOptions, recipe

FOLDS = (1, 2, 3)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without their line endings (CRLF or LF)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def read_class_index(split_dir: Path) -> list[str]:
    """Class names in official order (classInd.txt: `<1-based index> <ClassName>`)."""
    pairs = sorted((int(i), name) for i, name in (line.split(maxsplit=1) for line in read_lines(split_dir / "classInd.txt")))
    return [name for _, name in pairs]


def read_splits(split_dir: Path) -> dict[int, dict[str, list[str]]]:
    """{fold: {"train": [Class/v_*.avi, ...], "test": [...]}} from trainlist0N.txt / testlist0N.txt."""
    return {fold: {role: [line.split()[0] for line in read_lines(split_dir / f"{role}list0{fold}.txt")]
                   for role in ("train", "test")} for fold in FOLDS}


def find_split_dir(options: RecipeOptions, name: str) -> Path:
    split_dir = Path(options.annotations[0]) if options.annotations else (options.source or Path(".")) / name
    if not split_dir.is_dir():
        raise RecipeError(f"no split folder {split_dir}: pass it with --annotations DIR")
    return split_dir


def index_videos(source: Path | None) -> dict[str, Path]:
    """Lower-cased file name -> path of every file below the local copy (class folders or flat)."""
    if source is None or not Path(source).is_dir():
        raise RecipeError(f"--source must be the folder of the local copy, got {source}")
    return {p.name.lower(): p for p in Path(source).rglob("*") if p.is_file()}


@recipe("ucf101")
def ucf101(definition: dict, options: RecipeOptions) -> list[Clip]:
    split_dir = find_split_dir(options, "ucfTrainTestlist")
    classes = read_class_index(split_dir)
    index = {name.lower(): i for i, name in enumerate(classes)}
    videos = index_videos(options.source)
    roles: dict[str, dict[str, str]] = {}
    for fold, lists in read_splits(split_dir).items():
        for role, entries in lists.items():
            for entry in entries:
                roles.setdefault(entry, {})[str(fold)] = role
    clips = []
    for entry, folds in sorted(roles.items()):
        folder, name = entry.split("/", 1)
        label = classes[index[folder.lower()]]
        path = videos.get(name.lower(), Path(options.source) / folder / name)
        clips.append(Clip(clip_id=Path(name).stem, label=label, split=folds[str(options.fold)],
                          label_index=index[folder.lower()], path=str(path), extra={"folds": folds}))
    return clips

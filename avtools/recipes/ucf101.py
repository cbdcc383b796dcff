"""UCF101 from a local copy, with the official three train/test splits (ucfTrainTestlist).

The list files have CRLF line endings; `classInd.txt` says `HandstandPushups` while the video files are
named `v_HandStandPushups_*`, so files are matched case-insensitively. Each video is stored once: its shard
split is its role in `--fold` (default 1) and the json field `folds` gives its role in all three.
"""
from __future__ import annotations

from pathlib import Path

from avtools.recipes import Clip, Plan, RecipeError, RecipeOptions, open_annotation, recipe

FOLDS = (1, 2, 3)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without their line endings (CRLF or LF)."""
    return [line for _, line in numbered_lines(path)]


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-empty lines, without their line endings (CRLF or LF)."""
    with open_annotation(Path(path)) as f:
        return [(n, line.strip()) for n, line in enumerate(f.read().splitlines(), 1) if line.strip()]


def read_class_index(split_dir: Path) -> list[str]:
    """Class names in official order (classInd.txt: `<1-based index> <ClassName>`)."""
    pairs = sorted((int(i), name) for i, name in (line.split(maxsplit=1) for line in read_lines(split_dir / "classInd.txt")))
    return [name for _, name in pairs]


def read_splits(split_dir: Path) -> dict[int, dict[str, list[tuple[str, str]]]]:
    """{fold: {"train": [(Class/v_*.avi, file:line), ...], "test": [...]}} from trainlist0N.txt / testlist0N.txt."""
    lists = {}
    for fold in FOLDS:
        lists[fold] = {}
        for role in ("train", "test"):
            path = split_dir / f"{role}list0{fold}.txt"
            lists[fold][role] = [(line.split()[0], f"{path}:{n}") for n, line in numbered_lines(path)]
    return lists


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
def ucf101(definition: dict, options: RecipeOptions) -> Plan:
    split_dir = find_split_dir(options, "ucfTrainTestlist")
    classes = read_class_index(split_dir)
    index = {name.lower(): i for i, name in enumerate(classes)}
    videos = index_videos(options.source)
    roles: dict[str, dict[str, str]] = {}
    origins: dict[str, str] = {}
    made = Plan([], split_rule={"fold": options.fold})
    for fold, lists in read_splits(split_dir).items():
        for role, entries in lists.items():
            for entry, where in entries:
                folder, _, name = entry.partition("/")
                if folder.lower() not in index or not name:
                    made.rejected.append((where, f"{entry!r} is not <class in classInd.txt>/<video>"))
                    continue
                roles.setdefault(entry, {})[str(fold)] = role
                origins.setdefault(entry, where)
    for entry, folds in sorted(roles.items()):
        folder, name = entry.split("/", 1)
        path = videos.get(name.lower(), Path(options.source) / folder / name)
        made.clips.append(Clip(clip_id=Path(name).stem, label=classes[index[folder.lower()]],
                               split=folds.get(str(options.fold), "unused"), label_index=index[folder.lower()],
                               path=str(path), extra={"folds": folds}, origin=origins[entry]))
    return made

"""HMDB51 from a local copy, with the official splits (testTrainMulti_7030_splits).

Official format: 153 files `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <id>` with id 1 = train,
2 = test, 0 = unused in that split (70/30 per class). Labels are the alphabetical class order. Each video is
stored once, its shard split being its role in `--fold` ("unused" included); `folds` has all three.
The TSN-derived lists (`hmdb51_flow_{train,val}_split_N.txt`) can be read for membership checks.
"""
from __future__ import annotations

import re
from pathlib import Path

from avtools.recipes import Clip, Plan, RecipeError, RecipeOptions, recipe
from avtools.recipes.ucf101 import find_split_dir, index_videos, numbered_lines, read_lines

ROLES = {"0": "unused", "1": "train", "2": "test"}
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>[123])\.txt$")


def read_official_splits(split_dir: Path) -> tuple[dict[str, tuple[str, dict[str, str], str]], list[tuple[str, str]]]:
    """{video file name: (class, {fold: role}, file:line)} from the official split files, and the rows that
    are not `<video> <0|1|2>` as (file:line, why)."""
    videos: dict[str, tuple[str, dict[str, str], str]] = {}
    rejected = []
    files = [(m, p) for p in sorted(Path(split_dir).iterdir()) if (m := _SPLIT_FILE.match(p.name))]
    if not files:
        raise RecipeError(f"{split_dir} holds no <class>_test_split<N>.txt files")
    for match, path in files:
        for n, line in numbered_lines(path):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ROLES:
                rejected.append((f"{path}:{n}", f"not '<video> <split id 0, 1 or 2>': {line[:80]!r}"))
                continue
            name, role = fields
            videos.setdefault(name, (match["cls"], {}, f"{path}:{n}"))[1][match["fold"]] = ROLES[role]
    return videos, rejected


def read_tsn_list(path: Path) -> list[tuple[str, int]]:
    """(video stem, label 0-50) pairs of a TSN-derived list (`<dir>/<stem> <frames> <label>`)."""
    return [(parts[0].rsplit("/", 1)[-1], int(parts[-1])) for parts in (line.split() for line in read_lines(path))]


@recipe("hmdb51")
def hmdb51(definition: dict, options: RecipeOptions) -> Plan:
    videos, rejected = read_official_splits(find_split_dir(options, "testTrainMulti_7030_splits"))
    classes = sorted({cls for cls, _, _ in videos.values()})
    index = {name: i for i, name in enumerate(classes)}
    files = index_videos(options.source)
    return Plan([Clip(clip_id=Path(name).stem, label=cls, split=folds.get(str(options.fold), "unused"),
                      label_index=index[cls], path=str(files.get(name.lower(), Path(options.source) / cls / name)),
                      extra={"folds": folds}, origin=where)
                 for name, (cls, folds, where) in sorted(videos.items())], rejected,
                split_rule={"fold": options.fold})

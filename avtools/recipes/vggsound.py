"""VGG-Sound: 10 s YouTube clips, fetched like Kinetics.

Annotation formats: `vggsound.csv` (no header: youtube_id,start_seconds,label,split; the default, downloaded
from the official repository and cached) and the released `test.csv` / `AStest.csv`
(no header: `<youtube_id>_<start:06d>.mp4,label`, all test). Clip ids: `<youtube_id>_<start:06d>`.
"""
from __future__ import annotations

import csv
import re

from avtools.recipes import Clip, RecipeError, RecipeOptions, class_list, fetch_annotation, label_indices, recipe

OFFICIAL = "https://raw.githubusercontent.com/hche11/VGGSound/master/data/vggsound.csv"
CLIP_SECONDS = 10.0
_TEST_NAME = re.compile(r"^(?P<ytid>.{11})_(?P<start>\d{6})(\.\w+)?$")


def read_vggsound_csv(path) -> list[tuple[str, float, str, str]]:
    """(youtube_id, start, label, split) rows of either VGG-Sound annotation format."""
    rows = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) == 4:
                rows.append((row[0].strip(), float(row[1]), row[2].strip(), row[3].strip()))
            elif len(row) == 2 and (m := _TEST_NAME.match(row[0].strip())):
                rows.append((m["ytid"], float(m["start"]), row[1].strip(), "test"))
            else:
                raise RecipeError(f"{path}:{n}: not a VGG-Sound annotation row: {row}")
    return rows


@recipe("vggsound")
def vggsound(definition: dict, options: RecipeOptions) -> list[Clip]:
    index = label_indices(class_list(definition["classes"]))
    clips = []
    for location in options.annotations or [OFFICIAL]:
        for ytid, start, label, split in read_vggsound_csv(fetch_annotation(location, options.cache)):
            if label not in index:
                raise RecipeError(f"{location}: class {label!r} is not a VGG-Sound class")
            clips.append(Clip(clip_id=f"{ytid}_{int(start):06d}", label=label, split=split, label_index=index[label],
                              youtube_id=ytid, start=start, end=start + CLIP_SECONDS))
    return clips

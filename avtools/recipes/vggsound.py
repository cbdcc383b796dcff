"""VGG-Sound: 10 s YouTube clips, fetched like Kinetics.

Annotation formats: `vggsound.csv` (no header: youtube_id,start_seconds,label,split; the default, downloaded
from the official repository and cached) and the released `test.csv` / `AStest.csv`
(no header: `<youtube_id>_<start:06d>.mp4,label`, all test). Clip ids: `<youtube_id>_<start:06d>`.
"""
from __future__ import annotations

import csv
import re

from avtools.recipes import (Clip, Plan, RecipeOptions, class_list, fetch_annotation, label_indices,
                             open_annotation, recipe, seconds)

OFFICIAL = "https://raw.githubusercontent.com/hche11/VGGSound/master/data/vggsound.csv"
CLIP_SECONDS = 10.0
_TEST_NAME = re.compile(r"^(?P<ytid>.{11})_(?P<start>\d{6})(\.\w+)?$")


def read_vggsound_csv(path) -> tuple[list[tuple[int, str, float, str, str]], list[tuple[int, str]]]:
    """(line, youtube_id, start, label, split) rows of either VGG-Sound annotation format, and the rows that
    are neither as (line, why)."""
    rows, rejected = [], []
    with open_annotation(path) as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            try:
                if len(row) == 4:
                    rows.append((line, row[0].strip(), seconds(row[1]), row[2].strip(), row[3].strip()))
                elif len(row) == 2 and (m := _TEST_NAME.match(row[0].strip())):
                    rows.append((line, m["ytid"], seconds(m["start"]), row[1].strip(), "test"))
                else:
                    rejected.append((line, f"not a VGG-Sound annotation row: {row[:4]}"))
            except ValueError as exc:
                rejected.append((line, str(exc)))
    return rows, rejected


@recipe("vggsound")
def vggsound(definition: dict, options: RecipeOptions) -> Plan:
    index = label_indices(class_list(definition["classes"]))
    made = Plan([])
    for location in options.annotations or [OFFICIAL]:
        rows, rejected = read_vggsound_csv(fetch_annotation(location, options.cache))
        made.rejected += [(f"{location}:{line}", why) for line, why in rejected]
        for line, ytid, start, label, split in rows:
            if label not in index:
                made.other_classes += 1
                continue
            made.clips.append(Clip(clip_id=f"{ytid}_{int(start):06d}", label=label, split=split,
                                   label_index=index[label], youtube_id=ytid, start=start, end=start + CLIP_SECONDS,
                                   origin=f"{location}:{line}"))
    return made

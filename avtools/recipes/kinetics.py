"""Kinetics-400/600/700 and the Kinetics-Sounds subsets (a class list from manifests/ applied to Kinetics).

Annotations are the official CSVs `label,youtube_id,time_start,time_end,split[,is_cc]` (the ActivityNet
test CSVs lack `label`; such rows have no class and are left out), fetched from CVDF's bucket and cached.
Clip ids follow the CVDF/ActivityNet file names: `<youtube_id>_<time_start:06d>_<time_end:06d>`.
"""
from __future__ import annotations

import csv

from avtools.recipes import Clip, RecipeError, RecipeOptions, class_list, fetch_annotation, label_indices, recipe

OFFICIAL = "https://s3.amazonaws.com/kinetics/{release}/annotations/{split}.csv"
RELEASES = {400: "400", 600: "600", 700: "700_2020"}
SPLITS = ("train", "val", "test")


def default_annotations(version: int, splits: list[str] | None) -> list[str]:
    return [OFFICIAL.format(release=RELEASES[version], split=s) for s in (splits or SPLITS)]


def read_kinetics_csv(path) -> list[dict]:
    """Rows of an official Kinetics CSV as dicts; raises RecipeError on a file of another format."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"youtube_id", "time_start", "time_end", "split"} - set(reader.fieldnames or ())
        if missing:
            raise RecipeError(f"{path} is not a Kinetics CSV: no column(s) {sorted(missing)}")
        return list(reader)


def kinetics_clip_id(youtube_id: str, start: float, end: float) -> str:
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


@recipe("kinetics")
def kinetics(definition: dict, options: RecipeOptions) -> list[Clip]:
    if options.kinetics not in RELEASES:
        raise RecipeError(f"--kinetics must be one of {sorted(RELEASES)}, not {options.kinetics}")
    if options.kinetics not in definition["kinetics"]:
        raise RecipeError(f"{definition['name']} is defined on Kinetics-{definition['kinetics']} classes, not "
                          f"Kinetics-{options.kinetics}" + (" (use kinetics-sounds31)" if "sounds" in definition['name'] else ""))
    classes = class_list(definition["classes"])
    index = label_indices(classes)
    sources = options.annotations or default_annotations(options.kinetics, options.splits)
    clips = []
    for location in sources:
        for row in read_kinetics_csv(fetch_annotation(location, options.cache)):
            label = (row.get("label") or "").strip()
            if label not in index:
                continue
            start, end = float(row["time_start"]), float(row["time_end"])
            clips.append(Clip(
                clip_id=kinetics_clip_id(row["youtube_id"], start, end), label=label, split=row["split"].strip(),
                label_index=index[label], youtube_id=row["youtube_id"], start=start, end=end))
    return clips

"""Kinetics-400/600/700 and the Kinetics-Sounds subsets (a class list from manifests/ applied to Kinetics).

Annotations are the official CSVs `label,youtube_id,time_start,time_end,split[,is_cc]` (the ActivityNet
test CSVs lack `label`; such rows have no class and are left out), fetched from CVDF's bucket and cached.
Clip ids follow the CVDF/ActivityNet file names: `<youtube_id>_<time_start:06d>_<time_end:06d>`.
"""
from __future__ import annotations

import csv
from typing import Iterator

from avtools.recipes import (Clip, Plan, RecipeError, RecipeOptions, class_list, fetch_annotation, label_indices,
                             open_annotation, recipe, seconds)

OFFICIAL = "https://s3.amazonaws.com/kinetics/{release}/annotations/{split}.csv"
RELEASES = {400: "400", 600: "600", 700: "700_2020"}
SPLITS = ("train", "val", "test")


def default_annotations(version: int, splits: list[str] | None) -> list[str]:
    return [OFFICIAL.format(release=RELEASES[version], split=s) for s in (splits or SPLITS)]


COLUMNS = ("youtube_id", "time_start", "time_end", "split")


def read_kinetics_csv(path) -> Iterator[tuple[int, dict]]:
    """(line, row) of an official Kinetics CSV, rows as dicts, read as they are used (Kinetics-700 has 650,000);
    raises RecipeError on a file of another format."""
    with open_annotation(path) as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise RecipeError(f"{path} is not a Kinetics CSV: no column(s) {sorted(missing)}")
        for row in reader:
            yield reader.line_num, row


def kinetics_clip_id(youtube_id: str, start: float, end: float) -> str:
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


@recipe("kinetics")
def kinetics(definition: dict, options: RecipeOptions) -> list[Clip]:
    release = options.kinetics or definition["kinetics"][0]
    if release not in RELEASES:
        raise RecipeError(f"--kinetics must be one of {sorted(RELEASES)}, not {release}")
    if release not in definition["kinetics"]:
        defined_on = " or ".join(f"Kinetics-{k}" for k in definition["kinetics"])
        raise RecipeError(f"{definition['name']} is defined on {defined_on} classes, not Kinetics-{release}"
                          + (" (use kinetics-sounds31)" if "sounds" in definition['name'] else ""))
    classes = class_list(definition["classes"])
    index = label_indices(classes)
    sources = options.annotations or default_annotations(release, options.splits)
    made = Plan([])
    for location in sources:
        for line, row in read_kinetics_csv(fetch_annotation(location, options.cache)):
            label = (row.get("label") or "").strip()
            if label not in index:
                made.other_classes += 1
                continue
            where = f"{location}:{line}"
            if any(row.get(c) is None for c in COLUMNS) or not row["youtube_id"].strip():
                made.rejected.append((where, f"a field is missing ({', '.join(COLUMNS)})"))
                continue
            try:
                start, end = seconds(row["time_start"]), seconds(row["time_end"])
            except ValueError as exc:
                made.rejected.append((where, str(exc)))
                continue
            youtube_id = row["youtube_id"].strip()
            made.clips.append(Clip(
                clip_id=kinetics_clip_id(youtube_id, start, end), label=label, split=row["split"].strip(),
                label_index=index[label], youtube_id=youtube_id, start=start, end=end, origin=where))
    return made

"""ESC-50 from a local copy of the ESC-50 repository: audio/*.wav and meta/esc50.csv, 5 official folds.

Samples are audio only; the shard split is `fold1`..`fold5` (never re-split: protocols use the folds).
"""
from __future__ import annotations

import csv
from pathlib import Path

from avtools.recipes import Clip, Plan, RecipeError, RecipeOptions, open_annotation, recipe

COLUMNS = {"filename", "fold", "target", "category"}


def read_esc50_meta(path: Path) -> list[tuple[int, dict]]:
    """(line, row) of meta/esc50.csv."""
    with open_annotation(path) as f:
        reader = csv.DictReader(f)
        if not COLUMNS <= set(reader.fieldnames or ()):
            raise RecipeError(f"{path} is not ESC-50's meta/esc50.csv (needs columns {sorted(COLUMNS)})")
        return [(reader.line_num, row) for row in reader]


@recipe("esc50")
def esc50(definition: dict, options: RecipeOptions) -> Plan:
    if options.source is None:
        raise RecipeError("esc50 needs --source, the folder of a local copy of the ESC-50 repository")
    meta = Path(options.annotations[0]) if options.annotations else Path(options.source) / "meta" / "esc50.csv"
    if not meta.is_file():
        raise RecipeError(f"no ESC-50 metadata at {meta}: pass it with --annotations")
    made = Plan([])
    for line, row in read_esc50_meta(meta):
        where = f"{meta}:{line}"
        try:
            fold, target, name = int(row["fold"]), int(row["target"]), Path(row["filename"]).name
        except (TypeError, ValueError) as exc:
            made.rejected.append((where, f"fold, target or filename unreadable ({exc})"))
            continue
        made.clips.append(Clip(clip_id=Path(name).stem, label=row["category"], split=f"fold{fold}",
                               label_index=target, path=str(Path(options.source) / "audio" / name), audio_only=True,
                               extra={"fold": fold, "esc10": row.get("esc10") == "True"}, origin=where))
    return made

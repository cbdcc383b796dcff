"""ESC-50 from a local copy of the ESC-50 repository: audio/*.wav and meta/esc50.csv, 5 official folds.

Samples are audio only; the shard split is `fold1`..`fold5` (never re-split: protocols use the folds).
"""
from __future__ import annotations

import csv
from pathlib import Path

from avtools.recipes import Clip, RecipeError, RecipeOptions, recipe

COLUMNS = {"filename", "fold", "target", "category"}


def read_esc50_meta(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not COLUMNS <= set(reader.fieldnames or ()):
            raise RecipeError(f"{path} is not ESC-50's meta/esc50.csv (needs columns {sorted(COLUMNS)})")
        return list(reader)


@recipe("esc50")
def esc50(definition: dict, options: RecipeOptions) -> list[Clip]:
    if options.source is None:
        raise RecipeError("esc50 needs --source, the folder of a local copy of the ESC-50 repository")
    meta = Path(options.annotations[0]) if options.annotations else Path(options.source) / "meta" / "esc50.csv"
    if not meta.is_file():
        raise RecipeError(f"no ESC-50 metadata at {meta}: pass it with --annotations")
    return [Clip(clip_id=Path(row["filename"]).stem, label=row["category"], split=f"fold{row['fold']}",
                 label_index=int(row["target"]), path=str(Path(options.source) / "audio" / row["filename"]),
                 audio_only=True, extra={"fold": int(row["fold"]), "esc10": row.get("esc10") == "True"})
            for row in read_esc50_meta(meta)]

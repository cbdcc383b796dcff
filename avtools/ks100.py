"""Kinetics-Sounds100, the class list derived by rule (v2); v1 is kept frozen for reproducibility.

v2 is selected from a hand-made mapping table (manifests/kinetics_sounds/ks100_v2_mapping.csv): every
Kinetics-400 class considered, whether its characteristic sound is made by the action itself (its instrument,
tool, vehicle, animal or voice), and the VGG-Sound and AudioSet classes that name that same sound source.
`select_ks100` applies the mechanical part of the rule (RULE, also written at the top of ks100_v2.csv);
`avtools manifest kinetics-sounds100` rewrites or checks the frozen files.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

import avtools_manifests
from avcl.errors import UserError
from avtools.recipes import manifest_rows

MAPPING = "kinetics_sounds/ks100_v2_mapping.csv"
KS100 = "kinetics_sounds/ks100_v2.csv"
REJECTED = "kinetics_sounds/ks100_v2_rejected.csv"
VGGSOUND = "vggsound/stat.csv"
VAL_COUNTS = "kinetics/k400_val_counts.csv"
TARGET = 100

RULE = """\
Kinetics-Sounds100 v2 (avtools): the 32 Kinetics-Sounds classes plus the 68 best-ranked Kinetics-400 classes
whose characteristic sound is made by the action itself, its instrument, tool, vehicle, animal or voice.
1. Judgement, recorded per class in ks100_v2_mapping.csv: a candidate names the VGG-Sound and AudioSet
   classes of its sound source; homonyms, background music or ambience, generic speech or chewing, and
   actions without a sound source are rejected there with their reason.
2. Rank candidates by the largest VGG-Sound clip count (stat.csv) among their VGG-Sound classes (0 when
   they have none), then exact matches (the sound class names this very action) before related ones,
   then by Kinetics-400 validation clips, then by name.
3. Each sound class is evidence for one Kinetics class only: walking the ranking (after the 32, which
   claim theirs first), a candidate is kept only while one of its sound classes (VGG-Sound, or AudioSet
   when it has no VGG-Sound class) is still unclaimed; it then claims all of its classes.
4. The first 68 kept are added; the others are listed in ks100_v2_rejected.csv with the reason.
Cite as "Kinetics-Sounds100 v2 (avtools)"."""

KEPT_COLUMNS = ["kinetics_class", "origin", "rank", "source_kind", "match", "vggsound_classes", "vggsound_clips",
                "k400_val_clips", "audioset_ids", "audioset_names", "justification"]
REJECTED_COLUMNS = ["kinetics_class", "reason", "detail", "vggsound_classes", "audioset_ids", "audioset_names"]


@dataclass(frozen=True)
class Mapping:
    """One row of the mapping table."""
    kinetics_class: str
    status: str  # ks32 | candidate | rejected
    source_kind: str
    match: str  # candidates: exact (the sound class names this very action) | related (same source, other action)
    vggsound: tuple[str, ...]
    audioset_ids: tuple[str, ...]
    audioset_names: tuple[str, ...]
    rejection: str
    justification: str

    def sound_classes(self) -> set[tuple[str, str]]:
        return {("vggsound", v) for v in self.vggsound} | {("audioset", a) for a in self.audioset_ids}

    def evidence(self) -> set[tuple[str, str]]:
        """The sound classes whose availability decides whether this candidate can be kept."""
        return {("vggsound", v) for v in self.vggsound} or {("audioset", a) for a in self.audioset_ids}

    def evidence_names(self) -> str:
        return "; ".join(self.vggsound or self.audioset_names)


class ManifestError(UserError):
    """The mapping table breaks the rule's preconditions (one line naming the row)."""


@dataclass(frozen=True)
class Selection:
    kept: list[dict]
    rejected: list[dict]


def read_mapping(text: str) -> list[Mapping]:
    split = lambda cell: tuple(part for part in cell.split(";") if part)
    return [Mapping(r["kinetics_class"], r["status"], r["source_kind"], r["match"], split(r["vggsound_classes"]),
                    split(r["audioset_ids"]), split(r["audioset_names"]), r["rejection"], r["justification"])
            for r in manifest_rows(text)]


def check_mapping(mapping: list[Mapping], vggsound_clips: dict[str, int], val_clips: dict[str, int]) -> None:
    seen = set()
    for row in mapping:
        where = f"{MAPPING}: {row.kinetics_class!r}"
        if row.kinetics_class in seen:
            raise ManifestError(f"{where} appears twice")
        seen.add(row.kinetics_class)
        if row.kinetics_class not in val_clips:
            raise ManifestError(f"{where} is not a Kinetics-400 class")
        if row.status not in ("ks32", "candidate", "rejected"):
            raise ManifestError(f"{where} has status {row.status!r}; use ks32, candidate or rejected")
        if row.status == "candidate" and row.match not in ("exact", "related"):
            raise ManifestError(f"{where} has match {row.match!r}; use exact or related")
        if row.status == "rejected" and not row.rejection:
            raise ManifestError(f"{where} is rejected without a reason")
        if row.status != "rejected" and not row.evidence():
            raise ManifestError(f"{where} names no VGG-Sound or AudioSet class")
        if len(row.audioset_ids) != len(row.audioset_names):
            raise ManifestError(f"{where} has {len(row.audioset_ids)} AudioSet ids but {len(row.audioset_names)} names")
        unknown = [v for v in row.vggsound if v not in vggsound_clips]
        if unknown:
            raise ManifestError(f"{where} names {unknown[0]!r}, not a VGG-Sound class in {VGGSOUND}")


def rank_key(row: Mapping, vggsound_clips: dict[str, int], val_clips: dict[str, int]) -> tuple:
    return (-max((vggsound_clips[v] for v in row.vggsound), default=0), row.match != "exact",
            -val_clips[row.kinetics_class], row.kinetics_class)


def select_ks100(mapping: list[Mapping], vggsound_clips: dict[str, int], val_clips: dict[str, int]) -> Selection:
    """Apply steps 2-4 of RULE to the mapping table."""
    check_mapping(mapping, vggsound_clips, val_clips)
    base = [row for row in mapping if row.status == "ks32"]
    owner = {sound: row.kinetics_class for row in base for sound in row.sound_classes()}
    kept = [_kept(row, "ks32", "", vggsound_clips, val_clips) for row in sorted(base, key=lambda r: r.kinetics_class)]
    rejected = [_rejected(row, row.rejection, row.justification) for row in mapping if row.status == "rejected"]
    candidates = sorted((row for row in mapping if row.status == "candidate"),
                        key=lambda row: rank_key(row, vggsound_clips, val_clips))
    cut = 0
    for row in candidates:
        if not row.evidence() - owner.keys():
            holders = sorted({owner[sound] for sound in row.evidence()})
            rejected.append(_rejected(row, "shares its sound source",
                                      f"{row.evidence_names()} already evidence for {', '.join(holders)}"))
        elif len(kept) < TARGET:
            kept.append(_kept(row, "added", str(len(kept) - len(base) + 1), vggsound_clips, val_clips))
            owner.update({sound: row.kinetics_class for sound in row.sound_classes() - owner.keys()})
        else:
            cut += 1
            rejected.append(_rejected(row, "below the cut", f"would be added class {TARGET - len(base) + cut}"))
    return Selection(kept, sorted(rejected, key=lambda r: r["kinetics_class"]))


def _kept(row: Mapping, origin: str, rank: str, vggsound_clips: dict[str, int], val_clips: dict[str, int]) -> dict:
    return {"kinetics_class": row.kinetics_class, "origin": origin, "rank": rank, "source_kind": row.source_kind,
            "match": row.match,
            "vggsound_classes": ";".join(row.vggsound),
            "vggsound_clips": ";".join(str(vggsound_clips[v]) for v in row.vggsound),
            "k400_val_clips": val_clips[row.kinetics_class], "audioset_ids": ";".join(row.audioset_ids),
            "audioset_names": ";".join(row.audioset_names), "justification": row.justification}


def _rejected(row: Mapping, reason: str, detail: str) -> dict:
    return {"kinetics_class": row.kinetics_class, "reason": reason, "detail": detail,
            "vggsound_classes": ";".join(row.vggsound), "audioset_ids": ";".join(row.audioset_ids),
            "audioset_names": ";".join(row.audioset_names)}


def manifest_csv(rows: list[dict], columns: list[str], comment: str) -> str:
    out = io.StringIO()
    out.write("".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines()))
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def regenerate_ks100(write: bool = True) -> list[str]:
    """Re-select KS100 v2 from the mapping table; write the frozen files if `write`. Returns the files that
    differ (before writing) from what the rule gives."""
    read = avtools_manifests.text
    vggsound_clips = {row[0]: int(row[1]) for row in csv.reader(io.StringIO(read(VGGSOUND)))}
    val_clips = {row["kinetics_class"]: int(row["val_clips"]) for row in manifest_rows(read(VAL_COUNTS))}
    selection = select_ks100(read_mapping(read(MAPPING)), vggsound_clips, val_clips)
    texts = {KS100: manifest_csv(selection.kept, KEPT_COLUMNS, RULE),
             REJECTED: manifest_csv(selection.rejected, REJECTED_COLUMNS,
                                    "Kinetics-400 classes considered for Kinetics-Sounds100 v2 and left out, "
                                    "with the reason (rule: ks100_v2.csv).")}
    changed = [relative for relative, text in texts.items()
               if not avtools_manifests.path(relative).is_file() or read(relative) != text]
    if write:
        for relative in changed:
            with resources.as_file(avtools_manifests.path(relative)) as path:
                path.write_text(texts[relative])
    return changed

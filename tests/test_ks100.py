"""Kinetics-Sounds100 v2: the frozen list, its evidence against the public class lists, the rule that
regenerates it, and v1 kept buildable as it was."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest
from typer.testing import CliRunner

from avtools.cli import app
from avtools.ks100 import (KS100, MAPPING, REJECTED, ManifestError, Mapping, read_mapping, regenerate_ks100,
                               select_ks100)
from avtools.recipes import RecipeOptions, class_list, class_list_stamp, manifest_rows, manifest_text, plan
from tests.conftest import SHARED

K400_VAL = str(SHARED / "kinetics/kinetics-400_val.csv")


def kept_rows() -> list[dict]:
    return manifest_rows(manifest_text(KS100))


def rejected_rows() -> dict[str, dict]:
    return {row["kinetics_class"]: row for row in manifest_rows(manifest_text(REJECTED))}


def test_hundred_unique_kinetics400_classes_holding_kinetics_sounds32():
    names = [row["kinetics_class"] for row in kept_rows()]
    assert len(names) == len(set(names)) == 100
    ks32 = {line.strip() for line in (SHARED / "kinetics_sounds/ks32_selavi.txt").read_text().splitlines() if line.strip()}
    assert ks32 <= set(names) and {r["kinetics_class"] for r in kept_rows() if r["origin"] == "ks32"} == ks32
    k400 = {line.strip() for line in (SHARED / "kinetics/mmaction2_label_map_k400.txt").read_text().splitlines()}
    assert set(names) <= k400
    assert class_list("kinetics_sounds/ks100_v2.csv") == sorted(names)
    assert [int(r["rank"]) for r in kept_rows() if r["origin"] == "added"] == list(range(1, 69))


def test_evidence_names_real_vggsound_and_audioset_classes():
    with open(SHARED / "vggsound/stat.csv", newline="") as f:
        vggsound = {row[0]: int(row[1]) for row in csv.reader(f)}
    ontology = {entry["id"]: entry["name"] for entry in json.loads((SHARED / "audioset/ontology.json").read_text())}
    for row in kept_rows():
        classes = [c for c in row["vggsound_classes"].split(";") if c]
        assert [vggsound[c] for c in classes] == [int(n) for n in row["vggsound_clips"].split(";") if n]
        ids, names = [i for i in row["audioset_ids"].split(";") if i], [n for n in row["audioset_names"].split(";") if n]
        assert [ontology[i] for i in ids] == names, row["kinetics_class"]
        assert classes or ids, f"{row['kinetics_class']} has no sound class"
        assert row["justification"] and row["source_kind"]
    for row in read_mapping(manifest_text(MAPPING)):
        assert set(row.vggsound) <= vggsound.keys() and set(row.audioset_ids) <= ontology.keys(), row.kinetics_class


# v1's word-overlap admissions whose shared word names another sound source
HOMONYMS = {"playing cricket": "cricket chirping", "doing nails": "hammering nails",
            "cooking chicken": "chicken crowing", "eating ice cream": "ice cream truck, ice cream van",
            "setting table": "playing table tennis", "planting trees": "chainsawing trees",
            "digging": "tractor digging"}


def test_no_class_enters_through_a_word_shared_with_another_sound_source():
    rejected, kept = rejected_rows(), {row["kinetics_class"] for row in kept_rows()}
    for name, sound in HOMONYMS.items():
        assert name not in kept and rejected[name]["reason"] == "homonym" and sound in rejected[name]["vggsound_classes"]
    v1 = set(class_list("kinetics_sounds/ks100_v1.txt"))
    v1_match = {row["k400_class"]: row["vggsound_class"] for row in manifest_rows(manifest_text("kinetics_sounds/ks100_v1_scores.csv"))}
    dances = {name for name, sound in v1_match.items() if sound == "tap dancing"}
    eating = {name for name, sound in v1_match.items() if sound == "people eating"}
    assert len(dances) == 9 and len(eating) == 8
    assert not dances & kept and all(rejected[name]["reason"] == "background only" for name in dances)
    for name in eating - kept:  # chewing does not tell the food, except the foods VGG-Sound itself names
        assert rejected[name]["reason"] == "generic sound", name
    assert eating & kept == {"eating chips", "eating spaghetti"}
    # every class v1 added is either kept with evidence or rejected with a reason
    assert v1 <= kept | rejected.keys()


def test_each_sound_class_is_evidence_for_one_added_class():
    owner = {}
    for row in kept_rows():
        sounds = [c for c in row["vggsound_classes"].split(";") if c] or [i for i in row["audioset_ids"].split(";") if i]
        fresh = [s for s in sounds if s not in owner]
        assert row["origin"] == "ks32" or fresh, row["kinetics_class"]
        owner.update({s: row["kinetics_class"] for s in sounds if s not in owner})
    shared = {name: row for name, row in rejected_rows().items() if row["reason"] == "shares its sound source"}
    assert shared["ski jumping"]["detail"] == "skiing already evidence for skiing (not slalom or crosscountry)"
    assert "golf driving" in {r["kinetics_class"] for r in kept_rows()} and "golf chipping" in shared


def test_regeneration_reproduces_the_frozen_files_byte_for_byte(tmp_path):
    assert regenerate_ks100(write=False) == []
    result = CliRunner().invoke(app, ["manifest", "kinetics-sounds100", "--check"])
    assert result.exit_code == 0 and "up to date" in result.output
    assert manifest_text(KS100).startswith("# Kinetics-Sounds100 v2 (avtools)")


def _candidate(name: str, vggsound: tuple[str, ...] = (), audioset: tuple[str, ...] = (), match="exact") -> Mapping:
    return Mapping(name, "candidate", "tool", match, vggsound, audioset, audioset, "", "why")


def test_the_rule_ranks_by_evidence_then_exactness_and_cuts_at_100():
    base = [Mapping(f"k{i:02d}", "ks32", "voice", "", (f"v{i}",), (), (), "", "") for i in range(32)]
    vgg = {f"v{i}": 10 for i in range(32)} | {"loud": 900, "quiet": 50, "shared": 300}
    val = {row.kinetics_class: 50 for row in base} | {"a": 50, "b": 49, "c": 50, "d": 50, "e": 50}
    names = [f"x{i:02d}" for i in range(70)]
    vgg |= {f"w{i}": 100 for i in range(70)}
    val |= {name: 40 for name in names}
    candidates = [_candidate("a", ("quiet",)), _candidate("b", ("loud",)), _candidate("c", ("shared",), match="related"),
                  _candidate("d", ("shared",)), _candidate("e", (), ("/m/x",))]
    candidates += [_candidate(name, (f"w{i}",)) for i, name in enumerate(names)]
    chosen = select_ks100(base + candidates, vgg, val)
    added = [row["kinetics_class"] for row in chosen.kept if row["origin"] == "added"]
    assert added == ["b", "d"] + names[:66] and len(chosen.kept) == 100
    why = {row["kinetics_class"]: row for row in chosen.rejected}
    assert why["c"]["reason"] == "shares its sound source" and why["c"]["detail"] == "shared already evidence for d"
    assert [why[name]["detail"] for name in ("x66", "a", "e")] == [
        "would be added class 69", "would be added class 73", "would be added class 74"]


def test_bad_mapping_rows_are_named():
    vgg, val = {"v": 10}, {"a": 50}
    with pytest.raises(ManifestError, match="'zz' is not a Kinetics-400 class"):
        select_ks100([_candidate("zz", ("v",))], vgg, val)
    with pytest.raises(ManifestError, match="'nope', not a VGG-Sound class"):
        select_ks100([_candidate("a", ("nope",))], vgg, val)
    with pytest.raises(ManifestError, match="names no VGG-Sound or AudioSet class"):
        select_ks100([_candidate("a")], vgg, val)
    with pytest.raises(ManifestError, match="match 'maybe'"):
        select_ks100([_candidate("a", ("v",), match="maybe")], vgg, val)


def _clip_list_digest(dataset: str) -> tuple[int, str]:
    clips = plan(dataset, RecipeOptions(annotations=[K400_VAL])).clips
    text = "".join(f"{c.clip_id}\t{c.label}\t{c.label_index}\t{c.split}\n" for c in sorted(clips, key=lambda c: c.clip_id))
    return len(clips), hashlib.sha256(text.encode()).hexdigest()


def test_v1_builds_the_clip_list_it_built_before_and_v2_is_the_default():
    # digest of the Kinetics-400 val plan avtools made for kinetics-sounds100 before v2 existed
    assert _clip_list_digest("kinetics-sounds100-v1") == (
        4979, "7bd9b71739c5f99256182ab7fbeded63148a0cc310732772e0f96886b45838a1")
    count, _ = _clip_list_digest("kinetics-sounds100")
    assert {c.label for c in plan("kinetics-sounds100", RecipeOptions(annotations=[K400_VAL])).clips} == \
        set(class_list(KS100)) and count > 4000
    assert class_list_stamp("kinetics-sounds100")["version"] == "v2"
    assert class_list_stamp("kinetics-sounds100-v1") == {
        "file": "manifests/kinetics_sounds/ks100_v1.txt", "version": "v1", "classes": 100,
        "sha256": hashlib.sha256(manifest_text("kinetics_sounds/ks100_v1.txt").encode()).hexdigest()}

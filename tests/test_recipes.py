"""Annotation parsers and recipes on the real files in ../shared/data."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avtools.recipes import RecipeError, RecipeOptions, class_list, plan
from avtools.recipes.hmdb51 import read_official_splits, read_tsn_list
from avtools.recipes.kinetics import read_kinetics_csv
from avtools.recipes.ucf101 import read_class_index, read_splits
from avtools.recipes.vggsound import read_vggsound_csv
from tests.conftest import SHARED


def test_kinetics_csvs_parse_with_and_without_is_cc():
    k400 = list(read_kinetics_csv(SHARED / "kinetics/kinetics-400_val.csv"))
    assert len(k400) == 19906 and sum(r["is_cc"] == "1" for _, r in k400) == 519
    assert [line for line, _ in k400[:2]] == [2, 3]  # file lines, the header being line 1
    k600 = list(read_kinetics_csv(SHARED / "kinetics/kinetics-600_val.csv"))
    assert len(k600) == 30000 and "is_cc" not in k600[0][1]
    test = list(read_kinetics_csv(SHARED / "kinetics/kinetics-400_test.csv"))
    assert len(test) == 38685 and "label" not in test[0][1]


def test_kinetics_sounds32_from_the_val_csv():
    options = RecipeOptions(annotations=[str(SHARED / "kinetics/kinetics-400_val.csv")])
    clips = plan("kinetics-sounds32", options).clips
    assert len(clips) == 1594
    assert {c.label for c in clips} == set(class_list("kinetics_sounds/ks32.txt"))
    clip = clips[0]
    assert clip.clip_id == f"{clip.youtube_id}_{int(clip.start):06d}_{int(clip.end):06d}" and clip.split == "val"
    ks31 = plan("kinetics-sounds31", options).clips
    assert len({c.label for c in ks31}) == 31 and "strumming guitar" not in {c.label for c in ks31}


def test_kinetics_sounds32_refuses_kinetics600_labels():
    with pytest.raises(RecipeError, match="kinetics-sounds31"):
        plan("kinetics-sounds32", RecipeOptions(kinetics=600, annotations=[str(SHARED / "kinetics/kinetics-600_val.csv")]))
    assert plan("kinetics-sounds31", RecipeOptions(kinetics=600, annotations=[str(SHARED / "kinetics/kinetics-600_val.csv")])).clips


def test_ucf101_official_splits():
    split_dir = SHARED / "ucf101/ucfTrainTestlist"
    classes = read_class_index(split_dir)
    assert len(classes) == 101 and classes[36] == "HandstandPushups"
    splits = read_splits(split_dir)
    assert [len(splits[f]["train"]) for f in (1, 2, 3)] == [9537, 9586, 9624]
    assert [len(splits[f]["test"]) for f in (1, 2, 3)] == [3783, 3734, 3696]
    for fold in (1, 2, 3):
        assert not set(splits[fold]["train"]) & set(splits[fold]["test"])
        assert len(set(splits[fold]["train"]) | set(splits[fold]["test"])) == 13320
    assert all("\r" not in entry for entry in splits[1]["test"])


def test_ucf101_recipe_matches_files_case_insensitively(tmp_path):
    source = tmp_path / "UCF-101"
    (source / "HandstandPushups").mkdir(parents=True)
    (source / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").write_bytes(b"x")
    clips = plan("ucf101", RecipeOptions(source=source, annotations=[str(SHARED / "ucf101/ucfTrainTestlist")])).clips
    assert len(clips) == 13320
    clip = next(c for c in clips if c.clip_id == "v_HandStandPushups_g01_c01")
    assert Path(clip.path).is_file() and clip.label == "HandstandPushups" and clip.label_index == 36
    assert clip.split == "test" and clip.extra["folds"] == {"1": "test", "2": "train", "3": "train"}
    fold2 = plan("ucf101", RecipeOptions(source=source, fold=2, annotations=[str(SHARED / "ucf101/ucfTrainTestlist")])).clips
    assert sum(c.split == "test" for c in fold2) == 3734


def test_hmdb51_official_format(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for cls in ("brush_hair", "wave"):
        for fold in (1, 2, 3):
            lines = [f"{cls}_{i}.avi {(i + fold) % 3}" for i in range(6)]
            (splits / f"{cls}_test_split{fold}.txt").write_text("\r\n".join(lines) + "\r\n")
    videos, rejected = read_official_splits(splits)
    assert len(videos) == 12 and not rejected
    assert videos["wave_0.avi"][:2] == ("wave", {"1": "train", "2": "test", "3": "unused"})
    assert videos["wave_0.avi"][2] == f"{splits / 'wave_test_split1.txt'}:1"
    clips = plan("hmdb51", RecipeOptions(source=tmp_path, annotations=[str(splits)])).clips
    assert {c.label_index for c in clips if c.label == "wave"} == {1}
    assert sorted(c.split for c in clips if c.label == "wave") == ["test", "test", "train", "train", "unused", "unused"]


def test_hmdb51_derived_lists_have_70_30_per_class():
    for fold in (1, 2, 3):
        train = read_tsn_list(SHARED / f"hmdb51/derived_tsn_lists/hmdb51_flow_train_split_{fold}.txt")
        test = read_tsn_list(SHARED / f"hmdb51/derived_tsn_lists/hmdb51_flow_val_split_{fold}.txt")
        assert (len(train), len(test)) == (3570, 1530)
        assert {label for _, label in train} == set(range(51))


def test_esc50_five_folds(tmp_path):
    (tmp_path / "meta").mkdir()
    shutil.copy(SHARED / "esc50/meta/esc50.csv", tmp_path / "meta" / "esc50.csv")
    clips = plan("esc50", RecipeOptions(source=tmp_path)).clips
    assert len(clips) == 2000 and all(c.audio_only for c in clips)
    assert {f"fold{i}": 400 for i in range(1, 6)} == {s: sum(c.split == s for c in clips) for s in {c.split for c in clips}}
    assert {c.label_index for c in clips} == set(range(50))


def test_vggsound_both_formats(tmp_path):
    rows, rejected = read_vggsound_csv(SHARED / "vggsound/test.csv")
    assert len(rows) == 15446 and not rejected and all(split == "test" for *_, split in rows)
    assert len({label for *_, label, _ in rows}) == 309
    full = tmp_path / "vggsound.csv"
    full.write_text("---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,waterfall burbling,train\n")
    clips = plan("vggsound", RecipeOptions(annotations=[str(full)])).clips
    assert [(c.clip_id, c.start, c.end, c.split) for c in clips] == [
        ("---g-f_I2yQ_000001", 1.0, 11.0, "test"), ("--0PQM4-hqg_000030", 30.0, 40.0, "train")]


def test_folder_recipe_with_and_without_split_folders(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "flat" / cls).mkdir(parents=True)
        (tmp_path / "split" / "train" / cls).mkdir(parents=True)
        (tmp_path / "split" / "val" / cls).mkdir(parents=True)
        for i in range(20):
            (tmp_path / "flat" / cls / f"v{i}.mp4").write_bytes(b"x")
        (tmp_path / "split" / "train" / cls / "a.mp4").write_bytes(b"x")
        (tmp_path / "split" / "val" / cls / "b.mkv").write_bytes(b"x")
    flat = plan("folder", RecipeOptions(source=tmp_path / "flat", val_fraction=0.25)).clips
    assert {c.split for c in flat} == {"train", "val"} and {c.label_index for c in flat} == {0, 1}
    assert flat == plan("folder", RecipeOptions(source=tmp_path / "flat", val_fraction=0.25)).clips  # deterministic
    split = plan("folder", RecipeOptions(source=tmp_path / "split")).clips
    assert sorted((c.split, c.label) for c in split) == [("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "dog")]


def test_unknown_dataset_names_the_choices():
    with pytest.raises(RecipeError, match="kinetics-sounds32"):
        plan("kinetics-sound", RecipeOptions())

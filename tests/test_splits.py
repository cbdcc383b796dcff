"""Splits that cannot leak: a rerun that would change how clips are split is refused, folder splits are made per
class and checked, and evaluation refuses data whose train and test sides share a shard, a sample or a UCF101
group, naming the real cause when a side is empty (real builds of real media, real shards)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from avcl.eval.engine import EvalDataError, check_disjoint
from avtools.cli import app
from avtools.recipes import RecipeOptions, plan
from avtools.recipes.folder import stratified_val
from tests.support.timecoded import write_timecoded
from tests.test_eval import TINY

runner = CliRunner()


def run(*argv: str):
    return runner.invoke(app, list(argv))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two classes of 8 short timecoded videos each, no split folders."""
    root = tmp_path_factory.mktemp("videos")
    (root / "a").mkdir()
    write_timecoded(root / "a" / "v0.mp4", seconds=2, fps=8, size=(64, 48))
    for cls in ("a", "b"):
        (root / cls).mkdir(exist_ok=True)
        for i in range(8):
            if (cls, i) != ("a", 0):
                shutil.copy(root / "a" / "v0.mp4", root / cls / f"v{i}.mp4")
    return root


def build(videos, out, *extra):
    return run("build-dataset", "folder", "--source", str(videos), "--out", str(out), "--fps", "8",
               "--short-side", "48", "--workers", "2", "--no-card", "--samples-per-shard", "4", *extra)


def test_every_class_is_split_on_its_own(videos):
    clips = plan("folder", RecipeOptions(source=videos, val_fraction=0.25)).clips
    for cls in ("a", "b"):
        assert sum(c.split == "val" for c in clips if c.label == cls) == 2  # 25 % of 8, in each class
    small = stratified_val(["x/1", "x/2", "x/3"], 0.1)
    assert len(small) == 1  # a class of 3 still gets a val clip at 10 %, and never loses all of its clips
    assert stratified_val(["x/1"], 0.5) == set() and stratified_val(["x/1", "x/2"], 0.9) != {"x/1", "x/2"}
    again = plan("folder", RecipeOptions(source=videos, val_fraction=0.25)).clips
    assert [(c.clip_id, c.split) for c in again] == [(c.clip_id, c.split) for c in clips]


@pytest.mark.parametrize("fraction", ["1.5", "1", "-0.1"])
def test_a_val_fraction_outside_0_1_is_refused(videos, tmp_path, fraction):
    result = build(videos, tmp_path / "out", "--val-fraction", fraction)
    assert result.exit_code != 0 and f"--val-fraction {float(fraction)}" in result.output
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_a_rerun_with_another_val_fraction_is_refused_and_shards_never_cross_splits(videos, tmp_path):
    out = tmp_path / "ds"
    first = build(videos, out, "--val-fraction", "0.25")
    assert first.exit_code == 0, first.output
    before = (out / "dataset.json").read_bytes()
    rerun = build(videos, out, "--val-fraction", "0.5")
    assert rerun.exit_code != 0
    assert "val_fraction 0.25 -> 0.5" in rerun.output and "new --out" in rerun.output
    assert (out / "dataset.json").read_bytes() == before
    info = json.loads(before)
    assert info["split_rule"] == {"val_fraction": 0.25, "rule": "per-class hash quota"}
    listed = [s["name"] for split in info["splits"].values() for s in split["shards"]]
    assert len(listed) == len(set(listed))


def test_a_built_clip_that_would_change_split_is_refused(videos, tmp_path):
    """Split folders added between runs: the same clips now come out of another rule, and the per-clip check
    names them even where the recorded options cannot (an output of an older avtools, say)."""
    out = tmp_path / "ds"
    assert build(videos, out, "--val-fraction", "0.25").exit_code == 0
    settings = out / "ledger" / "settings.json"
    recorded = json.loads(settings.read_text())
    del recorded["split_rule"]  # as an older avtools wrote it
    settings.write_text(json.dumps(recorded))
    rerun = build(videos, out, "--val-fraction", "0.5")
    assert rerun.exit_code != 0 and "would change split" in rerun.output


def test_a_single_split_and_a_class_missing_from_a_split_are_warned(videos, tmp_path):
    only_train = build(videos, tmp_path / "none", "--val-fraction", "0")
    assert only_train.exit_code == 0 and "every clip is in split train" in only_train.output
    source = tmp_path / "split-folders"
    shutil.copytree(videos / "a", source / "train" / "a")
    shutil.copytree(videos / "b", source / "train" / "b")
    shutil.copytree(videos / "a", source / "val" / "a")
    missing = build(source, tmp_path / "missing")
    assert missing.exit_code == 0 and "split val has no clip of 1 of 2 classes (b)" in missing.output


def test_eval_refuses_a_shard_listed_under_two_splits(videos, tmp_path):
    out = tmp_path / "ds"
    assert build(videos, out, "--val-fraction", "0.25").exit_code == 0
    info = json.loads((out / "dataset.json").read_text())
    info["splits"]["val"]["shards"].append(info["splits"]["train"]["shards"][0])
    (out / "dataset.json").write_text(json.dumps(info))
    result = run("eval", "folder", "--data", str(out), "--checkpoint", "random", "--method", "xmodal",
                 "--protocol", "knn", "--modality", "video", *TINY, "--cache-dir", str(tmp_path / "c"))
    shard = info["splits"]["train"]["shards"][0]["name"]
    assert result.exit_code == 2 and f"lists shard {shard} under both train and val" in result.output


def knn_eval(data, tmp_path):
    return run("eval", "folder", "--data", str(data), "--checkpoint", "random", "--method", "xmodal",
               "--protocol", "knn", "--modality", "video", *TINY, "--cache-dir", str(tmp_path / "c"))


def test_eval_names_why_the_test_side_is_empty(videos, tmp_path):
    assert build(videos, tmp_path / "one", "--val-fraction", "0").exit_code == 0
    result = knn_eval(tmp_path / "one", tmp_path)
    assert result.exit_code == 2 and "nothing to test on: it has only the split(s) train" in result.output
    source = tmp_path / "broken-val"
    for cls in ("a", "b"):
        shutil.copytree(videos / cls, source / "train" / cls)
        (source / "val" / cls).mkdir(parents=True)
        (source / "val" / cls / "x.mp4").write_bytes(b"not a video")
    assert build(source, tmp_path / "failed").exit_code == 0
    result = knn_eval(tmp_path / "failed", tmp_path)
    assert result.exit_code == 2 and "val lists 2 clip(s), 2 failed to build" in result.output


@pytest.mark.parametrize("damage, message", [
    ("delete", "shard(s) holding its test samples are missing"),
    ("garble", "every one was skipped as unreadable"),
])
def test_eval_names_missing_shards_apart_from_unreadable_ones(videos, tmp_path, damage, message):
    out = tmp_path / "ds"
    assert build(videos, out, "--val-fraction", "0.25").exit_code == 0
    for shard in out.glob("val-*.tar"):
        shard.unlink() if damage == "delete" else shard.write_bytes(b"\0" * 4096)
    result = knn_eval(out, tmp_path)
    assert result.exit_code == 2 and message in result.output, result.output


def test_train_and_test_sharing_a_sample_or_a_ucf101_group_are_refused():
    with pytest.raises(EvalDataError, match=r"1 sample key\(s\) are in both train and test \(e.g. k2\)"):
        check_disjoint(np.array(["k1", "k2"]), np.array(["k2", "k3"]), "folder split 1", False)
    train = np.array(["v_Drumming_g08_c01", "v_Drumming_g09_c02"])
    with pytest.raises(EvalDataError, match=r"1 video group\(s\) .* \(e.g. v_Drumming_g09\)"):
        check_disjoint(train, np.array(["v_Drumming_g09_c05"]), "ucf101 split 1", True)
    check_disjoint(train, np.array(["v_Drumming_g01_c01"]), "ucf101 split 1", True)
    check_disjoint(train, np.array(["v_Drumming_g09_c05"]), "hmdb51 split 1", False)  # groups: official lists only


SGD_SMALL = ["--set", "method.width=4", "--set", "protocol.epochs=1", "--set", "protocol.frames=8", "--set",
             "protocol.size=64", "--set", "protocol.views=2x1", "--workers", "0", "--batch-size", "8"]


@pytest.mark.parametrize("protocol, extra", [("knn", TINY), ("linear-sgd", SGD_SMALL)])
def test_a_test_sample_also_among_the_train_samples_is_refused_by_every_kind_of_protocol(videos, tmp_path,
                                                                                        protocol, extra):
    """The val samples again as an extra train shard whose json says train (a mix an older build could leave):
    the feature protocols see the key on both sides of their features, the streamed ones (fine-tuning, SGD
    heads) in the json they select their samples by."""
    from tests.test_stream import rewrite_shard

    out = tmp_path / "ds"
    assert build(videos, out, "--val-fraction", "0.25").exit_code == 0
    val = sorted(out.glob("val-*.tar"))[0]
    extra_shard = out / "train-000099.tar"
    shutil.copyfile(val, extra_shard)
    rewrite_shard(extra_shard, lambda name, data: data.replace(b'"split": "val"', b'"split": "train"')
                  if name.endswith(".json") else data)
    info = json.loads((out / "dataset.json").read_text())
    samples = next(s["samples"] for s in info["splits"]["val"]["shards"] if s["name"] == val.name)
    info["splits"]["train"]["shards"].append({"name": extra_shard.name, "samples": samples})
    (out / "dataset.json").write_text(json.dumps(info))
    result = run("eval", "folder", "--data", str(out), "--checkpoint", "random", "--method", "xmodal",
                 "--protocol", protocol, "--modality", "video", *extra, "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 2 and "sample key(s) are in both train and test" in result.output, result.output


def test_inspect_counts_a_tar_group_without_json(videos, tmp_path):
    from tests.test_stream import rewrite_shard

    out = tmp_path / "ds"
    assert build(videos, out, "--val-fraction", "0.25").exit_code == 0
    shard = sorted(out.glob("train-*.tar"))[0]
    dropped = []
    rewrite_shard(shard, lambda name, data: dropped.append(name) if name.endswith(".json") and not dropped else data)
    result = run("inspect", str(shard))
    assert result.exit_code == 0 and "1 tar group(s) without a json member" in result.output, result.output
    assert dropped[0].rsplit(".", 1)[0] in result.output

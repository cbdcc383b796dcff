"""avcl.eval and `avtools eval`: every protocol end to end on tiny shards, metrics against brute force,
official split handling on the real split files, distributed extraction, caching and --compare."""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avcl.data.views import fold_codes
from avcl.eval import classify, report
from avcl.eval.datasets import DATASETS
from avcl.eval.encoders import conv5_max
from avcl.eval.fingerprint import ranks_of_originals
from avcl.neighbours import knn_predict
from avcl.eval.retrieval import hit_rates
from avtools.cli import app
from avtools.recipes import RecipeOptions, plan
from tests.conftest import SHARED

SMALL_VIEWS = ["--set", "protocol.clips=2", "--set", "protocol.frames=8", "--set", "protocol.size=64",
               "--workers", "0", "--batch-size", "8"]
TINY = ["--set", "method.width=4", *SMALL_VIEWS]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "demo"
    invoke("build-dataset", "demo", "--out", str(out), "--no-card", "--workers", "2")
    return out


def results(path: Path) -> dict:
    return json.loads(path.read_text())


def split_sizes(dataset: Path) -> tuple[int, int]:
    """(train, val) clips of a built dataset: the demo recipe draws its val clips by hashing their names."""
    splits = results(dataset / "dataset.json")["splits"]
    assert splits["train"]["available"] + splits["val"]["available"] == 32  # 4 classes x 8 clips
    return splits["train"]["available"], splits["val"]["available"]


def run_twice(tmp_path, *args) -> tuple[dict, dict]:
    """The same evaluation twice: the second must come from the feature cache and give the same numbers."""
    first, second = tmp_path / "a" / "results.json", tmp_path / "b" / "results.json"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    invoke("eval", *args, *cache, "--out", str(first))
    invoke("eval", *args, *cache, "--out", str(second))
    a, b = results(first), results(second)
    assert a["cache"]["misses"] > 0 and b["cache"] == {"hits": a["cache"]["misses"], "misses": 0}
    assert [r["metrics"] for r in a["rows"]] == [r["metrics"] for r in b["rows"]]
    return a, b


def assert_in_range(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        for name, value in row["metrics"].items():
            assert 0.0 <= value <= 100.0, (name, value)
        assert row["encoder"]["method"] and row["settings"]["params"]


@pytest.mark.parametrize("protocol, extra", [
    ("linear", []),
    ("linear-svm-tcgl", []),
    ("knn", ["--set", "protocol.layer=gap"]),
    ("retrieval", ["--set", "protocol.layer=gap"]),
])
def test_feature_protocols_end_to_end_with_cache(protocol, extra, demo_dataset, tmp_path):
    a, _ = run_twice(tmp_path, "demo", "--data", str(demo_dataset), "--protocol", protocol, *TINY, *extra)
    rows = a["rows"]
    assert_in_range(rows)
    assert {r["modality"] for r in rows} == {"video", "audio", "fused"}
    assert all(r["split"] == "1" for r in rows)
    if protocol == "retrieval":
        figures = [Path(r["extra"]["figure"]) for r in rows if "figure" in r["extra"]]
        assert figures and all(f.stat().st_size > 1000 for f in figures)
        train, val = split_sizes(demo_dataset)
        assert all(r["extra"]["queries"] == val and r["extra"]["gallery"] == train for r in rows)


@pytest.mark.parametrize("protocol", ["finetune", "linear-sgd"])
def test_supervised_protocols_end_to_end_with_cache(protocol, demo_dataset, tmp_path):
    schedule = ["--set", "protocol.epochs=2", "--set", "protocol.milestones=[1]", "--set", "protocol.views=2x3",
                "--set", "protocol.clips_per_video=1", "--set", "protocol.batch_size=8", "--set", "method.width=4",
                "--set", "protocol.frames=8", "--set", "protocol.size=64", "--workers", "0", "--batch-size", "8"]
    a, _ = run_twice(tmp_path, "demo", "--data", str(demo_dataset), "--protocol", protocol, "--modality", "video",
                     *schedule)
    (row,) = a["rows"]
    assert_in_range([row])
    assert row["extra"]["coverage"]["test"]["read"] == split_sizes(demo_dataset)[1]
    assert set(row["metrics"]) == {"top1", "top5", "mean_class"}
    assert Path(row["extra"]["figure"]).stat().st_size > 1000


def test_fingerprint_end_to_end(demo_dataset, tmp_path):
    a, _ = run_twice(tmp_path, "demo", "--data", str(demo_dataset), "--protocol", "fingerprint", "--modality",
                     "video,audio", *TINY, "--set", 'protocol.families=["jpeg","audio-gain","trim"]')
    rows = a["rows"]
    assert_in_range(rows)
    families = {(r["modality"], r["extra"]["family"]) for r in rows}
    assert families == {(m, f) for m in ("video", "audio") for f in ("jpeg", "audio-gain", "trim", "all")}
    by = {(r["modality"], r["extra"]["family"]): r for r in rows}
    database = split_sizes(demo_dataset)[1]
    assert by[("audio", "jpeg")]["metrics"]["R@1"] == 100.0  # a visual change leaves the audio embedding as it was
    assert by[("audio", "jpeg")]["extra"]["identical"] == database == by[("video", "audio-gain")]["extra"]["identical"]
    assert by[("video", "jpeg")]["extra"]["identical"] < database
    assert by[("video", "all")]["extra"]["families"] == ["jpeg", "trim"]  # the families that change the video
    assert by[("audio", "all")]["extra"]["families"] == ["audio-gain", "trim"]


def test_esc50_five_folds_and_mean(tmp_path):
    from tests.support.tiny_esc50 import write_tiny_esc50

    source = write_tiny_esc50(tmp_path / "ESC-50")
    invoke("build-dataset", "esc50", "--source", str(source), "--out", str(tmp_path / "esc"), "--no-card")
    a, _ = run_twice(tmp_path, "esc50", "--data", str(tmp_path / "esc"), "--set", "method.width=4", "--set",
                     "protocol.train_crops=4", "--set", "protocol.test_crops=3", "--workers", "0")
    rows = a["rows"]
    assert [r["split"] for r in rows] == ["1", "2", "3", "4", "5", "mean"]
    assert all(r["extra"]["coverage"]["test"] == {"expected": 4, "available": 4, "read": 4} for r in rows[:5])
    assert all(r["extra"]["window_s"] == 1.0 for r in rows[:5])  # xmodal's training audio: 1 s
    assert rows[-1]["metrics"]["accuracy"] == pytest.approx(np.mean([r["metrics"]["accuracy"] for r in rows[:5]]))
    assert_in_range(rows)


def test_a_trained_checkpoint_and_compare(demo_dataset, tmp_path):
    run = tmp_path / "run"
    invoke("train", "--method", "xmodal", "--data", str(demo_dataset), "--out", str(run), "--max-steps", "1",
           "--batch-size", "4", "--set", "method.width=4", "--set", "data.workers=0", "--set", "data.frames=8",
           "--device", "cpu")
    invoke("eval", "demo", "--data", str(demo_dataset), "--checkpoint", str(run), "--protocol", "knn", *SMALL_VIEWS,
           "--out", str(run / "results.json"))
    invoke("eval", "demo", "--data", str(demo_dataset), "--protocol", "knn", *TINY,
           "--out", str(tmp_path / "random" / "results.json"))
    trained = results(run / "results.json")["rows"][0]
    assert trained["encoder"]["checkpoint"].endswith("last.pt") and trained["encoder"]["step"] == 1
    files = [run / "results.json", tmp_path / "random" / "results.json"]
    output = invoke("eval", "--compare", str(files[0]), "--compare", str(files[1]))
    assert [c.name for c in report.columns(files)] == ["xmodal run step 1", "xmodal random step 0"]
    assert "knn" in output


# --- official splits ---------------------------------------------------------------------------------------


def fold_counts(dataset_name: str, clips) -> dict[str, tuple[int, int]]:
    dataset = DATASETS.get(dataset_name)
    counts = {}
    for fold in dataset.folds:
        roles = [dataset.role(c.split, fold_codes(c.extra), fold, ["train", "test"]) for c in clips]
        counts[fold] = (roles.count("train"), roles.count("test"))
    return counts


def test_ucf101_official_split_counts(tmp_path):
    clips = plan("ucf101", RecipeOptions(source=tmp_path, annotations=[str(SHARED / "ucf101" / "ucfTrainTestlist")])).clips
    assert len(clips) == 13320
    assert fold_counts("ucf101", clips) == {"1": (9537, 3783), "2": (9586, 3734), "3": (9624, 3696)}


def test_hmdb51_official_split_counts(tmp_path):
    """The official 7030 split files, written from the derived lists (1 train, 2 test), read back by the recipe."""
    from avtools.recipes.hmdb51 import read_tsn_list

    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    per_class: dict[str, dict[str, dict[str, str]]] = {}
    for fold in ("1", "2", "3"):
        for role, name in (("1", "train"), ("2", "val")):
            for stem, label in read_tsn_list(SHARED / f"hmdb51/derived_tsn_lists/hmdb51_flow_{name}_split_{fold}.txt"):
                per_class.setdefault(str(label), {}).setdefault(fold, {})[stem + ".avi"] = role
    for label, folds in per_class.items():
        for fold, videos in folds.items():
            lines = [f"{video} {role}" for video, role in sorted(videos.items())]
            (splits / f"class{int(label):02d}_test_split{fold}.txt").write_text("\n".join(lines) + "\n")
    clips = plan("hmdb51", RecipeOptions(source=tmp_path, annotations=[str(splits)])).clips
    assert fold_counts("hmdb51", clips) == {"1": (3570, 1530), "2": (3570, 1530), "3": (3570, 1530)}


@pytest.fixture(scope="module")
def tiny_ucf(tmp_path_factory):
    """UCF101's layout and split-list format (CRLF) over 3 classes x 4 synthetic videos; fold k tests video k-1."""
    from avtools.demo_media import demo_media

    root = tmp_path_factory.mktemp("tinyucf")
    media = demo_media(root / "media")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    classes = ["HorizontalTone", "VerticalNoise", "CircleBuzz"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    videos = root / "UCF-101"
    for c, demo_class in zip(classes, ("horizontal-tone", "vertical-noise", "circle-buzz")):
        (videos / c).mkdir(parents=True)
        for i, path in enumerate(sorted((media / demo_class).glob("*.mp4"))[:4]):
            shutil.copy(path, videos / c / f"v_{c}_g{i + 1:02d}_c01.avi")
    for fold in (1, 2, 3):
        train = [f"{c}/v_{c}_g{i + 1:02d}_c01.avi {k + 1}" for k, c in enumerate(classes) for i in range(4) if i != fold - 1]
        test = [f"{c}/v_{c}_g{fold:02d}_c01.avi" for c in classes]
        (lists / f"trainlist0{fold}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist0{fold}.txt").write_text("\r\n".join(test) + "\r\n")
    out = root / "ucf"
    invoke("build-dataset", "ucf101", "--source", str(videos), "--annotations", str(lists), "--out", str(out),
           "--no-card", "--workers", "2")
    return out


def test_ucf101_splits_all_reads_every_fold_from_one_dataset(tiny_ucf, tmp_path):
    info = json.loads((tiny_ucf / "dataset.json").read_text())
    counts = lambda n: {"expected": n, "available": n}  # noqa: E731
    assert info["folds"] == {f: {"train": counts(9), "test": counts(3)} for f in ("1", "2", "3")}
    invoke("eval", "ucf101", "--data", str(tiny_ucf), "--protocol", "knn", "--folds", "all", *TINY,
           "--set", "protocol.layer=gap", "--out", str(tmp_path / "r.json"))
    rows = results(tmp_path / "r.json")["rows"]
    assert [r["split"] for r in rows] == ["1", "2", "3", "mean"]
    assert all(r["extra"]["coverage"] == {"train": counts(9) | {"read": 9}, "test": counts(3) | {"read": 3}}
               for r in rows[:3])
    assert set(rows[-1]["extra"]["per_split"]) == {"1", "2", "3"}


def test_finetune_on_a_fold_the_shards_were_not_built_for(tiny_ucf, tmp_path):
    schedule = ["--set", "protocol.epochs=1", "--set", "protocol.milestones=[1]", "--set", "protocol.frames=8",
                "--set", "protocol.size=64", "--set", "protocol.views=2x1", "--set", "protocol.clips_per_video=1",
                "--set", "protocol.batch_size=3", "--set", "method.width=4", "--workers", "0"]
    invoke("eval", "ucf101", "--data", str(tiny_ucf), "--protocol", "finetune", "--folds", "2", *schedule,
           "--out", str(tmp_path / "r.json"))
    (row,) = results(tmp_path / "r.json")["rows"]
    assert row["split"] == "2" and row["extra"]["coverage"]["test"] == {"expected": 3, "available": 3, "read": 3}


def test_bad_requests_name_the_problem(demo_dataset, tmp_path):
    result = CliRunner().invoke(app, ["eval", "ucf101", "--data", str(demo_dataset), "--folds", "4"])
    assert result.exit_code == 2 and "1, 2, 3" in result.output
    result = CliRunner().invoke(app, ["eval", "demo", "--data", str(tmp_path), "--protocol", "linear"])
    assert result.exit_code == 2 and "dataset.json" in result.output
    result = CliRunner().invoke(app, ["eval", "demo", "--data", str(demo_dataset), "--protocol", "nope"])
    assert result.exit_code == 2 and "linear" in result.output
    result = CliRunner().invoke(app, ["eval", "demo", "--data", str(demo_dataset), "--set", "protocol.nope=1"])
    assert result.exit_code == 2 and "nope" in result.output


# --- metrics against brute force ---------------------------------------------------------------------------


def tied_features(seed: int, n: int, d: int = 4) -> torch.Tensor:
    """Random features on a coarse grid, with duplicated rows: many exact ties in cosine similarity."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (n, d), generator=g).float()
    x[x.abs().sum(1) == 0, 0] = 1.0
    x[n // 2:n // 2 + 3] = x[0]
    return x


def brute_cosine(a: torch.Tensor, b: torch.Tensor) -> list[list[float]]:
    return [[float(torch.dot(p, q) / (p.norm() * q.norm())) for q in b] for p in a]


def brute_order(sims: list[float]) -> list[int]:
    return sorted(range(len(sims)), key=lambda j: (-round(sims[j], 6), j))


def test_knn_matches_a_brute_force_vote_with_ties():
    bank, queries = tied_features(0, 40), tied_features(1, 15)
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(2))
    for k in (1, 5, 20, 200):
        predicted = knn_predict(bank, labels, queries, 4, k, 0.07)
        for q, sims in enumerate(brute_cosine(queries, bank)):
            votes = [0.0] * 4
            for j in brute_order(sims)[:min(k, 40)]:
                votes[int(labels[j])] += math.exp(sims[j] / 0.07)
            best = max(votes)
            assert int(predicted[q]) == next(c for c in range(4) if math.isclose(votes[c], best, rel_tol=1e-5))


def test_retrieval_hit_rates_match_brute_force_with_ties():
    gallery, queries = tied_features(3, 60), tied_features(4, 25)
    g_labels = torch.randint(0, 5, (60,), generator=torch.Generator().manual_seed(5))
    q_labels = torch.randint(0, 5, (25,), generator=torch.Generator().manual_seed(6))
    ks = (1, 5, 10, 20, 50)
    rates = hit_rates(queries, q_labels, gallery, g_labels, ks)
    for k in ks:
        hits = sum(any(int(g_labels[j]) == int(q_labels[q]) for j in brute_order(sims)[:k])
                   for q, sims in enumerate(brute_cosine(queries, gallery)))
        assert rates[k] == pytest.approx(hits / 25)


def test_fingerprint_ranks_match_brute_force_with_ties():
    database = tied_features(7, 30)
    keys = np.array([f"k{i:02d}" for i in range(30)])
    queries = database[[0, 5, 16, 29]] + 0.3 * tied_features(8, 4)
    ranks = ranks_of_originals(queries, keys[[0, 5, 16, 29]], database, keys)
    for q, (sims, own) in enumerate(zip(brute_cosine(queries, database), (0, 5, 16, 29))):
        assert ranks[q] == sum(round(s, 6) >= round(sims[own], 6) for s in sims)


def test_linear_probe_recovers_a_separable_problem():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 32)) * 4
    y = rng.integers(0, 5, 400)
    x = centres[y] + rng.normal(0, 0.3, (400, 32))
    for kind in classify.CLASSIFIERS:
        fitted = classify.fit(x[:300], y[:300], kind, (0.01, 1.0, 100.0))
        scores = fitted.scores(x[300:], 5)
        assert classify.topk_accuracy(scores, y[300:], 1) == 1.0
        assert set(fitted.holdout_accuracy) == {0.01, 1.0, 100.0}


def test_topk_accuracy_and_vcop_pooling_sizes():
    scores = np.array([[0.1, 0.5, 0.5], [0.9, 0.0, 0.1]])
    assert classify.topk_accuracy(scores, np.array([2, 2]), 1) == 0.0  # the tie goes to the lower class
    assert classify.topk_accuracy(scores, np.array([2, 2]), 2) == 1.0
    conv5 = torch.zeros(1, 512, 2, 7, 7)
    for layer in ("conv5-max-vcop", "conv5-max-tcgl"):
        assert conv5_max(conv5, "r3d_18", layer).shape == (1, 9216)
        assert conv5_max(conv5, "c3d", layer).shape == (1, 9216)
    assert conv5_max(conv5, "r2plus1d_18", "conv5-max-vcop").shape == (1, 9216)  # VCOP's own R(2+1)D: (1,2,2)
    assert conv5_max(conv5, "r2plus1d_18", "conv5-max-tcgl").shape == (1, 512)  # TCGL's: (2,5,5)


def test_fused_features_use_amfm_for_avcl_and_stkd_reaches_tcgl_features():
    from avcl.eval.encoders import clip_embedder, embedding_dim, load_encoders
    from avcl.methods.tcgl import stkd

    inputs = {"video": torch.rand(2, 1, 3, 8, 32, 32), "audio": torch.rand(2, 1, 1, 40, 50), "label": torch.zeros(2)}
    for method, dim in (("avcl", 32), ("xmodal", 64)):
        encoders = load_encoders("random", method, ["method.width=4"])
        with torch.no_grad():
            fused = clip_embedder(encoders, "fused")(inputs)
        assert fused.shape == (2, 1, dim) == (2, 1, embedding_dim(encoders, "fused"))
    tcgl = load_encoders("random", "tcgl", ["method.width=4"])
    with torch.no_grad():
        embedded = clip_embedder(tcgl, "video")(inputs)[:, 0]
        direct = tcgl.method.video(stkd(inputs["video"][:, 0], tcgl.config.method.stkd))
    torch.testing.assert_close(embedded, direct)


# --- distributed extraction --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_extract_every_sample_once_and_match_one_process(demo_dataset, tmp_path):
    args = ["eval", "demo", "--data", str(demo_dataset), "--protocol", "knn", "--modality", "video", *TINY,
            "--set", "protocol.layer=gap", "--device", "cpu"]
    invoke(*args, "--out", str(tmp_path / "one.json"), "--cache-dir", str(tmp_path / "c1"))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                           str(free_port()), "-m", "avtools", *args, "--out", str(tmp_path / "two.json"),
                           "--cache-dir", str(tmp_path / "c2")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = results(tmp_path / "one.json")["rows"], results(tmp_path / "two.json")["rows"]
    train, val = split_sizes(demo_dataset)
    read = {"train": {"expected": train, "available": train, "read": train},
            "test": {"expected": val, "available": val, "read": val}}
    assert [r["extra"] for r in one] == [r["extra"] for r in two] == [{"coverage": read, "layer": "gap"}]
    assert one[0]["metrics"] == pytest.approx(two[0]["metrics"])
    (c1,), (c2,) = list((tmp_path / "c1").glob("*.npz"))[:1], list((tmp_path / "c2").glob("*.npz"))[:1]
    a, b = np.load(c1), np.load(c2)
    assert list(a["keys"]) == list(b["keys"]) and len(set(a["keys"])) == len(a["keys"])
    np.testing.assert_allclose(a["features"], b["features"], rtol=1e-4, atol=1e-5)

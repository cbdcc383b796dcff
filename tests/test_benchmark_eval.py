"""Benchmark-grade evaluation: evaluation sets complete by default with their coverage reported, eval checking
the data it is given, protocols against their references (liblinear, brute force), results files compared
column by column with gains and published rows, and checkpoints of the field evaluated on the same protocols."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from avcl import models
from avcl.eval import classify, report
from avcl.eval.encoders import load_encoders
from avcl.eval.linear import TCGLSVMParams
from avcl.train.checkpoint import CheckpointError
from avtools.cli import app
from tests.support.timecoded import write_timecoded
from tests.test_eval import SMALL_VIEWS, TINY, demo_dataset, invoke, results  # noqa: F401 (a fixture)

CLASSES = ["HorizontalTone", "VerticalNoise", "CircleBuzz"]
SOUND = ("audio", "audio", "silent", "none")  # per video index: fold k tests video k - 1 of every class


def run_cli(*args: str):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, list(args))


@pytest.fixture(scope="module")
def ucf_layout(tmp_path_factory):
    """UCF101's layout and list format over 3 classes x 4 videos at 25 fps: per class two with sound, one with
    a silent audio track, one without an audio stream."""
    root = tmp_path_factory.mktemp("ucf-sound")
    lists, videos = root / "ucfTrainTestlist", root / "UCF-101"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(CLASSES)))
    for c in CLASSES:
        (videos / c).mkdir(parents=True)
        for i, sound in enumerate(SOUND):
            write_timecoded(videos / c / f"v_{c}_g{i + 1:02d}_c01.avi", seconds=2.0, fps=25, size=(96, 64),
                            audio=sound != "none", silent=sound == "silent")
    for fold in (1, 2, 3):
        train = [f"{c}/v_{c}_g{i + 1:02d}_c01.avi {k + 1}" for k, c in enumerate(CLASSES) for i in range(4) if i != fold - 1]
        (lists / f"trainlist0{fold}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist0{fold}.txt").write_text("".join(f"{c}/v_{c}_g{fold:02d}_c01.avi\r\n" for c in CLASSES))
    return videos, lists


def build_ucf(ucf_layout, out: Path, *options: str) -> dict:
    videos, lists = ucf_layout
    invoke("build-dataset", "ucf101", "--source", str(videos), "--annotations", str(lists), "--out", str(out),
           "--no-card", "--workers", "2", "--short-side", "64", *options)
    return json.loads((out / "dataset.json").read_text())


def test_ucf101_defaults_keep_every_listed_video_and_report_coverage(ucf_layout, tmp_path):
    info = build_ucf(ucf_layout, tmp_path / "ucf")
    assert info["preprocessing"]["fps"] == "native" and info["preprocessing"]["av_filters"] is False
    full = lambda n: {"expected": n, "available": n}  # noqa: E731
    assert info["folds"] == {f: {"train": full(9), "test": full(3)} for f in ("1", "2", "3")}
    shown = run_cli("inspect", str(tmp_path / "ucf"))
    assert "official splits" in shown.output and "100.0%" in shown.output
    from avtools.inspect import iter_samples

    metas = []
    for shard in sorted((tmp_path / "ucf").glob("*.tar")):
        with open(shard, "rb") as stream:
            metas += [(json.loads(s["json"]), set(s) - {"__key__"}) for s in iter_samples(stream)]
    assert len(metas) == 12
    for meta, members in metas:
        index = int(meta["clip_id"].split("_g")[1][:2]) - 1
        # the videos' own rate, every frame (AVI starts the first frame at 0.04-0.08 s: held from 0)
        assert meta["fps"] == 25.0 and 50 <= meta["n_frames"] <= 52
        assert meta["has_audio"] == (SOUND[index] != "none") and ("wav" in members) == meta["has_audio"]
    out = tmp_path / "r.json"
    evaluated = run_cli("eval", "ucf101", "--data", str(tmp_path / "ucf"), "--protocol", "knn", *TINY,
                        "--set", "protocol.layer=gap", "--out", str(out))
    assert evaluated.exit_code == 0, evaluated.output
    assert "warning" not in evaluated.output
    (row,) = results(out)["rows"]
    assert row["extra"]["coverage"] == {"train": full(9) | {"read": 9}, "test": full(3) | {"read": 3}}


def test_forced_av_filters_leave_the_splits_incomplete_and_eval_warns(ucf_layout, tmp_path):
    info = build_ucf(ucf_layout, tmp_path / "ucf-av", "--av-filters")
    assert info["failures"] == {"no_audio": 3, "silent_audio": 3}
    assert info["folds"]["1"] == {"train": {"expected": 9, "available": 3}, "test": {"expected": 3, "available": 3}}
    evaluated = run_cli("eval", "ucf101", "--data", str(tmp_path / "ucf-av"), "--protocol", "knn", *TINY,
                        "--set", "protocol.layer=gap", "--out", str(tmp_path / "r.json"))
    assert evaluated.exit_code == 0, evaluated.output
    assert "warning: ucf101 split 1 (video) covers 3/9 train samples" in evaluated.output
    (row,) = results(tmp_path / "r.json")["rows"]
    assert row["extra"]["coverage"]["train"] == {"expected": 9, "available": 3, "read": 3}


def test_native_frame_rate_gives_protocols_their_own_sampling(ucf_layout, tmp_path):
    """16 fps clips from 25 fps frames take every 1.5625th frame; retrieval's clips are consecutive frames."""
    from avcl.data.views import ViewSpec, plan_clips

    rng = np.random.default_rng(0)
    (at16,), _ = plan_clips(ViewSpec(clips=1, test_clips=1, frames=8, fps=16.0), 50, 25.0, rng)
    assert at16.indices.tolist() == [int(round(i * 25 / 16)) + at16.indices[0] for i in range(8)]
    (native,), _ = plan_clips(ViewSpec(clips=1, test_clips=1, frames=8), 50, 25.0, rng)
    assert np.diff(native.indices).tolist() == [1] * 7


def test_eval_refuses_a_dataset_built_as_another(timecoded_dataset):
    result = run_cli("eval", "kinetics-sounds32", "--data", str(timecoded_dataset), "--protocol", "knn", *TINY)
    assert result.exit_code == 2
    assert "holds a 'folder' dataset" in result.output and "'kinetics-sounds32'" in result.output
    assert "Traceback" not in result.output


def test_a_protocol_the_dataset_cannot_serve_is_refused(timecoded_dataset):
    result = run_cli("eval", "folder", "--data", str(timecoded_dataset), "--protocol", "esc50", *TINY)
    assert result.exit_code == 2 and "cannot be asked of folder" in result.output


@pytest.fixture(scope="module")
def sharded_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "demo"
    invoke("build-dataset", "demo", "--out", str(out), "--no-card", "--workers", "2", "--samples-per-shard", "6")
    return out


def test_the_cache_knows_the_shards_and_a_missing_shard_is_a_shortfall(sharded_demo, tmp_path):
    demo_dataset = sharded_demo
    same_json = tmp_path / "same-json"
    shutil.copytree(demo_dataset, same_json)
    first, second = sorted(same_json.glob("train-*.tar"))[:2]
    shutil.copyfile(second, first)  # other samples under the same name: dataset.json is byte for byte the same
    assert (same_json / "dataset.json").read_bytes() == (demo_dataset / "dataset.json").read_bytes()
    cache = ["--cache-dir", str(tmp_path / "cache")]
    args = ["demo", "--protocol", "knn", "--modality", "video", *TINY, "--set", "protocol.layer=gap", *cache]
    invoke("eval", "--data", str(demo_dataset), *args, "--out", str(tmp_path / "a.json"))
    invoke("eval", "--data", str(same_json), *args, "--out", str(tmp_path / "b.json"))
    assert results(tmp_path / "b.json")["cache"] == {"hits": 0, "misses": 2}
    missing = tmp_path / "missing"
    shutil.copytree(demo_dataset, missing)
    sorted(missing.glob("train-*.tar"))[0].unlink()
    evaluated = run_cli("eval", "--data", str(missing), *args, "--out", str(tmp_path / "c.json"))
    assert evaluated.exit_code == 0, evaluated.output
    coverage = results(tmp_path / "c.json")["rows"][0]["extra"]["coverage"]["train"]
    assert coverage["read"] < coverage["available"] == coverage["expected"]
    assert f"covers {coverage['read']}/{coverage['expected']} train" in evaluated.output


def test_a_folder_with_nothing_but_dataset_json_is_refused(demo_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    shutil.copy(demo_dataset / "dataset.json", tmp_path / "empty" / "dataset.json")
    result = run_cli("eval", "demo", "--data", str(tmp_path / "empty"), "--protocol", "knn", *TINY,
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2 and "shard(s) holding its train samples are missing" in result.output, result.output


def test_single_class_data_is_refused(tmp_path):
    from avcl.data.schema import DatasetInfo
    from avcl.eval.datasets import DATASETS, EvalDataError
    from avcl.eval.engine import Engine
    from avcl.extract import Features

    engine = Engine.__new__(Engine)
    engine.dataset, engine.splits, engine.read, engine.url = DATASETS.get("folder"), ["train", "val"], {}, "data"
    engine.info = DatasetInfo.from_json(json.dumps(
        {"name": "folder", "splits": {"train": {"classes": {"a": {}}, "total": 2, "available": 2, "shards": []},
                                     "val": {"classes": {"a": {}}, "total": 1, "available": 1, "shards": []}}}))
    features = Features(np.array(["a", "b", "c"]), np.zeros(3, np.int64), np.full((3, 3), -1), np.zeros((3, 2)),
                        splits=np.array(["train", "train", "val"]))
    with pytest.raises(EvalDataError, match="same class"):
        engine.fold_indices(features, "1", "video")


# --- protocols against their references ----------------------------------------------------------------


def ucf101_sized_features(seed: int = 0, n_train: int = 9537, n_test: int = 3783, classes: int = 101, dim: int = 512):
    """Features of UCF101 split 1's size (9,537 train, 3,783 test videos, 101 classes, 512-d) and conditioning:
    non-negative (post-ReLU GAP), correlated through a 128-d latent, classes overlapping enough for ~60 % top-1,
    where scikit-learn's LinearSVC at TCGL's settings agreed with liblinear on 81 % of test rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, 128))
    mix = rng.normal(0, 1, (128, dim)) / np.sqrt(128)
    y = np.concatenate([np.arange(classes), rng.integers(0, classes, n_train + n_test - classes)])
    x = np.maximum((centres[y] + rng.normal(0, 3.0, (len(y), 128))) @ mix, 0)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.slow
def test_linear_svm_tcgl_predicts_as_liblinear_itself_at_ucf101_size():
    """TCGL's call, `train(y, x, "-s 2 -c 100")` with liblinear's defaults (no bias), run here by liblinear's
    own package, against the protocol's classifier on a problem as large and as hard as UCF101 split 1."""
    from liblinear.liblinearutil import predict, train

    x_train, y_train, x_test, y_test = ucf101_sized_features()
    params = TCGLSVMParams()
    fitted = classify.fit(x_train, y_train, params.classifier, params.c_grid, standardize=params.standardize)
    ours = fitted.scores(x_test, 101).argmax(1)
    model = train(y_train.astype(float), x_train, "-s 2 -c 100 -q")
    assert model.bias < 0  # no bias term, as TCGL's call
    theirs = np.array(predict([], x_test, model, "-q")[0], dtype=int)
    assert 0.3 < (theirs == y_test).mean() < 0.9  # neither trivial nor hopeless
    assert (ours == theirs).mean() >= 0.99, (ours == theirs).mean()
    assert classify.library("svm-tcgl").startswith("liblinear-official ")


def test_liblinear_two_class_decision_values_keep_their_sign():
    """Two classes: liblinear returns one value, positive for its first label; scores must still pick it."""
    from liblinear.liblinearutil import predict, train

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    x = rng.normal(0, 1, (300, 8)) + y[:, None] * 0.8
    fitted = classify.fit(x[:200], y[:200], "svm-tcgl", (100.0,), standardize=False)
    theirs = np.array(predict([], x[200:], train(y[:200].astype(float), x[:200], "-s 2 -c 100 -q"), "-q")[0], int)
    np.testing.assert_array_equal(fitted.scores(x[200:], 2).argmax(1), theirs)


def test_fingerprint_pools_only_the_families_that_change_the_modality(demo_dataset, tmp_path):
    families = '["jpeg","blur","audio-gain","trim"]'
    invoke("eval", "demo", "--data", str(demo_dataset), "--protocol", "fingerprint", "--modality", "video,audio",
           *TINY, "--set", f"protocol.families={families}", "--cache-dir", str(tmp_path / "c"),
           "--out", str(tmp_path / "fp.json"))
    rows = results(tmp_path / "fp.json")["rows"]
    by = {(r["modality"], r["extra"]["family"]): r for r in rows}
    for modality, changing in (("video", ["jpeg", "blur", "trim"]), ("audio", ["audio-gain", "trim"])):
        pooled = by[(modality, "all")]
        assert pooled["extra"]["families"] == changing
        assert pooled["extra"]["queries"] == sum(by[(modality, f)]["extra"]["queries"] for f in changing)
        for metric in ("R@1", "R@5", "mAP"):  # brute force: each family's queries weigh their count
            brute = sum(by[(modality, f)]["metrics"][metric] * by[(modality, f)]["extra"]["queries"] for f in changing)
            assert pooled["metrics"][metric] == pytest.approx(brute / pooled["extra"]["queries"])
    assert by[("audio", "blur")]["extra"]["identical"] == by[("audio", "blur")]["extra"]["queries"]


def test_knn_reports_top5_from_the_same_votes(demo_dataset, tmp_path):
    invoke("eval", "demo", "--data", str(demo_dataset), "--protocol", "knn", "--modality", "video", *TINY,
           "--set", "protocol.layer=gap", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "k.json"))
    metrics = results(tmp_path / "k.json")["rows"][0]["metrics"]
    assert set(metrics) == {f"top{n}@k{k}" for n in (1, 5) for k in (1, 20, 200)}
    assert all(metrics[f"top5@k{k}"] >= metrics[f"top1@k{k}"] for k in (1, 20, 200))
    assert metrics["top5@k1"] == metrics["top1@k1"]  # DINO: one neighbour names one class; no filler counts


def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes):
    """DINO's `knn_classifier` (eval_knn.py) as published, one chunk, on L2-normalised features; its topk and
    sort leave the order of ties to the kernel, so here both are stable (index order), as avtools promises."""
    train_features = train_features.t()
    similarity = torch.mm(test_features, train_features)
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k]
    distances, indices = similarity.gather(1, order), order
    batch_size = test_labels.shape[0]
    candidates = train_labels.view(1, -1).expand(batch_size, -1)
    retrieved_neighbors = torch.gather(candidates, 1, indices)
    retrieval_one_hot = torch.zeros(batch_size * k, num_classes)
    retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
    distances_transform = distances.clone().div_(T).exp_()
    probs = torch.sum(torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes),
                                distances_transform.view(batch_size, -1, 1)), 1)
    _, predictions = probs.sort(dim=1, descending=True, stable=True)
    correct = predictions.eq(test_labels.data.view(-1, 1))
    top1 = correct.narrow(1, 0, 1).sum().item()
    top5 = correct.narrow(1, 0, min(5, k)).sum().item()
    return top1 * 100.0 / batch_size, top5 * 100.0 / batch_size


@pytest.mark.parametrize("ties", [False, True])
def test_knn_top1_and_top5_equal_dinos_knn_classifier(ties):
    from avcl.eval.knn import knn_metrics
    from avcl.neighbours import top_neighbours

    rng = np.random.default_rng(3)
    classes, ks = 12, (1, 2, 3, 4, 5, 10, 20)
    centres = rng.normal(0, 1, (classes, 16))
    y = rng.integers(0, classes, 700)
    x = centres[y] + rng.normal(0, 1.2, (700, 16))
    if ties:  # coarse features (many equal similarities) and train rows repeated under another label
        x = np.round(x)
        x[100:200], y[100:200] = x[:100], (y[:100] + 1) % classes
    x = torch.nn.functional.normalize(torch.from_numpy(x).float(), dim=1)
    y = torch.from_numpy(y)
    train, test = slice(0, 500), slice(500, 700)
    top, index = top_neighbours(x[test], x[train], max(ks))
    ours = knn_metrics(top, y[train][index], y[test], ks, classes, 0.07)
    for k in ks:
        top1, top5 = dino_knn_classifier(x[train], y[train], x[test], y[test], k, 0.07, classes)
        assert ours[f"top1@k{k}"] == pytest.approx(top1) and ours[f"top5@k{k}"] == pytest.approx(top5), k


def test_stable_top_k_equals_a_stable_sort_with_ties():
    from avcl.neighbours import stable_top_k

    sims = torch.randint(0, 4, (50, 300)).float() / 4  # many exact ties
    for k in (1, 7, 64, 300):
        values, index = stable_top_k(sims, k)
        ref_values, ref_index = torch.sort(sims, dim=1, descending=True, stable=True)
        assert torch.equal(index, ref_index[:, :k]) and torch.equal(values, ref_values[:, :k])


# --- results files side by side ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results_folder(demo_dataset, tmp_path_factory):
    """The demo's own layout: results of a trained run and of random init in one folder, plus a third file."""
    root = tmp_path_factory.mktemp("results")
    run = root / "run"
    invoke("train", "--method", "xmodal", "--data", str(demo_dataset), "--out", str(run), "--max-steps", "2",
           "--batch-size", "4", "--set", "method.width=4", "--set", "data.workers=0", "--set", "data.frames=8",
           "--device", "cpu")
    common = ["--protocol", "knn", "--modality", "video", "--set", "protocol.layer=gap", *SMALL_VIEWS,
              "--cache-dir", str(root / "cache")]
    invoke("eval", "demo", "--data", str(demo_dataset), "--checkpoint", str(run), *common,
           "--out", str(root / "results-pretrained-knn.json"))
    invoke("eval", "demo", "--data", str(demo_dataset), "--set", "method.width=4", *common,
           "--out", str(root / "results-random-knn.json"))
    invoke("eval", "demo", "--data", str(demo_dataset), "--set", "method.width=4", *common, "--set", "protocol.tau=0.1",
           "--out", str(root / "results-random-knn-tau.json"))
    return root, run


def cells(table) -> dict[str, list[str]]:
    return {column.header: list(column.cells) for column in table.columns}


def test_compare_two_files_of_one_folder_keeps_two_columns(results_folder):
    root, _ = results_folder
    pretrained, random = root / "results-pretrained-knn.json", root / "results-random-knn.json"
    table = report.compare([pretrained, random], Console(width=250), baseline=str(random))
    columns = cells(table)
    assert "xmodal run step 2" in columns and "xmodal random step 0" in columns
    for name, path in (("xmodal run step 2", pretrained), ("xmodal random step 0", random)):
        assert columns[name] == [f"{v:.2f}" for v in results(path)["rows"][0]["metrics"].values()]
    gain = columns["gain xmodal run step 2 vs xmodal random step 0"]
    expected = [a - b for a, b in zip(results(pretrained)["rows"][0]["metrics"].values(),
                                      results(random)["rows"][0]["metrics"].values())]
    assert gain == [f"{g:+.2f}" for g in expected]


def test_compare_a_three_file_glob_and_settings_warnings(results_folder):
    root, _ = results_folder
    files = sorted(str(p) for p in root.glob("results-*.json"))  # what the shell makes of results-*.json
    result = run_cli("eval", "--compare", *files, "--baseline", "2")
    assert result.exit_code == 0, result.output
    # two random-init files share a run name: the ends of their paths that differ name their columns
    names = [c.name for c in report.columns([Path(f) for f in files])]
    assert names == ["xmodal run step 2", "results-random-knn-tau.json", "results-random-knn.json"]
    assert all(name in result.output for name in names)
    assert "demo 1 knn (gap) video: protocol settings differ between columns: params.tau" in result.output


def test_compare_names_a_file_that_is_not_results(results_folder, tmp_path):
    root, _ = results_folder
    demo_json = tmp_path / "demo.json"
    demo_json.write_text(json.dumps({"method": "xmodal", "steps": 150, "rows": [{"protocol": "linear", "random": 22.7}]}))
    result = run_cli("eval", "--compare", str(root / "results-random-knn.json"), "--compare", str(demo_json))
    assert result.exit_code == 2 and str(demo_json) in result.output and "not an avtools results file" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    (tmp_path / "broken.json").write_text("{")
    result = run_cli("eval", "--compare", str(tmp_path / "broken.json"))
    assert result.exit_code == 2 and "broken.json" in result.output


def test_results_rows_carry_provenance_and_typed_requests(results_folder):
    root, _ = results_folder
    document = results(root / "results-random-knn.json")
    request = document["request"]
    assert request["folds"] is None and "protocol.layer=gap" in request["overrides"]
    assert request["options"]["batch_size"] == 8
    stamp = document["rows"][0]["provenance"]
    assert stamp["avtools"] and stamp["time"].endswith("+00:00") and stamp["command"].startswith("avtools")
    import numpy
    import sklearn

    assert stamp["packages"]["numpy"] == numpy.__version__ and stamp["packages"]["scikit-learn"] == sklearn.__version__
    assert stamp["packages"]["torch"] == torch.__version__.split("+")[0] or stamp["packages"]["torch"] == torch.__version__
    assert stamp["git_commit"] is None or len(stamp["git_commit"].split("+")[0]) == 40
    assert len(stamp["data_digest"]) == 16
    assert stamp["config"]["protocol"]["layer"] == "gap" and stamp["config"]["model"]["method"]["width"] == 4


def test_published_rows_sit_beside_runs_of_the_same_network_input_and_splits():
    refs = report.published()
    row = {"dataset": "ucf101", "protocol": "finetune", "modality": "video", "split": "mean", "extra": {},
           "settings": {"frames": 30, "size": 112}, "encoder": {"video_backbone": "r2plus1d_18"}}
    assert {r["method"] for r in report.matching_references(row, refs)} == {"GDT"}  # torchvision's network, 30x112
    assert not report.matching_references(dict(row, split="1"), refs)  # GDT's number is the mean of splits 1-3
    assert not report.matching_references(dict(row, settings={"frames": 16, "size": 112}), refs)
    differ = dict((r["method"], d) for r, d in report.related_references(row, refs))
    assert "network r2plus1d_18_avid (yours r2plus1d_18)" in differ["AVID"]
    assert "network r2plus1d_18_xdc (yours r2plus1d_18)" in differ["XDC"]
    vcop = dict(row, settings={"frames": 16, "size": 112}, encoder={"video_backbone": "r2plus1d_vcop"})
    assert {r["method"] for r in report.matching_references(vcop, refs)} == {"VCOP", "VCP", "PRP"}  # IIC: residual
    assert not report.matching_references(dict(vcop, encoder={"video_backbone": "r2plus1d_10"}), refs)
    retrieval = dict(row, protocol="retrieval", split="1", settings={"frames": 16, "size": 112},
                     encoder={"video_backbone": "r3d_10"})
    assert {r["method"] for r in report.matching_references(dict(retrieval, extra={"layer": "conv5-max-vcop"}), refs)} \
        == {"random init", "VCOP", "VCP", "PRP"}  # IIC's 36.5 joins RGB and residual features
    assert not report.matching_references(dict(retrieval, extra={"layer": "conv5-max-tcgl"}), refs)
    audio = {"dataset": "esc50", "protocol": "esc50-crisscross", "modality": "audio", "split": "mean", "extra": {},
             "settings": {}, "encoder": {"audio_backbone": "resnet18_2d"}}
    assert not report.related_references(audio, refs)  # CrissCross's published procedure is another protocol
    console = Console(width=700, record=True)
    report.print_references([row], console, everything=True)
    text = console.export_text()
    assert "Morgado" in text and "AVID-CMA @ 4538e40" in text and "differs in" in text


# --- checkpoints of the field ----------------------------------------------------------------------------


def test_a_torchvision_layout_state_dict_evaluates_end_to_end(demo_dataset, tmp_path):
    torch.manual_seed(0)
    state = models.build("r2plus1d_18", width=4, num_classes=400).state_dict()  # fc included, as torchvision's
    torch.save(state, tmp_path / "r2plus1d_18.pth")
    out = tmp_path / "r.json"
    invoke("eval", "demo", "--data", str(demo_dataset), "--checkpoint", str(tmp_path / "r2plus1d_18.pth"),
           "--protocol", "knn", "--modality", "video", "--set", "protocol.layer=gap", *SMALL_VIEWS,
           "--cache-dir", str(tmp_path / "c"), "--out", str(out))
    (row,) = results(out)["rows"]
    assert row["encoder"]["method"] == "torchvision" and row["encoder"]["video_backbone"] == "r2plus1d_18"
    encoders = load_encoders(str(tmp_path / "r2plus1d_18.pth"))
    loaded = encoders.method.video.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert encoders.config.video.mean == (0.43216, 0.394666, 0.37645)  # the kinetics preset


def test_export_then_eval_equals_eval_of_the_run(results_folder, demo_dataset, tmp_path):
    _, run = results_folder
    invoke("export", str(run), "--out", str(tmp_path / "export"))
    common = ["--protocol", "linear", "--modality", "video", *SMALL_VIEWS, "--cache-dir", str(tmp_path / "c")]
    invoke("eval", "demo", "--data", str(demo_dataset), "--checkpoint", str(run), *common, "--out", str(tmp_path / "a.json"))
    for exported in (tmp_path / "export", tmp_path / "export" / "video_encoder.pt"):
        invoke("eval", "demo", "--data", str(demo_dataset), "--checkpoint", str(exported), *common,
               "--out", str(tmp_path / "b.json"))
        a, b = results(tmp_path / "a.json")["rows"][0], results(tmp_path / "b.json")["rows"][0]
        assert a["metrics"] == b["metrics"] and b["encoder"]["method"] == "xmodal" and b["encoder"]["step"] == 2


def test_an_unknown_layout_lists_the_unmatched_keys(tmp_path):
    state = {f"encoder.block{i}.weight": torch.zeros(4, 3, 3, 3) for i in range(3)}
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"encoder\.block0\.weight") as error:
        load_encoders(str(tmp_path / "odd.pth"))
    assert "--checkpoint-format" in str(error.value)
    result = run_cli("eval", "folder", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "odd.pth"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    with pytest.raises(CheckpointError, match="outside the video and audio networks"):
        torch.save({"model": {"video_network.base.stem.0.weight": torch.zeros(1), "decoder.w": torch.zeros(1)}},
                   tmp_path / "gdt-like.pth")
        load_encoders(str(tmp_path / "gdt-like.pth"), checkpoint_format="gdt")


def test_shard_stamps_over_s3_and_http_change_with_the_content(timecoded_dataset, s3_bucket, tmp_path):
    """The cache key's view of the data on the wire: S3 ETags and HTTP lengths/validators; None when missing."""
    import boto3

    from avcl.data.schema import DatasetInfo
    from avcl.data.sources import shard_stamps
    from tests.support.httpserver import MediaServer

    names = DatasetInfo.from_json((timecoded_dataset / "dataset.json").read_bytes()).shard_names()
    client = boto3.client("s3")
    for name in names:
        client.upload_file(str(timecoded_dataset / name), s3_bucket, f"tc/{name}")
    before = shard_stamps(f"s3://{s3_bucket}/tc", names + ["absent.tar"])
    assert before["absent.tar"] is None and all(before[n] and before[n][0] > 0 for n in names)
    client.upload_file(str(timecoded_dataset / names[1]), s3_bucket, f"tc/{names[0]}")  # other content
    after = shard_stamps(f"s3://{s3_bucket}/tc", names)
    assert after[names[0]] != before[names[0]] and after[names[1]] == before[names[1]]
    with MediaServer(timecoded_dataset) as server:
        served = shard_stamps(server.url(""), names + ["absent.tar"])
    assert served["absent.tar"] is None
    assert all(int(served[n][0]) == (timecoded_dataset / n).stat().st_size for n in names)


def test_expected_counts_of_the_real_official_splits(tmp_path):
    from avtools.ledger import fold_coverage
    from avtools.recipes import RecipeOptions, plan
    from tests.conftest import SHARED

    clips = plan("ucf101", RecipeOptions(source=tmp_path, annotations=[str(SHARED / "ucf101" / "ucfTrainTestlist")])).clips
    folds = fold_coverage(clips, {})
    expected = {f: (roles["train"]["expected"], roles["test"]["expected"]) for f, roles in folds.items()}
    assert expected == {"1": (9537, 3783), "2": (9586, 3734), "3": (9624, 3696)}
    assert all(r["available"] == 0 for roles in folds.values() for r in roles.values())


def test_a_paper_table_in_markdown_latex_and_csv(results_folder, tmp_path):
    """One row per model, one column per dataset/protocol/metric, a published row that compares, marked with
    its citation key; the tau run's differing setting is a warning line beside the table."""
    import csv
    import io

    from avcl.eval.paper import paper_table

    root, _ = results_folder
    runs = [root / "results-pretrained-knn.json", root / "results-random-knn.json", root / "results-random-knn-tau.json"]
    ucf = results(runs[0])
    ucf["rows"] = [dict(ucf["rows"][0], dataset="ucf101", protocol="finetune", split="mean", extra={},
                        metrics={"top1": 55.5}, settings={"frames": 30, "size": 112},
                        encoder=dict(ucf["rows"][0]["encoder"], video_backbone="r2plus1d_18"))]
    (tmp_path / "ucf.json").write_text(json.dumps(ucf))
    markdown, warnings = paper_table([*runs, tmp_path / "ucf.json"], "markdown", references=True)
    lines = markdown.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    metric, value = next(iter(results(runs[0])["rows"][0]["metrics"].items()))
    knn = next(c for c in header if c.startswith("demo knn") and c.endswith(f" {metric}"))
    assert header[:4] == ["method", "network", "pretrained on", "checkpoint"] and "ucf101 finetune top1" in header
    by_model = {tuple(c.strip() for c in line.strip("|").split("|"))[:4]: line for line in lines[2:]}
    assert ("xmodal", "r2plus1d_18", "demo", "last.pt") in by_model  # the trained run (pretrained on demo)
    assert {m[3] for m in by_model if m[0] == "xmodal" and m[3].startswith("random init")} == {
        "random init [results-random-knn]", "random init [results-random-knn-tau]"}  # one model, two files
    gdt = next(line for model, line in by_model.items() if model[0] == "GDT")
    assert "published [patrick2021]" in gdt and "90.9" in gdt
    row = [c.strip() for c in by_model[("xmodal", "r2plus1d_18", "demo", "last.pt")].strip("|").split("|")]
    assert row[header.index(knn)] == f"{value:.1f}"
    assert any("tau" in line for line in warnings)
    latex, _ = paper_table(runs, "latex")
    assert latex.startswith(r"\begin{tabular}{llll") and r"\end{tabular}" in latex and r"pretrained on" in latex
    table = list(csv.reader(io.StringIO(paper_table(runs, "csv")[0])))
    assert table[0][:4] == ["method", "network", "pretrained on", "checkpoint"] and len(table) >= 3

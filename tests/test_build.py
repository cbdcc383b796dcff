"""`avtools build-dataset` end to end: real yt-dlp, real shards read by webdataset, resume, partitions, S3."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from avtools.cli import app
from avtools.inspect import iter_samples
from tests.conftest import MEDIA

runner = CliRunner()

# (youtube_id, label, start, end) served by the `served` fixture; the expected ledger outcome
ROWS = [
    ("tc_a", "bowling", 2, 6, "ok"),
    ("tc_b", "singing", 20, 24, "ok"),
    ("tc_a", "singing", 10, 14, "ok"),
    ("mmaction2_demo", "bowling", 0, 5, "no_audio"),
    ("decord_corrupted", "bowling", 0, 5, "corrupt"),
    ("missing", "singing", 0, 5, "not_found"),
    ("html_page", "singing", 0, 5, "not_media"),
    ("limited", "bowling", 3, 7, "ok"),
    ("tc_b", "laughing", 0, 3, "ok"),
    ("moviepy_video_with_failing_audio", "laughing", 1, 5, "ok"),
]


def write_csv(path: Path, rows=ROWS) -> Path:
    lines = ["label,youtube_id,time_start,time_end,split,is_cc"]
    lines += [f"{label},{ytid},{s},{e},{'val' if i % 3 == 0 else 'train'},0" for i, (ytid, label, s, e, _) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_args(served, csv: Path, out: str, *extra: str) -> list[str]:
    return ["build-dataset", "kinetics-sounds32", "--out", out, "--annotations", str(csv),
            "--url-template", served.url("{youtube_id}.mp4"), "--pad", "1", "--retries", "2", "--retry-wait", "0.05",
            "--short-side", "64", "--samples-per-shard", "2", "--workers", "2", *extra]


def read_dataset(out: Path) -> dict[str, dict]:
    """Every sample of every shard the dataset lists, read with the real webdataset library."""
    import webdataset as wds

    info = json.loads((out / "dataset.json").read_text())
    samples = {}
    for split in info["splits"].values():
        for shard in split["shards"]:
            for sample in wds.WebDataset(str(out / shard["name"]), shardshuffle=False):
                assert sample["__key__"] not in samples
                samples[sample["__key__"]] = {k: v for k, v in sample.items() if not k.startswith("__")}
            assert sum(1 for _ in wds.WebDataset(str(out / shard["name"]), shardshuffle=False)) == shard["samples"]
    return samples


def ledger(out: Path) -> dict[str, tuple]:
    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    return {r["clip_id"]: (r["status"], r["reason"], r["split"], r["label"]) for r in rows}


@pytest.fixture
def misbehaving(served):
    served.missing.add("missing.mp4")
    served.html_pages.add("html_page.mp4")
    shutil.copy(served.root / "tc_a.mp4", served.root / "limited.mp4")
    served.rate_limited["limited.mp4"] = 2
    yield served
    served.missing.discard("missing.mp4")
    served.html_pages.discard("html_page.mp4")
    served.rate_limited.pop("limited.mp4", None)


@pytest.mark.slow
def test_kinetics_sounds32_build(tmp_path, misbehaving):
    out = tmp_path / "ks32"
    result = runner.invoke(app, build_args(misbehaving, write_csv(tmp_path / "ann.csv"), str(out)))
    assert result.exit_code == 0, result.output
    rows = ledger(out)
    expected = {f"{y}_{s:06d}_{e:06d}": outcome for y, _, s, e, outcome in ROWS}
    assert {cid: (r[0] if r[0] == "ok" else r[1]) for cid, r in rows.items()} == expected
    samples = read_dataset(out)
    assert set(samples) == {cid for cid, o in expected.items() if o == "ok"}
    meta = samples["tc_a_000002_000006"]["json"]
    meta = json.loads(meta)
    assert (meta["label"], meta["label_index"], meta["n_frames"], meta["n_audio_samples"]) == ("bowling", 2, 64, 64000)
    assert sorted(samples["tc_a_000002_000006"]) == ["json", "mjpeg", "wav"]
    mjpeg = samples["tc_a_000002_000006"]["mjpeg"]
    assert len(meta["frame_offsets"]) == 65 and meta["frame_offsets"][-1] == len(mjpeg)
    with av.open(io.BytesIO(mjpeg), format="mjpeg") as container:  # the packed frames are a playable MJPEG stream
        assert sum(1 for _ in container.decode(video=0)) == 64
    info = json.loads((out / "dataset.json").read_text())
    assert info["complete"] and info["counts"] == {"total": 10, "available": 6, "settled": 10, "duplicates_in_annotations": 0}
    assert info["splits"]["train"]["classes"]["singing"] == {"available": 2, "total": 3}
    assert info["failures"] == {"corrupt": 1, "no_audio": 1, "not_found": 1, "not_media": 1}
    assert (out / "card.png").stat().st_size > 10_000
    assert not list(out.glob("*.tmp")) and not list((out / ".staging").iterdir())
    described = runner.invoke(app, ["inspect", str(out), "--json"])
    assert json.loads(described.stdout)["splits"]["val"]["available"] == 2
    table = runner.invoke(app, ["inspect", str(out)]).stdout
    assert "members json, mjpeg, wav" in table and "offsets)" in table  # one line for the offsets, not one each


def test_rerun_skips_settled_clips(tmp_path, served):
    csv = write_csv(tmp_path / "ann.csv", ROWS[:3])
    out = tmp_path / "ds"
    assert runner.invoke(app, build_args(served, csv, str(out))).exit_code == 0
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    second = runner.invoke(app, build_args(served, csv, str(out)))
    assert "0 ok, 0 failed" in second.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == shards  # finished shards are never rewritten
    changed = runner.invoke(app, build_args(served, csv, str(out), "--fps", "8"))
    assert changed.exit_code == 2 and "fps 16.0 -> 8.0" in changed.output and "new --out" in changed.output
    (out / "ledger" / "settings.json").unlink()  # an output of an older avtools: dataset.json alone says how
    info = json.loads((out / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps(info | {"format": "avtools-webdataset/1"}))
    older = runner.invoke(app, build_args(served, csv, str(out)))
    assert older.exit_code == 2 and "format avtools-webdataset/1 -> avtools-webdataset/2" in older.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == shards


def folder_of_media(root: Path) -> Path:
    for i, name in enumerate(["mmaction2_test.avi", "moviepy_video_with_failing_audio.mp4", "torchcodec_nasa_13013.mp4",
                              "moviepy_bbb_432_433.webm", "mmaction2_test.avi", "torchcodec_nasa_13013.mp4"]):
        cls = root / ("alpha" if i % 2 else "beta")
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copy(MEDIA / name, cls / f"clip{i}{Path(name).suffix}")
    return root


FOLDER_ARGS = ["--short-side", "64", "--fps", "8", "--samples-per-shard", "1", "--min-duration", "0.5", "--val-fraction", "0.4"]


def test_killed_and_resumed_build_equals_an_uninterrupted_one(tmp_path):
    source = folder_of_media(tmp_path / "src")
    whole = tmp_path / "whole"
    assert runner.invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(whole), *FOLDER_ARGS]).exit_code == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "avtools", "build-dataset", "folder", "--source", str(source), "--out", str(killed),
           "--workers", "1", *FOLDER_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((killed / "ledger").glob("*.parquet"))) < 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "dataset.json").exists()  # it really died mid-build
    result = runner.invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(killed), *FOLDER_ARGS])
    assert result.exit_code == 0 and "resuming" in result.output
    assert read_dataset(killed) == read_dataset(whole)
    assert ledger(killed) == ledger(whole)


def test_partitions_add_up_to_the_whole(tmp_path):
    source = folder_of_media(tmp_path / "src")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert runner.invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(whole), *FOLDER_ARGS]).exit_code == 0
    first = runner.invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(parts), "--partition", "0/2", *FOLDER_ARGS])
    assert first.exit_code == 0
    assert not json.loads((parts / "dataset.json").read_text())["complete"] and not (parts / "card.png").exists()
    second = runner.invoke(app, ["build-dataset", "folder", "--source", str(source), "--out", str(parts), "--partition", "1/2", *FOLDER_ARGS])
    assert second.exit_code == 0
    assert json.loads((parts / "dataset.json").read_text())["complete"] and (parts / "card.png").exists()
    assert read_dataset(parts) == read_dataset(whole)
    assert ledger(parts) == ledger(whole)


def test_output_to_s3(tmp_path, served, s3_bucket):
    import boto3

    csv = write_csv(tmp_path / "ann.csv", ROWS[:3] + ROWS[4:5])
    result = runner.invoke(app, build_args(served, csv, f"s3://{s3_bucket}/ks32"))
    assert result.exit_code == 0, result.output
    s3 = boto3.client("s3")
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert {"ks32/dataset.json", "ks32/ledger.parquet", "ks32/card.png"} <= names
    info = json.loads(s3.get_object(Bucket=s3_bucket, Key="ks32/dataset.json")["Body"].read())
    assert info["counts"]["available"] == 3 and info["failures"] == {"corrupt": 1}
    shard = info["splits"]["train"]["shards"][0]
    body = s3.get_object(Bucket=s3_bucket, Key=f"ks32/{shard['name']}")["Body"]
    assert sum(1 for _ in iter_samples(body)) == shard["samples"]
    described = runner.invoke(app, ["inspect", f"s3://{s3_bucket}/ks32", "--json"])
    assert json.loads(described.stdout)["counts"]["available"] == 3
    rerun = runner.invoke(app, build_args(served, csv, f"s3://{s3_bucket}/ks32"))
    assert "0 ok, 0 failed" in rerun.output  # resume reads the ledger back from the bucket


def test_bad_inputs_fail_fast_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["build-dataset", "kinetics-sounds32", "--out", str(tmp_path / "x"),
                                 "--annotations", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "nope.csv" in result.output
    result = runner.invoke(app, ["build-dataset", "folder", "--out", str(tmp_path / "x"), "--partition", "3/2"])
    assert result.exit_code != 0


def test_demo_dataset_builds_offline(tmp_path):
    result = runner.invoke(app, ["build-dataset", "demo", "--out", str(tmp_path / "demo"), "--short-side", "64"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "demo" / "dataset.json").read_text())
    assert info["complete"] and info["counts"]["available"] == info["counts"]["total"] == 32
    assert len(read_dataset(tmp_path / "demo")) == 32
    account = next(line for line in result.output.splitlines() if line.startswith("time per clip in a worker:"))
    assert all(f"{stage} " in account for stage in ("fetch", "decode", "scale", "resample", "jpeg", "write", "wait"))


def test_ledger_parts_are_compacted_and_read_the_same(tmp_path):
    """Many resumed runs leave many failure parts; compaction merges this partition's parts into one, the settled
    rows stay exactly what they were, other partitions' parts and the annotation part are left alone, and a run
    killed between writing the merged part and deleting the old ones reads the same."""
    from avcl.storage import LocalStore
    from avtools.ledger import COMPACT_ABOVE, Ledger, LedgerRow
    from avtools.shards import belongs_to

    store = LocalStore(tmp_path / "out")
    ledger = Ledger(store, "")
    for seq in range(3):
        ledger.commit_shard(f"train-{seq:06d}.tar", [LedgerRow(f"ok{seq}-{i}", "train", "a", "ok", shard=f"train-{seq:06d}.tar")
                                                     for i in range(5)])
    for run in range(COMPACT_ABOVE):
        ledger.run = f"20260101-{run:06d}"
        ledger.add(LedgerRow(f"bad{run % 7}", "train", "a", "failed", "network", "timed out", retryable=True,
                             finished_at=float(run)))
        ledger.flush()
    ledger.add(LedgerRow("ok0-0", "train", "a", "failed", "network", "", retryable=True, finished_at=1e12))
    ledger.flush()  # a later failure never overrides an ok row
    Ledger(store, "007-").commit_shard("train-007-000000.tar", [LedgerRow("other", "train", "a", "ok")])
    ledger.write_annotations([LedgerRow("ann.csv:3", "", None, "skipped", "bad_annotation", "why")])
    before = {k: (r.status, r.finished_at) for k, r in Ledger(store, "").load().items()}
    parts_before = len(ledger.parts())
    kept = store.get_bytes("ledger/train-000000.parquet")

    ledger.run = "20260102-000000"
    merged = ledger.compact(lambda name: belongs_to(name, "", {"train"}))
    assert merged == parts_before - 2  # all but the other partition's and the annotation part
    assert sorted(ledger.parts()) == ["ledger/annotations-rejected.parquet", "ledger/compacted-20260102-000000.parquet",
                                      "ledger/train-007-000000.parquet"]
    assert {k: (r.status, r.finished_at) for k, r in Ledger(store, "").load().items()} == before
    assert before["ok0-0"][0] == "ok"  # the settled row: ok beats a later failure, else the newest row
    assert all(before[f"bad{k}"] == ("failed", float(max(r for r in range(COMPACT_ABOVE) if r % 7 == k)))
               for k in range(7))
    store.put_bytes("ledger/train-000000.parquet", kept)  # killed before the old parts were deleted
    assert {k: (r.status, r.finished_at) for k, r in Ledger(store, "").load().items()} == before
    assert ledger.compact(lambda name: belongs_to(name, "", {"train"})) == 0  # two parts: under the bound


@pytest.mark.parametrize("template", ["http://127.0.0.1:9/{id}.mp4", "http://127.0.0.1:9/{0}.mp4", "http://h/{youtube_id"])
def test_a_url_template_that_cannot_be_filled_in_is_refused_before_the_build(tmp_path, template):
    result = CliRunner().invoke(app, ["build-dataset", "kinetics-sounds32", "--out", str(tmp_path / "out"),
                                      "--url-template", template])
    assert result.exit_code == 2 and "--url-template" in result.output and "{youtube_id}" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_folder_named_avtools_in_the_working_directory_does_not_reach_the_workers(tmp_path):
    from tests.support.timecoded import write_timecoded

    (tmp_path / "avtools").mkdir()  # e.g. the parent folder of a clone: a namespace package named avtools
    (tmp_path / "src" / "a").mkdir(parents=True)
    write_timecoded(tmp_path / "src" / "a" / "x.mp4", seconds=2, fps=8, size=(64, 48))
    done = subprocess.run([str(Path(sys.executable).with_name("avtools")), "build-dataset", "folder", "--source",
                           "src", "--out", "out", "--no-card", "--workers", "2", "--val-fraction", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "this run: 1 ok, 0 failed" in done.stdout + done.stderr, done.stderr

"""Data safety of `avtools build-dataset`: untrusted annotation rows, misbehaving media servers and killed builds
can neither misplace, overwrite, leak nor stall a build (real yt-dlp and ffmpeg against a loopback HTTP server,
real tars read by plain webdataset, moto S3 on the wire)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from avcl.data.schema import DatasetInfo
from avcl.eval.datasets import DATASETS
from avcl.eval.engine import EvalDataError, check_dataset_name
from avtools.cli import app
from avtools.inspect import iter_samples
from tests.conftest import MEDIA
from tests.support.httpserver import MediaServer
from tests.support.timecoded import write_timecoded

runner = CliRunner()
HEADER = "label,youtube_id,time_start,time_end,split"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Timecoded clips, an empty file, a truncated one, and `stall*.mp4` whose GET stalls after its headers."""
    root = tmp_path_factory.mktemp("media")
    write_timecoded(root / "tc_a.mp4", seconds=12, size=(96, 64))
    for name in ("tc_b", "tc_c", "tc_d", "stall", "stall0", "stall1", "stall2", "stall3"):
        shutil.copy(root / "tc_a.mp4", root / f"{name}.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes((root / "tc_a.mp4").read_bytes()[:1500])
    with MediaServer(root) as media:
        media.stalled.update({"stall.mp4", "stall0.mp4", "stall1.mp4", "stall2.mp4", "stall3.mp4"})
        yield media


def csv_file(path: Path, rows: list[str], header: str = HEADER, prefix: str = "") -> Path:
    path.write_text(prefix + "\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def args(server, csv: Path, out: str, *extra: str) -> list[str]:
    return ["build-dataset", "kinetics-sounds32", "--out", out, "--annotations", str(csv),
            "--url-template", server.url("{youtube_id}.mp4"), "--retries", "0", "--short-side", "64",
            "--samples-per-shard", "1", "--workers", "2", "--no-card", "--socket-timeout", "3", *extra]


def build(*argv: str, code: int = 0) -> str:
    result = runner.invoke(app, list(argv))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def ledger(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}


def files_below(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_traversal_and_absolute_splits_write_nothing_outside_out(server, tmp_path, s3_bucket):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "bowling,tc_b,1,3,../../escaped",
                                        "singing,tc_c,1,3,/tmp/elsewhere", "singing,tc_d,1,3,val"])
    work = tmp_path / "work"
    work.mkdir()
    before = files_below(tmp_path)
    output = build(*args(server, csv, str(work / "a" / "out")))
    assert "2 annotation row(s) rejected" in output and f"{csv}:3" in output and f"{csv}:4" in output
    written = files_below(tmp_path) - before
    assert written and all((work / "a" / "out") in p.parents for p in written)
    assert not (Path("/tmp") / "elsewhere-000000.tar").exists()
    rows = ledger(work / "a" / "out")
    assert rows[f"{csv}:3"]["reason"] == rows[f"{csv}:4"]["reason"] == "bad_annotation"
    assert {r["clip_id"] for r in rows.values() if r["status"] == "ok"} == {"tc_a_000001_000003", "tc_d_000001_000003"}
    build(*args(server, csv, f"s3://{s3_bucket}/ds"))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(k.startswith("ds/") and ".." not in k and "//" not in k for k in keys)


def test_the_stores_refuse_names_outside_their_root(tmp_path, s3_bucket):
    from avcl.storage import LocalStore, S3Store, StorageError

    for store in (LocalStore(tmp_path / "out"), S3Store(f"s3://{s3_bucket}/p")):
        for name in ("../x.tar", "/abs.tar", "a/../../x", "a\\..\\x"):
            with pytest.raises(StorageError, match="outside the output"):
                store.put_bytes(name, b"x")
    assert not (tmp_path / "x.tar").exists()


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_a_split_with_a_dash_keeps_its_finished_shards(server, tmp_path):
    rows = ["bowling,tc_a,1,3,val-hard", "singing,tc_b,1,3,val-hard", "bowling,tc_c,1,3,train"]
    out = tmp_path / "out"
    build(*args(server, csv_file(tmp_path / "k.csv", rows), str(out)))
    first = shard_digests(out)
    assert sorted(first) == ["train-000000.tar", "val-hard-000000.tar", "val-hard-000001.tar"]
    csv = csv_file(tmp_path / "k.csv", rows + ["singing,tc_d,1,3,val-hard", "bowling,tc_a,4,6,val-hard"])
    for _ in range(2):
        build(*args(server, csv, str(out)))
        now = shard_digests(out)
        assert {name: now[name] for name in first} == first  # finished shards byte for byte
    assert sorted(now) == sorted(first) + ["val-hard-000002.tar", "val-hard-000003.tar"]
    ids = []
    for shard in sorted(out.glob("*.tar")):
        with open(shard, "rb") as stream:
            ids += [json.loads(s["json"])["clip_id"] for s in iter_samples(stream)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 5
    assert json.loads((out / "dataset.json").read_text())["complete"]


@pytest.mark.slow
def test_a_stalled_server_is_a_network_failure_within_the_time_limits(server, tmp_path):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "bowling,stall,1,3,train", "singing,tc_b,1,3,val"])
    started = time.time()
    build(*args(server, csv, str(tmp_path / "a"), "--socket-timeout", "2"))
    rows = ledger(tmp_path / "a")
    assert rows["stall_000001_000003"]["reason"] == "network" and "stalled" in rows["stall_000001_000003"]["message"]
    assert rows["stall_000001_000003"]["retryable"] and time.time() - started < 30
    assert sum(r["status"] == "ok" for r in rows.values()) == 2
    build(*args(server, csv, str(tmp_path / "b"), "--socket-timeout", "60", "--clip-timeout", "3"))
    stalled = ledger(tmp_path / "b")["stall_000001_000003"]
    assert stalled["reason"] == "network" and "--clip-timeout" in stalled["message"] and stalled["seconds"] < 10


def descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children += [int(entry), *descendants(int(entry))]
    return children


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_stalled_build(server, tmp_path: Path) -> tuple[subprocess.Popen, list[int], Path]:
    """A build in its own process, all its workers waiting on stalled downloads."""
    csv = csv_file(tmp_path / "k.csv", [f"bowling,stall{i},1,3,train" for i in range(4)] + ["singing,tc_a,1,3,val"])
    out = tmp_path / "out"
    log = open(tmp_path / "log.txt", "w")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "avtools", *args(server, csv, str(out), "--socket-timeout", "120")],
                            stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[1],
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    for _ in range(150):
        time.sleep(0.2)
        if sum(server.requests.get(f"stall{i}.mp4", 0) for i in range(4)) >= 4:
            break
    time.sleep(0.5)
    return proc, descendants(proc.pid), out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_build_ends_promptly_and_leaves_no_process(sig, server, tmp_path):
    server.requests.clear()
    proc, family, out = start_stalled_build(server, tmp_path)
    assert len(family) >= 3, "the build should be running its fork server and workers"
    started = time.time()
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert time.time() - started < 10
    deadline = time.time() + 8
    while time.time() < deadline and any(running(p) for p in family):
        time.sleep(0.2)
    assert not [p for p in family if running(p)], (tmp_path / "log.txt").read_text()[-2000:]
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and (out / "dataset.json").exists()  # stopped like Ctrl-C: ledger kept
        assert not list((tmp_path / "tmp").iterdir())  # the killed workers' downloads are removed too
    else:  # the next build on this machine removes what a build killed with SIGKILL left
        assert list((tmp_path / "tmp").glob("avtools-build-*"))
        subprocess.run([sys.executable, "-m", "avtools", "build-dataset", "demo", "--out", str(tmp_path / "demo"),
                        "--short-side", "32", "--limit", "1", "--no-card"], check=True, capture_output=True,
                       env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
        assert not list((tmp_path / "tmp").glob("avtools-build-*"))


@pytest.mark.slow
def test_a_second_build_of_a_partition_in_progress_is_refused_naming_the_first(server, tmp_path):
    """Two writers of one partition would interleave shards and ledger parts: the second is refused at once,
    and once the first is gone (even by SIGKILL) its partition can be built again."""
    server.requests.clear()
    proc, _, out = start_stalled_build(server, tmp_path)
    try:
        refused = runner.invoke(app, args(server, tmp_path / "k.csv", str(out)))
        assert refused.exit_code == 2, refused.output
        assert f"partition 0/1 of {out} is being written by pid {proc.pid} on " in refused.output
        assert not (out / "dataset.json").exists()  # the refused build wrote nothing
    finally:
        proc.kill()
        proc.wait()
    build(*args(server, tmp_path / "k.csv", str(out), "--clip-timeout", "2"))
    assert len(ledger(out)) == 5 and not (out / "ledger" / "build.lock").exists()


def test_long_ids_and_colliding_ids_are_built_and_read_by_plain_webdataset(tmp_path):
    import webdataset as wds

    source = tmp_path / "videos" / "cls"
    source.mkdir(parents=True)
    long_name = "x" * 150
    for name in (long_name, "a.b", "a-b", "a b"):
        shutil.copy(MEDIA / "mmaction2_test.avi", source / f"{name}.avi")
    shutil.copytree(source, tmp_path / "videos" / "other")
    out = tmp_path / "out"
    build("build-dataset", "folder", "--source", str(tmp_path / "videos"), "--out", str(out), "--no-card",
          "--workers", "2", "--short-side", "64", "--fps", "4", "--min-duration", "0.5", "--val-fraction", "0")
    keys, ids = [], []
    for sample in wds.WebDataset([str(p) for p in sorted(out.glob("*.tar"))], shardshuffle=False):
        keys.append(sample["__key__"])
        ids.append(json.loads(sample["json"])["clip_id"])
    assert len(keys) == len(set(keys)) == 8
    assert sorted(ids) == sorted(f"{c}__{n}" for c in ("cls", "other") for n in (long_name, "a.b", "a-b", "a b"))


def test_colliding_keys_are_refused_at_planning():
    from avcl.data.schema import sample_key
    from avtools.build import distinct_keys
    from avtools.recipes import Clip, RecipeError

    distinct_keys([Clip("a.b", "x", "train"), Clip("a-b", "x", "train"), Clip("a/b", "x", "train")])
    twin = sample_key("a.b")  # a safe id that is another id's key: the one way two ids can meet
    with pytest.raises(RecipeError, match=f"'a.b' and '{twin}'|'{twin}' and 'a.b'"):
        distinct_keys([Clip("a.b", "x", "train"), Clip(twin, "y", "train")])


def test_a_crashed_first_run_keeps_its_settings(server, tmp_path):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "singing,tc_b,1,3,train"])
    out = tmp_path / "out"
    build(*args(server, csv, str(out), "--limit", "1"))
    (out / "dataset.json").unlink()  # as if killed after its first shard, before dataset.json
    (out / "ledger.parquet").unlink()
    assert list(out.glob("*.tar"))
    output = build(*args(server, csv, str(out), "--fps", "8"), code=2)
    assert "fps 16.0 -> 8.0" in output
    build(*args(server, csv, str(out)))
    assert json.loads((out / "dataset.json").read_text())["counts"]["available"] == 2
    (out / "ledger" / "settings.json").write_text('{"name": "kinetics-')  # a truncated settings record
    output = build(*args(server, csv, str(out)), code=2)
    assert f"error: {out}/ledger/settings.json: not valid JSON" in output and "Traceback" not in output


def test_untrusted_rows_are_rejected_with_their_line_and_the_rest_built(server, tmp_path):
    rows = ["bowling,tc_a,1,3,train", "bowling,tc_b,one,3,train", "bowling,tc_b,nan,3,train", "bowling,tc_b,1,inf,train",
            "bowling,tc_b,4,2,train", "bowling,tc_b,-2,3,train", "bowling,tc_c", "singing,empty,1,3,train",
            "singing,truncated,0,1,train"]
    csv = csv_file(tmp_path / "k.csv", rows, prefix="\ufeff")  # Excel's byte-order mark
    gz = tmp_path / "k.csv.gz"
    gz.write_bytes(gzip.compress(csv.read_bytes()))
    for annotations, out in ((csv, tmp_path / "plain"), (gz, tmp_path / "gz")):
        output = build(*args(server, annotations, str(out)))
        assert "6 annotation row(s) rejected" in output
        info = json.loads((out / "dataset.json").read_text())
        assert info["annotations"]["rows_rejected"] == 6 and info["complete"]
        rows_by_id = ledger(out)
        for line in range(3, 9):
            assert rows_by_id[f"{annotations}:{line}"]["reason"] == "bad_annotation"
        assert "end 2.0 is not after start 4.0" in rows_by_id[f"{annotations}:6"]["message"]
        assert "negative" in rows_by_id[f"{annotations}:7"]["message"]
        empty, truncated = rows_by_id["empty_000001_000003"], rows_by_id["truncated_000000_000001"]
        assert (empty["reason"], truncated["reason"]) == ("corrupt", "corrupt")
        assert not empty["retryable"] and not truncated["retryable"]
        assert "tmp" not in truncated["message"] and server.url("truncated.mp4") in truncated["message"]
        assert rows_by_id["tc_a_000001_000003"]["status"] == "ok"
    rerun = build(*args(server, csv, str(tmp_path / "plain")))
    assert "0 ok, 0 failed" in rerun  # final failures are not fetched again


def test_nothing_left_to_build_is_an_error_with_counts(server, tmp_path):
    other = csv_file(tmp_path / "other.csv", ["riding a bike,tc_a,1,3,train", "juggling balls,tc_b,1,3,train"])
    output = build(*args(server, other, str(tmp_path / "a")), code=2)
    assert "no clip of kinetics-sounds32 is left" in output and "2 row(s) of classes" in output
    header_only = csv_file(tmp_path / "empty.csv", [])
    assert "no clip of kinetics-sounds32" in build(*args(server, header_only, str(tmp_path / "b")), code=2)
    assert "Traceback" not in output


def test_conflicting_duplicate_rows_are_listed(server, tmp_path):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "singing,tc_a,1,3,train", "bowling,tc_a,1,3,train"])
    output = build(*args(server, csv, str(tmp_path / "out")))
    assert "1 repeated clip id(s) with another label or split" in output
    annotations = json.loads((tmp_path / "out" / "dataset.json").read_text())["annotations"]
    assert annotations["duplicate_rows"] == 2 and annotations["conflicting_duplicates"] == 1
    assert f"kept bowling/train ({csv}:2), dropped singing/train ({csv}:3)" in annotations["conflicts"][0]


def test_credentials_and_signed_queries_never_reach_shards_or_ledger(server, tmp_path):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "bowling,missing,1,3,train"])
    template = server.url("{youtube_id}.mp4").replace("http://", "http://alice:hunter2@") + \
        "?X-Amz-Signature=deadbeef42&token=s3cr3t&v=keep"
    out = tmp_path / "out"
    build(*[a if a != server.url("{youtube_id}.mp4") else template for a in args(server, csv, str(out))])
    everything = b"".join(p.read_bytes() for p in files_below(out))
    for secret in (b"hunter2", b"alice", b"deadbeef42", b"s3cr3t"):
        assert secret not in everything, secret
    shard = next(out.glob("*.tar"))
    with open(shard, "rb") as stream:
        meta = json.loads(next(iter_samples(stream))["json"])
    assert meta["source"].startswith("http://127.0.0.1:") and "v=keep" in meta["source"]


def test_stale_temporary_files_are_swept(server, tmp_path):
    from avcl.train import checkpoint

    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train"])
    out = tmp_path / "out"
    (out / "ledger").mkdir(parents=True)
    stale, fresh = out / "ledger" / ".tmp-dead", out / "ledger" / ".tmp-writing"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    build(*args(server, csv, str(out)))
    assert not stale.exists() and fresh.exists()  # a fresh one may belong to a partition writing now
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.abc123.tmp").write_bytes(b"partial checkpoint")
    assert checkpoint.sweep_partial(run) == [run / ".last.pt.abc123.tmp"] and not list(run.iterdir())


def test_class_list_versions_are_recorded_and_never_mixed_in_one_output(server, tmp_path):
    csv = csv_file(tmp_path / "k.csv", ["bowling,tc_a,1,3,train", "playing cricket,tc_b,1,3,train"])  # cricket: v1 only
    out = tmp_path / "v1"
    v1 = args(server, csv, str(out))
    v1[1] = "kinetics-sounds100"
    build(*v1, "--ks100-version", "1")
    info = json.loads((out / "dataset.json").read_text())
    assert info["name"] == "kinetics-sounds100-v1" and info["class_list"]["version"] == "v1"
    assert info["counts"]["available"] == 2
    refused = build(*[str(out) if a == str(out) else a for a in v1], code=2)
    assert "name kinetics-sounds100-v1 -> kinetics-sounds100" in refused and "class list" in refused
    v2 = [str(tmp_path / "v2") if a == str(out) else a for a in v1]
    build(*v2)
    info = json.loads((tmp_path / "v2" / "dataset.json").read_text())
    assert info["class_list"]["version"] == "v2" and info["class_list"]["file"].endswith("ks100_v2.csv")
    assert info["counts"]["total"] == 1 and info["annotations"]["rows_of_other_classes"] == 1
    assert "--ks100-version 3: the versions are 1 and 2" in build(*v2, "--ks100-version", "3", code=2)
    assert "is for kinetics-sounds100, not kinetics-sounds32" in build(*args(server, csv, str(out)), "--ks100-version", "1", code=2)
    with pytest.raises(EvalDataError, match="built with class list v1, not v2"):
        check_dataset_name(DATASETS.get("kinetics-sounds100"), DatasetInfo("kinetics-sounds100", {"version": "v1"}), "d")
    with pytest.raises(EvalDataError, match="built with class list unrecorded"):
        check_dataset_name(DATASETS.get("kinetics-sounds100"), DatasetInfo("kinetics-sounds100"), "d")
    check_dataset_name(DATASETS.get("kinetics-sounds100-v1"), DatasetInfo("kinetics-sounds100-v1", {"version": "v1"}), "d")


@pytest.mark.slow
def test_a_build_started_beside_a_folder_named_avtools_uses_the_installed_one(tmp_path):
    """The parent of a clone holds `avtools/`: build workers must import the installed package, not that folder
    (here one that fails to import), as the command itself does."""
    (tmp_path / "avtools").mkdir()
    (tmp_path / "avtools" / "__init__.py").write_text("raise ImportError('the wrong avtools')\n")
    done = subprocess.run([Path(sys.executable).with_name("avtools"), "build-dataset", "demo", "--out", "ds",
                           "--short-side", "32", "--limit", "4", "--workers", "2", "--no-card"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = ledger(tmp_path / "ds")
    assert sum(r["status"] == "ok" for r in rows.values()) == 4, rows


def test_workers_that_import_another_avtools_stop_the_build_with_one_line(tmp_path):
    import concurrent.futures as cf
    import functools
    import multiprocessing

    from avtools.build import BuildError, _check_worker_imports

    shadow = tmp_path / "avtools"
    shadow.mkdir()
    (shadow / "build.py").write_text("def _avtools_folder():\n    return __file__\n")
    shadowing = (f"import sys, types; module = types.ModuleType('avtools'); module.__path__ = [{str(shadow)!r}]; "
                 "sys.modules['avtools'] = module")  # what a folder named avtools first on sys.path does
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                initializer=functools.partial(exec, shadowing)) as pool:
        with pytest.raises(BuildError, match=f"build workers import avtools from {shadow}/build.py, not from "):
            _check_worker_imports(pool)

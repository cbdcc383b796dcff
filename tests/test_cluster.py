"""Cluster-grade operation, each command run as a subprocess the way SLURM or nohup runs it: logs without a
terminal, file modes under the umask, run folders on S3 (the moto server), pipe: sources, one-line errors for
ordinary mistakes and refused storage, and preemption (SIGTERM) with resume."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import torch

from avcl.train import checkpoint

pytestmark = pytest.mark.slow  # every test runs the CLI as subprocesses

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--method", "xmodal", "--device", "cpu", "--batch-size", "4", "--set", "method.width=4",
              "--set", "data.workers=0", "--set", "data.canvas=32", "--set", "video.size=32", "--set", "data.frames=8",
              "--set", "data.shuffle=4", "--set", "optim.warmup_epochs=0", "--set", "run.log_every=1"]
TINY_EVAL = ["--protocol", "knn", "--set", "protocol.clips=2", "--set", "protocol.frames=8", "--set", "protocol.size=64",
             "--workers", "0", "--batch-size", "8", "--device", "cpu"]
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def avtools(*args, code: int | None = 0, umask: int | None = None, env: dict | None = None, stderr=subprocess.PIPE,
            limits: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m avtools ARGS` in a subprocess (stdout and stderr not terminals), checked against `code`."""
    def prepare():
        if umask is not None:
            os.umask(umask)
        for limit, value in (limits or {}).items():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG instead
            resource.setrlimit(limit, (value, value))
    result = subprocess.run([sys.executable, "-m", "avtools", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=stderr, text=True, timeout=timeout, preexec_fn=prepare,
                            env={**os.environ, **(env or {})})
    if code is not None:
        assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess, expected: str, after_progress: bool = False) -> str:
    """The command failed with exit 2 and one `error: ...` line containing `expected` (the last line, after the
    progress lines of a command that got going, when `after_progress`), no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    if after_progress:
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    return lines[0]


def metrics(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory):
    """Split and class folders of short clips: 3 per class in train, 2 in val."""
    from tests.support.timecoded import write_timecoded

    root = tmp_path_factory.mktemp("folder-src")
    for i in range(10):
        folder = root / ("train" if i < 6 else "val") / ("up" if i % 2 else "down")
        folder.mkdir(parents=True, exist_ok=True)
        write_timecoded(folder / f"clip{i}.mp4", seconds=3, fps=16, size=(96, 64))
    return root


def build_folder(source: Path, out: Path, **kwargs) -> subprocess.CompletedProcess:
    return avtools("build-dataset", "folder", "--source", source, "--out", out, "--fps", "16", "--short-side", "64",
                   "--samples-per-shard", "2", "--workers", "2", **kwargs)


# ---- logs ---------------------------------------------------------------------------------------------------

def test_progress_lines_appear_in_a_log_while_commands_run(media_folder, timecoded_dataset, tmp_path):
    log = tmp_path / "build.log"
    with open(log, "w") as stderr:
        build_folder(media_folder, tmp_path / "ds", stderr=stderr)
    lines = log.read_text().splitlines()
    shards = sorted(p.name for p in (tmp_path / "ds").glob("*.tar"))  # train 3 x 2 samples, val 2 x 2
    assert len(shards) == 5 and all(f"wrote {name} (2 samples)" in "\n".join(lines) for name in shards)
    assert all(STAMP.match(line) for line in lines if "wrote" in line or "build folder" in line)

    run, log = tmp_path / "run", tmp_path / "train.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "avtools", "train", "--data", str(timecoded_dataset), "--out",
                                    str(run), "--max-steps", "10", *TINY_TRAIN, "--set", "run.log_every=2"],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        seen_while_running = []
        while process.poll() is None:
            seen_while_running = re.findall(r"train (\d+)/10 ", log.read_text())
            time.sleep(0.05)
    assert process.returncode == 0, log.read_text()
    assert seen_while_running, "no progress line reached the log before the run ended"
    progress = [line for line in log.read_text().splitlines() if re.search(r" train \d+/10 ", line)]
    assert [int(re.search(r"train (\d+)/10", line).group(1)) for line in progress] == [2, 4, 6, 8, 10]
    for line in progress:  # whole lines: timestamp, figures, loss terms and ETA, never cut at 80 columns
        assert STAMP.match(line) and re.search(r"loss=\S+ lr=\S+ clips_per_s=\S+ data_wait=\S+ \| xmodal=\S+ .* ETA \d+:\d\d:\d\d$", line)
    assert max(map(len, progress)) > 80
    config_lines = [line for line in log.read_text().splitlines() if "config (" in line]
    assert len(config_lines) == 1 and "optim.lr=" in config_lines[0]  # the resolved config, once, on one line

    log = tmp_path / "eval.log"
    with open(log, "w") as stderr:
        avtools("eval", "folder", "--data", tmp_path / "ds", "--checkpoint", run, *TINY_EVAL, stderr=stderr)
    for split in ("train", "val"):
        assert re.search(rf"^\S+ \S+ features folder/{split} \(video\) \d+/\d+ samples in \d:\d\d:\d\d", log.read_text(), re.M)


# ---- file modes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_written_honours_the_umask(umask, media_folder, tmp_path):
    ds, run, export, results = tmp_path / "ds", tmp_path / "run", tmp_path / "export", tmp_path / "res" / "r.json"
    build_folder(media_folder, ds, umask=umask)
    avtools("train", "--data", ds, "--out", run, "--max-steps", 2, *TINY_TRAIN, "--set", "run.keep_every=2", umask=umask)
    avtools("export", run, "--out", export, umask=umask)
    avtools("eval", "folder", "--data", ds, "--checkpoint", run, "--out", results, *TINY_EVAL, umask=umask)
    files = [p for folder in (ds, run, export, results.parent) for p in folder.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"dataset.json", "ledger.parquet", "card.png", "settings.json", "train-000000.tar", "last.pt", "best.pt",
            "step_2.pt", "config.json", "metrics.jsonl", "curves.png", "video_encoder.pt", "export.json",
            "r.json"} <= names
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o666 & ~umask}
    assert not wrong


# ---- remote run folders and sources -------------------------------------------------------------------------

def test_train_resume_export_and_eval_on_s3(timecoded_dataset, media_folder, s3_bucket, tmp_path):
    runs = f"s3://{s3_bucket}/runs/x"
    avtools("train", "--data", timecoded_dataset, "--out", runs, "--max-steps", 2, *TINY_TRAIN)
    s3 = boto3.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/x/")["Contents"]}
    assert {"runs/x/config.json", "runs/x/last.pt", "runs/x/best.pt", "runs/x/metrics.jsonl", "runs/x/curves.png"} <= keys
    assert not Path("s3:").exists() and not (ROOT / "s3:").exists()
    logged = s3.get_object(Bucket=s3_bucket, Key="runs/x/metrics.jsonl")["Body"].read()
    ahead = logged + b'{"step": 3, "loss": 9.0}\n'  # the log uploaded after a step whose checkpoint never was
    s3.put_object(Bucket=s3_bucket, Key="runs/x/metrics.jsonl", Body=ahead)
    avtools("train", "--data", timecoded_dataset, "--out", runs, "--max-steps", 4, "--resume", *TINY_TRAIN)
    lines = s3.get_object(Bucket=s3_bucket, Key="runs/x/metrics.jsonl")["Body"].read().decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    saved = tmp_path / "last.pt"
    s3.download_file(s3_bucket, "runs/x/last.pt", str(saved))
    assert checkpoint.load(saved)["state"]["step"] == 4
    avtools("export", runs, "--out", f"s3://{s3_bucket}/exports/x")
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="exports/x/")["Contents"]} == {
        "exports/x/video_encoder.pt", "exports/x/audio_encoder.pt", "exports/x/export.json"}
    results = f"s3://{s3_bucket}/results/knn.json"
    build_folder(media_folder, tmp_path / "ds")
    avtools("eval", "folder", "--data", tmp_path / "ds", "--checkpoint", runs, "--out", results, *TINY_EVAL)
    document = json.loads(s3.get_object(Bucket=s3_bucket, Key="results/knn.json")["Body"].read())
    assert document["rows"] and document["rows"][0]["encoder"]["checkpoint"] == f"{runs}/last.pt"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_training_into_a_folder_in_use_is_refused_naming_the_first(where, timecoded_dataset, s3_bucket,
                                                                            tmp_path):
    """The second process is refused before it touches the folder (its S3 scratch mirror is its own, so the
    first one's mirror survives too): the first trains on, checkpoints on SIGTERM, and the folder resumes."""
    run = str(tmp_path / "run") if where == "local" else f"s3://{s3_bucket}/runs/shared"
    args = ["train", "--data", str(timecoded_dataset), "--out", run, *TINY_TRAIN]
    first = subprocess.Popen([sys.executable, "-m", "avtools", *args, "--max-steps", "500"], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = f"{run}/run.lock"
    exists = (lambda: Path(lock).exists()) if where == "local" else (
        lambda: "Contents" in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="runs/shared/run.lock"))
    deadline = time.time() + 120
    while time.time() < deadline and not exists():
        time.sleep(0.1)
    try:
        said = one_line_error(avtools(*args, "--max-steps", 2, code=None), f"run folder {run} is being written by pid "
                                                                           f"{first.pid} on ")
        assert "avtools train --data" in said and "wait for it to end or stop it" in said
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert not exists()  # released
    avtools(*args, "--max-steps", 1, "--resume")


def test_a_pipe_source_is_one_command_with_its_arguments(timecoded_dataset, tmp_path):
    """The shards are gzipped on disk, so their samples can only have come through `gzip -dc FILE`."""
    first = sorted(timecoded_dataset.glob("train-*.tar"))[0]
    packed = tmp_path / "my shards" / f"{first.name}.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(first.read_bytes()))
    pipe = f"pipe:gzip -dc '{packed}'"
    described = json.loads(avtools("inspect", pipe, "--json").stdout)
    assert described["samples"] == 2
    avtools("train", "--data", pipe, "--out", tmp_path / "run", "--max-steps", 1, *TINY_TRAIN,
            "--set", "data.epoch_samples=2", "--batch-size", "2")
    assert metrics(tmp_path / "run") == [1]


# ---- one-line errors ----------------------------------------------------------------------------------------

def test_ordinary_mistakes_get_one_line_errors(media_folder, timecoded_dataset, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    data = ["--data", timecoded_dataset]
    one_line_error(avtools("build-dataset", "folder", "--source", media_folder, "--out", a_file, code=None), "is a file")
    one_line_error(avtools("train", *data, "--out", a_file, *TINY_TRAIN, code=None), "is a file")
    one_line_error(avtools("train", *data, "--out", tmp_path / "empty", "--resume", *TINY_TRAIN, code=None),
                   "holds no checkpoint")
    for device, said in (("gpu", "--device 'gpu': use auto, cpu, cuda or cuda:N"), ("cuda:1", "no CUDA device")):
        if device == "cuda:1" and torch.cuda.device_count() > 1:
            continue
        one_line_error(avtools("train", *data, "--out", tmp_path / "r", *TINY_TRAIN, "--device", device, code=None), said)
    one_line_error(avtools("train", *data, "--out", tmp_path / "r", *TINY_TRAIN, "--max-steps", 0, code=None), "--max-steps 0")
    one_line_error(avtools("build-dataset", "folder", "--source", media_folder, "--out", tmp_path / "b", "--frames", "gif",
                           code=None), "--frames gif")
    one_line_error(avtools("train", *data, "--out", "gs://bucket/run", *TINY_TRAIN, code=None), "gs:// is not a writable location")
    run = tmp_path / "run"
    avtools("train", *data, "--out", run, "--max-steps", 1, *TINY_TRAIN)
    one_line_error(avtools("export", run, "--out", a_file, code=None), "is a file")
    folder = tmp_path / "results"
    folder.mkdir()
    one_line_error(avtools("eval", "folder", *data, "--checkpoint", run, "--out", folder, *TINY_EVAL, code=None),
                   "is a folder")
    assert not list(folder.iterdir())
    one_line_error(avtools("eval", "folder", *data, "--checkpoint", run, *TINY_EVAL, "--precision", "fp8", code=None),
                   "--precision 'fp8'")
    one_line_error(avtools("eval", "folder", *data, "--checkpoint", run, *TINY_EVAL, "--protocol", "nope", code=None),
                   "unknown protocol 'nope'")
    garbage, truncated = tmp_path / "garbage.pt", tmp_path / "truncated.pt"
    garbage.write_bytes(os.urandom(2048))
    truncated.write_bytes((run / "last.pt").read_bytes()[:4096])
    for bad in (garbage, truncated):
        one_line_error(avtools("eval", "folder", *data, "--checkpoint", bad, *TINY_EVAL, code=None),
                       "not a readable avtools checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(timecoded_dataset, broken)
    (broken / "dataset.json").write_text('{"name": "folder", ')
    one_line_error(avtools("inspect", broken, code=None), f"{broken}/dataset.json: not valid JSON")
    one_line_error(avtools("train", "--data", broken, "--out", tmp_path / "r2", *TINY_TRAIN, code=None),
                   f"{broken}/dataset.json: not valid JSON")


def test_refused_storage_is_one_line_naming_the_location(media_folder, s3_bucket, s3_endpoint, tmp_path):
    out = tmp_path / "capped"
    said = one_line_error(build_folder(media_folder, out, code=None, limits={resource.RLIMIT_FSIZE: 20_000}),
                          "File too large")
    assert str(out) in said
    one_line_error(build_folder(media_folder, "s3://no-such-bucket-here/ds", code=None), "no bucket 'no-such-bucket-here'")
    unreachable = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    one_line_error(build_folder(media_folder, f"s3://{s3_bucket}/ds", code=None, env=unreachable),
                   "cannot reach the S3 endpoint http://127.0.0.1:9")
    anonymous = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                 "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = subprocess.run([sys.executable, "-m", "avtools", "inspect", f"s3://{s3_bucket}/ds"], cwd=ROOT, text=True,
                            capture_output=True, env={**env, **{k: v for k, v in anonymous.items() if v}})
    one_line_error(result, "no S3 credentials; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY")


def test_a_capped_file_system_stops_train_export_and_eval_with_one_line(timecoded_dataset, media_folder, tmp_path):
    """A checkpoint write (torch wraps the failed write in its own RuntimeError), an export and an evaluation's
    feature cache and figures, each refused by RLIMIT_FSIZE (EFBIG, what a full disk does with ENOSPC)."""
    capped = {resource.RLIMIT_FSIZE: 20_000}
    run = tmp_path / "run"
    said = one_line_error(avtools("train", "--data", timecoded_dataset, "--out", run, "--max-steps", 1, *TINY_TRAIN,
                                  code=None, limits=capped), "File too large", after_progress=True)
    assert f"{run}/last.pt" in said
    avtools("train", "--data", timecoded_dataset, "--out", run, "--max-steps", 1, *TINY_TRAIN)
    said = one_line_error(avtools("export", run, "--out", tmp_path / "export", code=None, limits=capped),
                          "File too large")
    assert f"{tmp_path / 'export'}/" in said
    build_folder(media_folder, tmp_path / "ds")
    for protocol in ("knn", "retrieval"):
        one_line_error(avtools("eval", "folder", "--data", tmp_path / "ds", "--checkpoint", run, "--out",
                               tmp_path / "results.json", *TINY_EVAL, "--protocol", protocol, "--cache-dir",
                               tmp_path / "cache", code=None, limits=capped), "File too large", after_progress=True)


def test_a_rerun_of_a_complete_dataset_writes_nothing(media_folder, tmp_path):
    out = tmp_path / "ds"
    build_folder(media_folder, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    time.sleep(0.05)
    build_folder(media_folder, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def _tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_full_or_read_only_file_system(media_folder, tmp_path):
    """Needs permission to mount a tmpfs (root in a container); skipped elsewhere (EFBIG above covers the path)."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "size=64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        said = one_line_error(build_folder(media_folder, disk / "ds", code=None), "No space left on device")
        assert str(disk / "ds") in said
        subprocess.run(["umount", str(disk)], check=True)
        assert _tmpfs(disk, "size=16m")
        build_folder(media_folder, disk / "ds")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        build_folder(media_folder, disk / "ds")  # complete: the rerun reads, writes nothing, succeeds
        one_line_error(avtools("train", "--data", disk / "ds", "--out", disk / "run", *TINY_TRAIN, code=None),
                       "Read-only file system")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---- jobs that always end ---------------------------------------------------------------------------------------

def _failing_training(case: str, dataset: Path, tmp_path: Path, started: list) -> tuple[list[str], dict, dict]:
    """A training with two loader workers that fails mid-run in `case`'s way: its arguments, the environment and
    the subprocess limits. `started` collects what the test must stop afterwards."""
    args = [*TINY_TRAIN, "--set", "data.workers=2", "--max-steps", 50, "--set", "run.checkpoint_every=1"]
    if case in ("checkpoint on a full disk", "shared memory full"):  # the cap also applies to /dev/shm files:
        cap = 1_500_000 if case == "checkpoint on a full disk" else 20_000  # batches (< 0.2 MB), checkpoints (3 MB)
        return ["--data", dataset, "--out", tmp_path / "run", *args], {}, {resource.RLIMIT_FSIZE: cap}
    if case == "S3 outage during a checkpoint upload":
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        started.append(server)
        host, port = server.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="outage")

        def outage_after_the_first_checkpoint():
            while "Contents" not in client.list_objects_v2(Bucket="outage", Prefix="run/last.pt"):
                time.sleep(0.05)
            server.stop()
        started.append(threading.Thread(target=outage_after_the_first_checkpoint, daemon=True))
        started[-1].start()
        return ["--data", dataset, "--out", "s3://outage/run", *args], env, {}
    from tests.support.httpserver import MediaServer  # shards that go missing once the source was checked

    server = MediaServer(dataset).__enter__()
    started.append(server)

    def missing_after_the_check():
        while not server.requests["train-000000.tar"]:
            time.sleep(0.01)
        server.missing.update(p.name for p in dataset.glob("*.tar"))
    started.append(threading.Thread(target=missing_after_the_check, daemon=True))
    started[-1].start()
    return ["--data", server.url(""), "--out", tmp_path / "run", *args], {}, {}


@pytest.mark.parametrize("case, said", [("checkpoint on a full disk", "last.pt: File too large"),
                                        ("shared memory full", "the data loader delivered 0 of"),
                                        ("S3 outage during a checkpoint upload", "cannot reach the S3 endpoint"),
                                        ("HTTP 404 from the shard server", "shards in a row could not be opened")])
def test_a_training_that_fails_with_loader_workers_running_exits_within_60_s(case, said, timecoded_dataset,
                                                                             tmp_path):
    """The error is printed and the process ends: its loader workers are shut down on the way out (they ignore
    a group-wide SIGTERM, and an exit that waits on them hung)."""
    for attempt in range(2):
        started: list = []
        args, env, limits = _failing_training(case, timecoded_dataset, tmp_path / str(attempt), started)
        try:
            result = avtools("train", *args, code=None, env=env, limits=limits, timeout=60)
        finally:
            for thing in started:
                if hasattr(thing, "__exit__"):
                    thing.__exit__(None, None, None)
                elif hasattr(thing, "stop"):
                    with contextlib.suppress(Exception):
                        thing.stop()
        one_line_error(result, said, after_progress=True)


# ---- preemption -----------------------------------------------------------------------------------------------

def test_sigterm_checkpoints_and_resume_falls_back_past_a_garbage_last_pt(timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(timecoded_dataset), "--out", str(run), *TINY_TRAIN, "--set", "run.log_every=1",
            "--set", "run.keep_every=2", "--set", "run.checkpoint_every=1000"]
    process = subprocess.Popen([sys.executable, "-m", "avtools", *args, "--max-steps", "500"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    step = checkpoint.load(run / "last.pt")["state"]["step"]
    assert step >= 3 and metrics(run)[-1] == step  # nothing trained after the checkpoint
    assert f"stopped by SIGTERM at step {step}; checkpoint {run}/last.pt; continue with: avtools train" in stderr
    assert stderr.rstrip().endswith("--max-steps 500 --resume")
    avtools(*args, "--max-steps", step + 2, "--resume")
    assert metrics(run)[-2:] == [step + 1, step + 2]
    kept = max(int(p.stem[5:]) for p in run.glob("step_*.pt"))
    best = checkpoint.load(run / "best.pt")["state"]["step"]
    start, name = (kept, f"step_{kept}.pt") if kept >= best else (best, "best.pt")
    (run / "last.pt").write_bytes(b"not a checkpoint")
    resumed = avtools(*args, "--max-steps", step + 4, "--resume")
    assert f"{run}/last.pt: not a readable avtools checkpoint" in resumed.stderr
    assert f"resuming from {run}/{name} (step {start})" in resumed.stderr
    assert metrics(run)[-(step + 4 - start):] == list(range(start + 1, step + 5))
    assert metrics(run) == sorted(set(metrics(run)))  # the steps after `start` were dropped, not logged twice


def test_version_workers_and_optional_wandb(timecoded_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from avcl.machine import loader_workers, usable_cores
    from avtools import __version__
    from avtools.cli import app

    assert CliRunner().invoke(app, ["--version"]).output.strip() == f"avtools {__version__}"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers("auto") == min(8, usable_cores()) and loader_workers(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * usable_cores()))
    assert loader_workers("auto") == 1  # ranks on one node share its cores
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed here: the missing-package path cannot be shown")
    except ImportError:
        pass
    result = CliRunner().invoke(app, ["train", "--data", str(timecoded_dataset), "--out", str(tmp_path / "run"),
                                      "--max-steps", "1", *TINY_TRAIN, "--set", "run.wandb=true"])
    assert result.exit_code == 2 and "run.wandb=true needs the wandb package: pip install wandb" in result.output

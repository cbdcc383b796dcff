"""`avtools train` / `avtools export` end to end on tiny shards on CPU; DDP equivalence; crash safety; guards."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import avcl.methods as methods
from avcl import models
from avcl.methods.xmodal import XModal
from avcl.train import checkpoint
from avcl.train.config import ConfigError, applicable, from_dict, load
from avcl.train.loop import TrainingError, train
from avtools.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "method.width=4", "--set", "data.workers=0", "--set", "data.canvas=32", "--set", "video.size=32",
        "--set", "run.log_every=1", "--set", "run.precision=fp32", "--set", "data.shuffle=4", "--device", "cpu",
        "--batch-size", "4"]
PER_METHOD = {"tcgl": ["--set", "method.frames=8", "--set", "method.gap=4"],
              "temporal-av": ["--set", "data.frames=8", "--set", "method.queue_size=16"],
              "avcl": ["--set", "data.frames=8", "--set", "method.proj_hidden=32", "--set", "method.amfm_heads=4"],
              "xmodal": ["--set", "data.frames=8"], "simclr": ["--set", "data.frames=8", "--set", "method.proj_hidden=32"]}


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(PER_METHOD))
def test_every_method_trains_a_few_steps(method, timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--method", method, "--data", timecoded_dataset, "--out", run, "--max-steps", 2,
                     *TINY, *PER_METHOD[method])
    assert result.exit_code == 0, result.output
    assert f"config ({run}/config.json): method_name={method} " in result.output  # the resolved config, one line
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert any(k.startswith("loss/") for k in rows[0]) and "clips_per_s" in rows[0] and "data_wait" in rows[0]
    saved = checkpoint.load(run / "last.pt")
    assert saved["state"]["step"] == 2 and saved["method_name"] == method
    assert json.loads((run / "config.json").read_text())["method"]["width"] == 4
    assert (run / "curves.png").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_export_writes_torchvision_layout_encoders(timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--method", "xmodal", "--data", timecoded_dataset, "--out", run, "--max-steps", 1,
                   *TINY, *PER_METHOD["xmodal"]).exit_code == 0
    result = run_cli("export", run)
    assert result.exit_code == 0, result.output
    video = torch.load(run / "export" / "video_encoder.pt", weights_only=True)
    models.build("r2plus1d_18", width=4).load_state_dict(video)  # strict: exactly the backbone's keys
    audio = torch.load(run / "export" / "audio_encoder.pt", weights_only=True)
    models.build("resnet18_2d", width=4).load_state_dict(audio)
    assert json.loads((run / "export" / "export.json").read_text())["step"] == 1


@pytest.mark.slow
def test_resume_after_a_kill_continues_at_the_next_step(timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--method", "xmodal", "--data", timecoded_dataset, "--out", run, "--max-steps", 200,
            *TINY, *PER_METHOD["xmodal"], "--set", "run.checkpoint_every=2", "--set", "optim.warmup_epochs=0"]
    proc = subprocess.Popen([sys.executable, "-m", "avtools", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "last.pt").exists():
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = checkpoint.load(run / "last.pt")
    step = saved["state"]["step"]
    assert step >= 1
    # resume with nothing left to do: the state written back is the state read (optimiser included)
    same = ["--set", "optim.warmup_epochs=0"]  # a resume must keep the run's config (it is refused otherwise)
    result = run_cli("train", *map(str, args[1:7]), "--resume", "--max-steps", step, *TINY, *PER_METHOD["xmodal"], *same)
    assert result.exit_code == 0, result.output
    again = checkpoint.load(run / "last.pt")
    assert again["state"]["step"] == step and again["state"]["resumes"] == 1
    assert saved["optimizer"]["state"]  # momentum buffers exist, so the comparison below compares something
    for key, value in saved["optimizer"]["state"].items():
        torch.testing.assert_close(again["optimizer"]["state"][key]["momentum_buffer"], value["momentum_buffer"])
    before = len(metrics(run))
    result = run_cli("train", *map(str, args[1:7]), "--resume", "--max-steps", step + 2, *TINY, *PER_METHOD["xmodal"],
                     *same)
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in metrics(run)[before:]] == [step + 1, step + 2]
    assert run_cli("train", *map(str, args[1:7]), "--max-steps", 1, *TINY).exit_code == 2  # no silent overwrite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_cli_under_torchrun(timecoded_dataset, tmp_path):
    """`torchrun --nproc-per-node 2 -m avtools train ...` on CPU: gloo, one metrics file, equal steps."""
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "avtools", "train", "--method", "xmodal", "--data", timecoded_dataset, "--out", run,
               "--max-steps", 3, *TINY, *PER_METHOD["xmodal"]]
    subprocess.run(list(map(str, command)), check=True, cwd=ROOT, capture_output=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert checkpoint.load(run / "last.pt")["state"]["step"] == 3


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    script = ROOT / "tests" / "support" / "ddp_equivalence.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, tmp_path / "one.pt"], check=True, env=env, cwd=ROOT)
    torchrun = Path(sys.executable).with_name("torchrun")
    ran = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                          str(free_port()), script, tmp_path / "two.pt"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-4000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    sys.path.insert(0, str(script.parent))
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    from ddp_equivalence import LinearXModal  # the initial weights, to show the steps moved them
    initial = LinearXModal(LinearXModal.Config()).state_dict()
    assert all((one[k] - initial[k]).abs().max() > 1e-3 for k in one)


def test_a_killed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"state": {"step": 1}, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # what a kill during the write looks like from inside

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"state": {"step": 2}, "w": torch.zeros(3)}, path)
    assert checkpoint.load(path)["state"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


class NaNAtThree(XModal):
    """xmodal whose third forward returns NaN."""

    name = "nan-at-3"
    calls = 0

    def forward(self, batch):
        loss, terms = super().forward(batch)
        type(self).calls += 1
        return (loss * float("nan") if type(self).calls == 3 else loss), terms


def test_a_nan_stops_the_run_naming_step_terms_and_checkpoint(timecoded_dataset, tmp_path):
    if "nan-at-3" not in methods.names():
        methods.METHODS.register("nan-at-3")(NaNAtThree)
    NaNAtThree.calls = 0
    config = load("xmodal", overrides=[f'data.train=["{timecoded_dataset}"]', "method.width=4", "data.workers=0",
                                       "data.canvas=32", "video.size=32", "data.frames=8", "run.device=\"cpu\"",
                                       "data.batch_size=4", "run.checkpoint_every=2", "run.max_steps=5"])
    config.method_name = "nan-at-3"
    with pytest.raises(TrainingError, match=r"loss is nan at step 3 \(xmodal=.*acc_v2a=.*\).*last good checkpoint is "
                                            r".*last\.pt \(step 2\)"):
        train(config, tmp_path / "run")


def test_missing_data_fails_fast_naming_the_source(tmp_path):
    started = time.time()
    result = run_cli("train", "--method", "xmodal", "--data", tmp_path / "nowhere" / "train-{000000..000003}.tar",
                     "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 2 and "nowhere/train-000000.tar" in result.output.replace("\n", "")
    assert time.time() - started < 20


def test_config_layers_and_named_errors(tmp_path):
    file = tmp_path / "mine.toml"
    file.write_text("[optim]\nlr = 0.02\n[method]\nnn_k = 3\n")
    config = load("temporal-av", file, ["method.nn_k=7", "run.epochs=3"])
    assert (config.optim.lr, config.method.nn_k, config.run.epochs, config.method.queue_size) == (0.02, 7, 3, 16384)
    assert load("tcgl").video.normalize is False and load("tcgl").optim.schedule == "plateau"
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\] in \[optim\]"):
        load("xmodal", overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load("xmodal", overrides=["lr"])


def test_named_preset_shared_sections_then_per_method_tables():
    xmodal, tcgl, temporal_av = (load(m, named="demo") for m in ("xmodal", "tcgl", "temporal-av"))
    assert (xmodal.method.tau, xmodal.data.stride, xmodal.data.batch_size, xmodal.video.size) == (0.2, 2, 16, 64)
    assert (tcgl.method.tau, tcgl.method.frameset, tcgl.data.stride, tcgl.data.batch_size) == (0.5, 2, 1, 16)
    assert (temporal_av.method.queue_size, temporal_av.method.lambda_temp, temporal_av.data.stride) == (64, 0.1, 2)
    assert load("temporal-av").method.queue_size == 16384
    preset = {"method": {"tau": 0.3, "nn_k": 1}, "methods": {"xmodal": {"optim": {"lr": 0.5}}}}
    assert applicable("xmodal", preset) == {"method": {"tau": 0.3}, "optim": {"lr": 0.5}}
    assert preset["methods"]["xmodal"] == {"optim": {"lr": 0.5}}  # the preset itself is left as it was
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['xmodel'\]"):
        applicable("xmodal", {"methods": {"xmodel": {}}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\] in \[method\]"):
        from_dict("xmodal", applicable("xmodal", {"methods": {"xmodal": {"method": {"nope": 1}}}}))


def test_knn_monitor_logs_and_picks_best(timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--method", "xmodal", "--data", timecoded_dataset, "--val-data", timecoded_dataset,
                     "--out", run, "--max-steps", 2, *TINY, *PER_METHOD["xmodal"], "--set", "data.val_split=train",
                     "--set", "run.knn_every=1", "--set", "run.knn_k=3")
    assert result.exit_code == 0, result.output
    rows = metrics(run)
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in rows)  # 7 labelled samples, leave-one-out
    best = checkpoint.load(run / "best.pt")["state"]
    assert best["best"] == pytest.approx(max(r["knn_top1"] for r in rows), abs=1e-5)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "optim.lr: nan is not a finite number"),
    ("optim.lr=inf", "optim.lr: inf is not a finite number"),
    ("optim.lr=-0.1", "optim.lr: must be above 0"),
    ("data.batch_size=0", "data.batch_size: must be above 0"),
    ("run.accumulate=0", "run.accumulate: must be above 0"),
    ("optim.weight_decay=-1", "optim.weight_decay: must be 0 or more"),
    ("optim=5", "[optim] must be a table of keys"),
])
def test_config_values_out_of_range_are_one_line_errors_naming_the_key(tmp_path, override, message):
    result = CliRunner().invoke(app, ["train", "--method", "xmodal", "--preset", "demo", "--data", str(tmp_path),
                                      "--out", str(tmp_path / "run"), "--set", override])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


class _Hostile:
    """Unpickling this runs a command: a checkpoint an attacker crafted."""
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_named_as_such_and_never_run(tmp_path):
    hostile = _Hostile()
    hostile.marker = str(tmp_path / "ran")
    torch.save({"model": hostile}, tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError, match="holds code or objects avtools does not load"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


@pytest.mark.slow
def test_a_source_of_nothing_ends_training_with_one_line_every_time(tmp_path):
    """`pipe:false` yields no sample: training must stop naming it, and the process must exit (loader workers
    ignore a group-wide SIGTERM, so an exit that waits on them hangs); repeated to catch an intermittent hang."""
    for attempt in range(5):
        done = subprocess.run([sys.executable, "-m", "avtools", "train", "--method", "xmodal", "--preset", "demo",
                               "--data", "pipe:false", "--out", str(tmp_path / f"r{attempt}"), "--max-steps", "2",
                               "--device", "cpu", "--set", "data.epoch_samples=16", "--set", "data.workers=2"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: 32 shards in a row held no samples, the last pipe:false"), last
        assert "Traceback" not in done.stdout + done.stderr


def test_a_resume_drops_the_metrics_logged_after_its_checkpoint(tmp_path):
    from avcl.train.logs import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("command", [["train", "--help"], ["list", "methods"]])
def test_a_broken_plugin_is_one_line_naming_the_variable(command):
    done = subprocess.run([sys.executable, "-m", "avtools", *command], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AVTOOLS_PLUGINS": "no_such_avtools_plugin"})
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert out.splitlines()[-1].startswith("error: AVTOOLS_PLUGINS='no_such_avtools_plugin': plugin")


@pytest.mark.slow  # the unreachable server is retried with backoff first
@pytest.mark.parametrize("command", [
    ["train", "--method", "xmodal", "--preset", "demo", "--out", "{tmp}/run", "--max-steps", "1", "--data"],
    ["eval", "folder", "--checkpoint", "random", "--method", "xmodal", "--protocol", "knn", "--data"],
])
def test_credentials_and_signatures_in_a_data_url_are_never_printed(tmp_path, command):
    command = [part.replace("{tmp}", str(tmp_path)) for part in command]
    with_password = CliRunner().invoke(app, [*command, "http://user:s3cret@127.0.0.1:9/data"])
    assert with_password.exit_code == 2 and "user:password in an http(s) data URL is not supported" in with_password.output
    signed = CliRunner().invoke(app, [*command, "http://127.0.0.1:9/data?X-Amz-Signature=s3cret"])
    assert signed.exit_code == 2
    for result in (with_password, signed):
        assert "s3cret" not in result.output, result.output


@pytest.mark.slow
def test_a_signed_shard_url_trains_and_its_signature_is_stored_nowhere(timecoded_dataset, tmp_path):
    """Presigned shard URLs (`...tar?X-Amz-Signature=...`) are shards: read with their query, their counts from
    the folder's dataset.json, and the signature redacted from config.json, the checkpoint, logs and output."""
    from tests.support.httpserver import MediaServer

    run = tmp_path / "run"
    with MediaServer(timecoded_dataset) as server:
        signed = server.url("train-{000000..000003}.tar") + "?X-Amz-Signature=s3cret&X-Amz-Expires=600"
        done = subprocess.run([sys.executable, "-m", "avtools", "train", "--method", "xmodal", "--data", signed,
                               "--out", str(run), "--max-steps", "2", *TINY, *PER_METHOD["xmodal"]],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = checkpoint.load(run / "last.pt")
    assert saved["state"]["step"] == 2 and "X-Amz-Signature=REDACTED" in saved["config"]["data"]["train"][0]
    stored = [done.stdout, done.stderr, *(p.read_text(errors="replace") for p in run.iterdir() if p.suffix in
                                          (".json", ".jsonl", ".log")), json.dumps(saved["config"])]
    assert not [text for text in stored if "s3cret" in text]


def test_a_broken_manifest_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """A preset edited into invalid TOML (manifests/ is data a user may edit), or one that is missing."""
    import avtools_manifests

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "xmodal.toml").write_text("[optim]\nlr = = 0.1\n")
    monkeypatch.setattr(avtools_manifests, "path", lambda relative: tmp_path / relative)
    result = run_cli("train", "--method", "xmodal", "--data", tmp_path, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert f"error: manifest {tmp_path}/presets/xmodal.toml: not valid TOML (" in result.output
    result = run_cli("train", "--method", "simclr", "--data", tmp_path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"manifest {tmp_path}/presets/simclr.toml: cannot read it" in result.output

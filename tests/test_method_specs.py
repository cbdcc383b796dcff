"""The seed methods as specified: each method's views come from its config; temporal-av's positives, ordering
task and speeds; TCGL's frame minimum, C3D tiling and VCOP backbone; AVCL's two views of one clip; gradient
accumulation equal to the large batch; resume refusing a changed config; every preset finite on the CPU."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import simplejpeg
import torch
from typer.testing import CliRunner

import avcl.methods as methods
from avcl import models
from avcl.data import schema
from avcl.data.decode import SampleError
from avcl.data.views import make_views, run_spec, speed_up
from avcl.train.config import DataConfig, load
from avtools.cli import app
from tests.test_methods import tiny


def raw_sample(seconds: float, fps: int = 16, rate: int = 16000, key: str = "clip") -> dict:
    """A shard sample of `seconds` of tiny JPEG frames and audio that is never exactly zero (1000 +- 100)."""
    frames = [simplejpeg.encode_jpeg(np.full((16, 16, 3), i % 255, np.uint8), colorspace="RGB")
              for i in range(int(seconds * fps))]
    t = np.arange(int(seconds * rate)) / rate
    audio = (1000 + 100 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    meta = {f: 0 for f in schema.SAMPLE_FIELDS} | {"fps": fps, "n_frames": len(frames), "width": 16, "height": 16,
                                                   "audio_rate": rate, "n_audio_samples": len(audio), "has_audio": True}
    members = dict(schema.members(key, meta, schema.wav_bytes(audio, rate), frames, None))
    return {"__key__": key, **{name.split(".", 1)[1]: data for name, data in members.items()}}


def trained_spec(name: str, **overrides):
    config = load(name, overrides=[f"method.{k}={json.dumps(v)}" for k, v in overrides.items()])
    return run_spec(methods.build(name, config.method).view_spec(), DataConfig(canvas=16))


# ---- temporal-av ---------------------------------------------------------------------------------------------

def test_temporal_av_order_task_never_sees_a_padded_window_and_every_speed_occurs():
    spec = trained_spec("temporal-av")
    sample = raw_sample(10.0)
    rng = np.random.default_rng(0)
    speeds, valid = set(), 0
    for _ in range(300):
        views = make_views(sample, spec, rng)
        speeds.update(views["speed"].tolist())
        if views["xorder"] >= 0:
            valid += 1
            assert (views["audio_shifted"] != 0).all()  # the recording is never exactly 0: no padding
    assert speeds == set(range(len(spec.speeds)))  # speed 8 (128 of 160 frames) included
    assert valid > 180  # the rest: both clips at speed >= 4, whose three windows (12 s) cannot fit in 10 s


def test_a_recording_too_short_for_the_order_task_gets_no_label():
    spec = trained_spec("temporal-av", speeds=[4], directions=[1])
    views = make_views(raw_sample(2.5), spec, np.random.default_rng(0))  # the three windows need 12 s
    assert views["xorder"] == -1 and not views["audio_shifted"].any()


def test_the_audio_window_follows_the_clip_and_its_speed_up_does_not_alias():
    assert trained_spec("temporal-av").audio_seconds == 1.0  # 16 frames at 16 fps
    assert trained_spec("temporal-av", clip_fps=25.0).audio_seconds == pytest.approx(16 / 25)
    assert trained_spec("temporal-av", audio_window="seconds", audio_seconds=2.0).audio_seconds == 2.0
    rate, k = 16000, 4
    t = np.arange(4 * rate) / rate
    tone = (10000 * np.sin(2 * np.pi * 7000 * t)).astype(np.int16)  # above the new Nyquist of 2 kHz
    resampled, boxed = speed_up(tone, rate, "resample"), speed_up(tone, rate, "box")
    assert np.abs(resampled).max() < 50 < np.abs(boxed).max() / 10  # box decimation aliases the tone down
    low = (10000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    sped = speed_up(low, rate, "resample").astype(float)
    expected = 10000 * np.sin(2 * np.pi * 1200 * np.arange(rate) / rate)  # 4x faster: pitch x4
    assert np.abs(sped[200:-200] - expected[200:-200]).max() < 300


# ---- TCGL ----------------------------------------------------------------------------------------------------

def test_tcgl_skips_videos_under_64_frames_and_counts_them():
    from avcl.data.stream import BadData

    spec = trained_spec("tcgl")
    with pytest.raises(SampleError, match="40 frames, fewer than the 64"):
        make_views(raw_sample(40 / 16), spec, np.random.default_rng(0))
    bad = BadData()
    try:
        make_views(raw_sample(40 / 16), spec, np.random.default_rng(0))
    except SampleError as exc:
        bad(exc)
    assert bad.counts == {"SampleError": 1}
    assert make_views(raw_sample(64 / 16), spec, np.random.default_rng(0))["video"].shape[:2] == (3, 16)


def test_tcgl_snippets_are_consecutive_native_frames():
    spec = trained_spec("tcgl")
    assert spec.fps == 0 and spec.stride == 1  # the stored rate: build with --fps native


def test_c3d_framesets_are_tiled_as_the_official_repeating2():
    method = tiny("tcgl", video_backbone="c3d", stkd="none")
    x = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(2, 3, 4, 2, 2)
    tiled = method.video_input(x)
    assert tiled[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    official = torch.cat([x - x.mean(2, keepdim=True)] * 2, dim=2)  # repeating2(frequency(x))
    torch.testing.assert_close(tiny("tcgl", video_backbone="c3d").video_input(x), official)


def test_r2plus1d_vcop_has_the_official_parameter_count():
    model = models.build("r2plus1d_vcop")
    assert sum(p.numel() for p in model.parameters()) == 14_365_303  # 14.37 M, VCOP's R2Plus1DNet((1,1,1,1))
    keys = set(model.state_dict())
    assert {"conv1.spatial_conv.weight", "conv3.block1.downsampleconv.temporal_conv.weight", "bn1.weight"} <= keys


# ---- AVCL ----------------------------------------------------------------------------------------------------

def test_avcl_views_are_two_augmentations_of_one_clip():
    spec = trained_spec("avcl")
    views = make_views(raw_sample(10.0), spec, np.random.default_rng(3))
    assert views["start"][0] == views["start"][1]
    assert np.array_equal(views["video"][0], views["video"][1]) and np.array_equal(views["audio"][0], views["audio"][1])
    independent = make_views(raw_sample(10.0), trained_spec("avcl", selfcl_views="two_clips"), np.random.default_rng(3))
    assert independent["start"][0] != independent["start"][1]


def test_inspect_views_draws_what_the_preset_trains(tmp_path, timecoded_dataset):
    result = CliRunner().invoke(app, ["inspect", str(timecoded_dataset), "--views", "tcgl", "--preset", "demo",
                                      "--png", str(tmp_path / "v.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v.png").stat().st_size > 5000
    result = CliRunner().invoke(app, ["inspect", str(timecoded_dataset), "--views", "xmodal", "--set",
                                      "method.nope=1", "--png", str(tmp_path / "w.png")])
    assert result.exit_code == 2 and "nope" in result.output


# ---- accumulation ---------------------------------------------------------------------------------------------

def freeze_batchnorm(method) -> None:
    """BatchNorm normalises each micro-batch with its own statistics, as with any accumulation: the equality of
    the contrastive terms is checked with running statistics."""
    for module in method.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


@pytest.mark.parametrize("name", ["xmodal", "temporal-av"])
def test_accumulation_equals_the_large_batch(name):
    from avcl.train.loop import Context, Trainer
    from tests.support.batches import random_batch

    overrides = ["method.width=4", "method.proj_hidden=32", "data.batch_size=16"]
    if name == "temporal-av":
        overrides += ["method.queue_size=64", "method.nn_k=2", 'method.temporal_negatives=["reverse", "respeed"]']
    grads, losses = [], []
    for accumulate in (1, 4):
        torch.manual_seed(0)
        config = load(name, overrides=overrides + [f"run.accumulate={accumulate}", "run.channels_last=false",
                                                   "run.precision=\"fp32\""])
        trainer = Trainer(config, Context(0, 1, torch.device("cpu")))
        trainer.schedule(10, 10)
        trainer.augment = lambda batch, train=True, generator=None: batch  # inputs as given: the same both ways
        freeze_batchnorm(trainer.method)
        spec = trainer.method.view_spec()
        full = random_batch(dataclasses.replace(spec, frames=4), batch=16, size=16, mels=16, audio_frames=16,
                            generator=torch.Generator().manual_seed(1))
        micro = [{k: v[i * 16 // accumulate:(i + 1) * 16 // accumulate] for k, v in full.items()} for i in range(accumulate)]
        loss, _ = trainer.accumulate(micro, 1)
        losses.append(float(loss))
        grads.append({k: p.grad.clone() for k, p in trainer.method.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-4, atol=1e-6, msg=key)


# ---- resume and presets ----------------------------------------------------------------------------------------

def test_resume_with_another_config_is_refused_naming_the_difference(timecoded_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--method", "xmodal", "--data", str(timecoded_dataset), "--out", str(run), "--batch-size", "2",
            "--device", "cpu", "--set", "method.width=4", "--set", "data.workers=0", "--set", "data.frames=4",
            "--set", "data.canvas=32", "--set", "video.size=32"]
    assert CliRunner().invoke(app, args + ["--max-steps", "1"]).exit_code == 0
    refused = CliRunner().invoke(app, args + ["--max-steps", "2", "--resume", "--set", "optim.lr=0.5"])
    assert refused.exit_code == 2 and "optim.lr 0.1 -> 0.5" in refused.output and "--allow-config-change" in refused.output
    allowed = CliRunner().invoke(app, args + ["--max-steps", "2", "--resume", "--set", "optim.lr=0.5",
                                              "--allow-config-change"])
    assert allowed.exit_code == 0, allowed.output
    assert CliRunner().invoke(app, args + ["--max-steps", "3", "--resume", "--set", "optim.lr=0.5"]).exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(methods.names()))
def test_every_preset_trains_finite_on_the_cpu(name, timecoded_dataset, tmp_path):
    """Each method's own preset, at batch 2 and 8. Only the width is cut (4 instead of 64: a full-width step takes
    minutes on 2 cores); the NaN losses came from bf16 autocast with channels-last 3D convolutions on the CPU,
    which do not depend on it."""
    for batch in (2, 8):
        run = tmp_path / f"b{batch}"
        result = CliRunner().invoke(app, ["train", "--method", name, "--data", str(timecoded_dataset), "--out", str(run),
                                          "--batch-size", str(batch), "--max-steps", "5", "--device", "cpu",
                                          "--set", "method.width=4", "--set", "data.workers=0"])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(np.isfinite(row["loss"]) for row in rows if "loss" in row)
        recorded = json.loads((run / "config.json").read_text())["run"]
        assert (recorded["precision"], recorded["channels_last"]) == ("fp32", False)

"""Evaluation views by construction: every registered method (plugins included) is evaluated on evenly spaced,
forward, speed-1 clips of every video, long or short, with audio windows centred on their clips; its training
sampling (speeds, tuples, one shared window, a minimum length) never reaches evaluation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simplejpeg

import avcl.methods as methods
from avcl.data import schema
from avcl.data.views import ClipGeometry, ViewSpec, evaluation_views, make_views, plan_clips, run_spec
from avcl.eval.features import FeatureSpec, feature_views
from avcl.train.config import load

FPS = 16
# the two clip settings protocols ask for: `linear` (16 frames sampled at 16 fps) and `knn`/retrieval/TCGL's SVM
# (16 consecutive stored frames); 10 clips per video either way
PROTOCOL_CLIPS = {"16fps": FeatureSpec(clips=10, frames=16, fps=16.0), "stored": FeatureSpec(clips=10, frames=16)}


def method_geometry(name: str) -> ClipGeometry:
    config = load(name)
    return run_spec(methods.build(name, config.method).view_spec(), config.data).geometry


def ramp_sample(n_frames: int, rate: int = 16000) -> dict:
    """A shard sample whose frame i is JPEG grey level i % 250 and whose audio sample j is j // (rate / 100): the
    recording's own time in centiseconds, so a window's middle sample tells where its centre lies."""
    frames = [simplejpeg.encode_jpeg(np.full((16, 16, 3), i % 250, np.uint8), colorspace="RGB")
              for i in range(n_frames)]
    audio = (np.arange(int(n_frames / FPS * rate)) // (rate // 100)).astype(np.int16)
    meta = {f: 0 for f in schema.SAMPLE_FIELDS} | {"fps": FPS, "n_frames": n_frames, "width": 16, "height": 16,
                                                   "audio_rate": rate, "n_audio_samples": len(audio), "has_audio": True}
    members = dict(schema.members("clip", meta, schema.wav_bytes(audio, rate), frames, None))
    return {"__key__": "clip", **{name.split(".", 1)[1]: data for name, data in members.items()}}


@pytest.mark.parametrize("protocol", sorted(PROTOCOL_CLIPS))
@pytest.mark.parametrize("method", methods.names())
def test_every_method_is_evaluated_on_evenly_spaced_forward_clips_of_every_video(method, protocol):
    geometry = method_geometry(method)
    for modality in ("video", "fused"):
        spec = dataclasses.replace(PROTOCOL_CLIPS[protocol], modality=modality)
        views = feature_views(spec, geometry)
        for n_frames in (250, 40):
            plans, order = plan_clips(views, n_frames, FPS, np.random.default_rng(0))
            step = 1.0 if not spec.fps else FPS / spec.fps
            window = int(round(16 * step * geometry.stride))
            expected = np.linspace(0, n_frames - window, 10).round() / FPS
            np.testing.assert_allclose([p.start for p in plans], expected, err_msg=f"{method} {n_frames} frames")
            assert order == -1 and all(p.speed == 1 and p.direction == 1 for p in plans)
            for plan in plans:
                assert len(plan.indices) == 16 and np.all(np.diff(plan.indices) > 0)
                assert plan.indices[0] == round(plan.start * FPS) and plan.indices[-1] < n_frames


@pytest.mark.parametrize("method", methods.names())
def test_evaluation_reads_short_videos_and_centres_audio_on_each_clip(method):
    geometry = method_geometry(method)
    modality = "fused" if geometry.audio else "video"
    views = feature_views(FeatureSpec(modality=modality, clips=10, frames=16, audio_seconds=0.5), geometry)
    for n_frames in (250, 40):
        out = make_views(ramp_sample(n_frames), dataclasses.replace(views, canvas=16), None)
        assert out["video"].shape[:2] == (10, 16)
        greys = out["video"][:, :, 8, 8, 0].astype(int)
        first = np.round(out["start"] * FPS).astype(int)
        np.testing.assert_allclose(greys, (first[:, None] + np.arange(16)) % 250, atol=3)  # JPEG rounding
        if geometry.audio:
            centre_cs = out["audio"][:, out["audio"].shape[1] // 2]
            np.testing.assert_allclose(centre_cs, (out["start"] + 16 / FPS / 2) * 100, atol=1)


def test_a_video_shorter_than_the_protocols_clip_is_read_with_a_warning(caplog):
    views = feature_views(FeatureSpec(clips=2, frames=16), method_geometry("tcgl"))  # TCGL trains on >= 64 frames
    with caplog.at_level("WARNING", logger="avcl.data"):
        out = make_views(ramp_sample(10), dataclasses.replace(views, canvas=16), None)
    assert out["video"].shape[:2] == (2, 16) and bool(out["valid"])
    assert "10 frames (0.62 s) is shorter than the evaluation clip (1.00 s)" in caplog.text


def test_training_only_sampling_cannot_reach_evaluation():
    """Whatever a method sets for training, evaluation views hold the plain sampling: every ViewSpec field that
    is not geometry takes its default, and those defaults are the plain ones."""
    trained = ViewSpec(clips=3, frames=8, speeds=(2, 4), directions=(-1,), disjoint=True, tuple_gap=4,
                       same_window=True, min_frames=64, audio_speed="box")
    views = evaluation_views(trained.geometry, 10)
    geometry_fields = {f.name for f in dataclasses.fields(ClipGeometry)}
    for field in dataclasses.fields(ViewSpec):
        if field.name in geometry_fields:
            assert getattr(views, field.name) == getattr(trained, field.name)
        elif field.name not in ("clips", "test_clips"):
            assert getattr(views, field.name) == field.default, field.name
    plain = ViewSpec()
    assert (plain.speeds, plain.directions, plain.disjoint, plain.tuple_gap, plain.same_window, plain.min_frames,
            plain.inter_order) == ((1,), (1,), False, None, False, 0, False)


def write_late_difference(path, late_colour: int, seed: int, seconds: int = 10, late: int = 4, fps: int = 8) -> None:
    """A video whose first `seconds - late` seconds are per-video noise, the same for every class, and whose last
    `late` seconds are the class's grey level and tone: only the end of the video tells the class."""
    import fractions

    import av

    rng = np.random.default_rng(seed)
    rate = 16000
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = out.add_stream("aac", rate=rate, layout="mono")
        for k in range(seconds * fps):
            is_late = k >= (seconds - late) * fps
            rgb = np.full((48, 64, 3), late_colour, np.uint8) if is_late else rng.integers(0, 256, (48, 64, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        t = np.arange(seconds * rate) / rate
        wave = np.where(t >= seconds - late, 0.3 * np.sin(2 * np.pi * (300 + late_colour * 4) * t),
                        0.3 * rng.standard_normal(len(t))).astype(np.float32)
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(sound.encode(frame))
        out.mux(video.encode())
        out.mux(sound.encode())


@pytest.mark.parametrize("method", ["avcl", "xmodal"])
def test_classes_that_differ_only_late_in_the_video_are_separated_at_random_init(method, late_difference, tmp_path):
    """Evaluation must read clips across the whole video: one clip per video (AVCL's shared training window
    reaching evaluation) sees only the common beginning and scores chance."""
    from tests.test_eval import SMALL_VIEWS, invoke, results

    out = tmp_path / "linear.json"
    invoke("eval", "folder", "--data", str(late_difference), "--checkpoint", "random", "--method", method,
           "--protocol", "linear", "--preset", "demo", "--modality", "video", "--out", str(out),
           "--cache-dir", str(tmp_path / "cache"), *SMALL_VIEWS)
    (row,) = [r for r in results(out)["rows"] if r["split"] != "mean"]
    assert row["metrics"]["top1"] == 100.0


@pytest.fixture(scope="module")
def late_difference(tmp_path_factory):
    from tests.test_eval import invoke

    source = tmp_path_factory.mktemp("late-src")
    for split, count in (("train", 4), ("val", 3)):
        for cls, grey in (("dark", 40), ("light", 200)):
            folder = source / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                write_late_difference(folder / f"{cls}{i}.mp4", grey, seed=100 * (split == "val") + i)
    out = tmp_path_factory.mktemp("late") / "ds"
    invoke("build-dataset", "folder", "--source", str(source), "--out", str(out), "--fps", "8", "--short-side", "48",
           "--workers", "2", "--no-card")
    return out

"""avcl.data: sources (folder, brace, http, s3, pipe), distributed-correct streams, views, bad data."""
from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from avcl.data.sources import SourceError, resolve, resolve_all
from avcl.data.stream import EvalStream, StreamConfig, StreamError, TrainStream, loader
import avcl.methods as methods
from avcl.data.views import ViewSpec, evaluation_views, make_views, permutations, run_spec
from tests.conftest import TIMECODED_FPS
from tests.support.httpserver import MediaServer
from tests.support.timecoded import burst_onsets, frame_index

SPEC = ViewSpec(clips=1, frames=4, canvas=64, audio_seconds=0.25)
ALL_KEYS = {f"train__{c}__tc{i}" for i, c in zip(range(7), ["down", "up"] * 4)}


def eval_keys_and_videos(specs, batch_size=3, workers=0) -> dict[str, np.ndarray]:
    stream = EvalStream(resolve_all(specs, "train"), evaluation_views(SPEC.geometry, 1), StreamConfig(batch_size, workers=workers))
    out = {}
    for batch in loader(stream):
        for key, video, valid in zip(batch["key"], batch["video"], batch["valid"]):
            if valid:
                out[key] = video.numpy()
    return out


def test_the_same_samples_from_a_folder_http_s3_brace_and_pipe(timecoded_dataset, s3_bucket):
    import boto3

    local = eval_keys_and_videos([str(timecoded_dataset)])
    assert set(local) == ALL_KEYS
    client = boto3.client("s3")
    for path in timecoded_dataset.iterdir():
        if path.is_file():
            client.upload_file(str(path), s3_bucket, f"tc/{path.name}")
    with MediaServer(timecoded_dataset) as server:
        for spec in (server.url(""), f"s3://{s3_bucket}/tc", f"s3://{s3_bucket}/tc/train-{{000000..000003}}.tar",
                     str(timecoded_dataset / "train-{000000..000003}.tar")):
            got = eval_keys_and_videos([spec])
            assert got.keys() == local.keys(), spec
            assert all(np.array_equal(got[k], local[k]) for k in local), spec
    piped = eval_keys_and_videos([f"pipe:cat {timecoded_dataset}/train-00000{i}.tar" for i in range(4)])
    assert piped.keys() == local.keys()


def test_sources_take_counts_from_dataset_json_and_name_bad_specs(timecoded_dataset, tmp_path):
    source = resolve(str(timecoded_dataset / "train-{000000..000003}.tar@0.5"))
    assert source.weight == 0.5 and source.shard_samples == [2, 2, 2, 1] and source.num_samples == 7
    with pytest.raises(SourceError, match="split 'val'"):
        resolve(str(timecoded_dataset), "val")
    with pytest.raises(SourceError, match="dataset folder"):
        resolve(str(tmp_path))
    with pytest.raises(StreamError, match=r"no sample counts for pipe:cat x.tar: .* --set data.epoch_samples=N"):
        TrainStream([resolve("pipe:cat x.tar")], SPEC, StreamConfig(2))


def test_training_takes_equal_steps_on_every_rank_and_worker(timecoded_dataset):
    sources = resolve_all([str(timecoded_dataset)])
    steps = []
    for rank in range(2):
        stream = TrainStream(sources, SPEC, StreamConfig(batch_size=2, workers=2, world_size=2, rank=rank, seed=1))
        batches = list(loader(stream))
        assert all(len(b["key"]) == 2 and set(b["key"]) <= ALL_KEYS for b in batches)
        steps.append(len(batches))
    # 7 samples // (2 per batch * 2 ranks) = 1 step, rounded up to a whole batch per worker
    assert steps == [stream.steps_per_epoch] * 2 == [2, 2]


def test_evaluation_reads_every_sample_once_with_equal_batches_per_rank(timecoded_dataset):
    sources = resolve_all([str(timecoded_dataset)])
    seen, batch_counts = [], []
    for rank in range(2):
        stream = EvalStream(sources, evaluation_views(SPEC.geometry, 2), StreamConfig(batch_size=2, workers=2, world_size=2, rank=rank))
        batches = list(loader(stream))
        batch_counts.append(len(batches))
        assert len(batches) == len(stream)
        assert all(b["video"].shape[:2] == (2, 2) for b in batches)  # full batches, 2 test clips each
        seen += [k for b in batches for k, ok in zip(b["key"], b["valid"]) if ok]
    assert sorted(seen) == sorted(ALL_KEYS)
    assert batch_counts[0] == batch_counts[1]


def timecoded_sample(dataset: Path, key: str = "train__down__tc0") -> dict:
    from avtools.inspect import iter_samples

    for shard in sorted(dataset.glob("*.tar")):
        with open(shard, "rb") as f:
            for sample in iter_samples(f):
                if sample["__key__"] == key:
                    return sample
    raise KeyError(key)


def frame_indices(video: np.ndarray) -> list[int]:
    return [frame_index(frame) for frame in video]


def test_speed_direction_and_aligned_audio(timecoded_dataset):
    sample = timecoded_sample(timecoded_dataset)
    spec = ViewSpec(clips=2, frames=8, speeds=(1, 2, 4), directions=(1, -1), disjoint=True, canvas=64,
                    audio_seconds=8 / TIMECODED_FPS, inter_order=True)
    rng = np.random.default_rng(0)
    seen_speeds, seen_directions = set(), set()
    for _ in range(12):
        views = make_views(sample, spec, rng)
        windows = []
        for clip in range(2):
            speed = spec.speeds[views["speed"][clip]]
            direction = -1 if views["direction"][clip] else 1
            seen_speeds.add(speed), seen_directions.add(direction)
            shown = frame_indices(views["video"][clip])
            assert np.all(np.diff(shown) == speed * direction), (shown, speed, direction)
            first = min(shown)
            assert views["start"][clip] == pytest.approx(first / TIMECODED_FPS)
            windows.append((first, max(shown) + 1))
            # the audio covers the same span as the frames; played forward, bursts sit where whole seconds fall
            wave = views["audio"][clip][::direction].astype(np.float32) / 32768
            span = 8 * speed / TIMECODED_FPS
            t0 = first / TIMECODED_FPS
            expected = [(s - t0) / speed for s in range(6) if t0 <= s < t0 + span - 0.005]
            np.testing.assert_allclose(burst_onsets(wave, 16000, 0.1), expected, atol=0.004)
        (a0, a1), (b0, b1) = windows
        assert a1 <= b0 or b1 <= a0  # disjoint windows for the ordering task
        # inter-modal order: audio one window before (0), with (1) or after (2) clip 0
        label = int(views["xorder"])
        speed0 = spec.speeds[views["speed"][0]]
        direction0 = -1 if views["direction"][0] else 1
        t0 = views["start"][0] + (label - 1) * spec.audio_seconds * speed0
        span = spec.audio_seconds * speed0
        wave = views["audio_shifted"][::direction0].astype(np.float32) / 32768
        expected = [(s - t0) / speed0 for s in range(6) if t0 <= s < t0 + span - 0.005]
        np.testing.assert_allclose(burst_onsets(wave, 16000, 0.1), expected, atol=0.004)
    assert seen_speeds == {1, 2, 4} and seen_directions == {1, -1}


def test_evaluation_views_keep_the_frame_step_of_training(timecoded_dataset):
    """Features must see clips at the frame step the encoder was trained on (`--set data.stride=2`)."""
    from avcl.eval.features import FeatureSpec, feature_views
    from avcl.train.config import DataConfig

    own = methods.build("xmodal").view_spec()
    trained = run_spec(own, DataConfig(stride=2, canvas=64))
    assert (trained.stride, trained.frames, trained.canvas) == (2, own.frames, 64)
    views = make_views(timecoded_sample(timecoded_dataset), feature_views(FeatureSpec(clips=2, frames=8), trained.geometry), None)
    for clip in views["video"]:
        assert np.all(np.diff(frame_indices(clip)) == 2)


def test_tcgl_tuples_are_shuffled_snippets_with_their_order_label(timecoded_dataset):
    sample = timecoded_sample(timecoded_dataset)
    spec = ViewSpec(clips=3, frames=4, tuple_gap=2, audio=False, canvas=64)
    rng = np.random.default_rng(1)
    orders = set()
    for _ in range(20):
        views = make_views(sample, spec, rng)
        starts = [frame_indices(v)[0] for v in views["video"]]
        for v in views["video"]:
            assert np.all(np.diff(frame_indices(v)) == 1)
        tuple_start = min(starts)
        originals = tuple((s - tuple_start) // (4 + 2) for s in starts)
        assert originals == permutations(3)[int(views["order"])]
        orders.add(int(views["order"]))
    assert orders == set(range(6))


def rewrite_shard(path: Path, edit) -> None:
    """Rewrite a tar shard, passing each (name, bytes) through `edit` (None drops the member)."""
    members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            kept = edit(m.name, tar.extractfile(m).read())
            if kept is not None:
                members.append((m.name, kept))
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def shard_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return sorted({name.split(".")[0] for name in tar.getnames()})


def test_bad_data_is_skipped_counted_and_reported(timecoded_dataset, tmp_path, caplog):
    broken = tmp_path / "broken"
    shutil.copytree(timecoded_dataset, broken)
    shards = sorted(broken.glob("*.tar"))
    with open(shards[0], "r+b") as f:  # truncated mid-way: only its first sample survives, at most
        f.truncate(f.seek(0, 2) // 3)
    first = {}

    def corrupt(name, data):
        key = name.split(".")[0]
        first.setdefault("key", key)
        if key == first["key"] and name.endswith(".json"):
            first["offsets"] = json.loads(data)["frame_offsets"]
        if key == first["key"] and name.endswith(".mjpeg"):  # frame 2 overwritten, its length kept
            lo, hi = first["offsets"][2:4]
            return data[:lo] + b"\xff\xd8 not a jpeg".ljust(hi - lo, b"\0") + data[hi:]
        if key != first["key"] and name.endswith(".wav"):
            return None
        return data

    rewrite_shard(shards[1], corrupt)  # one corrupt JPEG, one sample without audio
    last_keys = shard_keys(shards[3])
    json_dropped, survivor = shard_keys(shards[2])
    rewrite_shard(shards[2], lambda name, data: None if name == f"{json_dropped}.json" else data)
    sources = resolve_all([str(broken)])
    spec = ViewSpec(clips=1, frames=8, canvas=64, audio_seconds=0.5)  # evaluation decodes frames 0-7
    with caplog.at_level(logging.WARNING, logger="avcl.data"):
        config = StreamConfig(batch_size=2, workers=0)
        train = list(loader(TrainStream(sources, spec, config)))
        stream = EvalStream(sources, evaluation_views(spec.geometry, 1), config)
        evaluated = list(loader(stream))
    assert len(train) == 3 and all(len(b["key"]) == 2 for b in train)
    good = {k for b in evaluated for k, ok in zip(b["key"], b["valid"]) if ok}
    assert good == {survivor, *last_keys}  # shard 0 truncated, shard 1 broken twice, one sample of shard 2
    assert len(evaluated) == len(stream) == 4  # 7 promised samples still give 4 batches
    assert "skipped bad data" in caplog.text
    assert all(w in caplog.text for w in ("unexpected end", "corrupt JPEG", "no wav", "no json"))


@pytest.mark.parametrize("method", ["temporal-av", "tcgl"])
def test_inspect_views_draws_what_the_model_sees(timecoded_dataset, tmp_path, method):
    from PIL import Image
    from typer.testing import CliRunner

    from avtools.cli import app

    png = tmp_path / "views.png"
    result = CliRunner().invoke(app, ["inspect", str(timecoded_dataset), "--views", method, "--png", str(png)])
    assert result.exit_code == 0, result.output
    with Image.open(png) as image:
        rows = 3 if method == "tcgl" else 2
        assert image.height > rows * 150 and np.asarray(image.convert("L")).std() > 10
    bad = CliRunner().invoke(app, ["inspect", str(timecoded_dataset), "--views", "nope"])
    assert bad.exit_code == 2 and "unknown method" in bad.output
    evaluation = tmp_path / "eval.png"
    result = CliRunner().invoke(app, ["inspect", str(timecoded_dataset), "--views", method, "--eval-clips", "4",
                                      "--png", str(evaluation)])
    assert result.exit_code == 0, result.output
    with Image.open(evaluation) as image:
        assert image.height > 4 * 150  # one row per evaluation clip, whatever the method trains on


def test_audio_windows_read_by_seeking_equal_slices_of_the_whole_recording():
    from avcl.data import schema
    from avcl.data.decode import AudioReader, SampleError

    rng = np.random.default_rng(0)
    wave = (rng.normal(0, 3000, 16000 * 5)).astype(np.int16)
    wav = schema.wav_bytes(wave, 16000)
    reader = AudioReader({"__key__": "k", "wav": wav})
    assert (reader.rate, reader.length) == (16000, len(wave))
    for lo in [0, 1, 4095, 4096, 33333, 79000]:
        hi = min(len(wave), lo + int(rng.integers(1, 20000)))
        assert np.array_equal(reader.read(lo, hi), wave[lo:hi])
    with pytest.raises(SampleError, match="corrupt WAV"):
        AudioReader({"__key__": "k", "wav": b"RIFF" + b"\x00" * 40})
    with pytest.raises(SampleError, match=r"truncated WAV: 0 of the 10000 samples in \[60000, 70000\)"):
        AudioReader({"__key__": "k", "wav": wav[: 44 + 80000]}).read(60000, 70000)
    with pytest.raises(SampleError, match="no wav member"):
        AudioReader({"__key__": "k"})


def test_packed_jpeg_frames_are_checked_against_their_offsets():
    from avcl.data import schema
    from avcl.data.decode import SampleError, decode_frames, jpeg_frames, sample_meta
    from avtools.transcode import encode_jpeg

    jpegs = [encode_jpeg(np.full((32, 48, 3), 50 * i, np.uint8), 90) for i in range(5)]
    members = dict(schema.members("k", {f: 0 for f in schema.SAMPLE_FIELDS} | {"n_frames": 5}, None, jpegs, None))
    sample = {"__key__": "k", **{name.split(".", 1)[1]: data for name, data in members.items()}}
    meta = sample_meta(sample)
    assert [bytes(f) for f in jpeg_frames(sample, meta)] == jpegs
    frames = decode_frames(sample, meta, np.array([4, 0, 4]), canvas=32)
    assert np.allclose([f.mean() for f in frames], [200, 0, 200], atol=2)  # JPEG is lossy
    with pytest.raises(SampleError, match="bytes of frames, the json promises"):
        sample_meta(sample | {"mjpeg": sample["mjpeg"][:-1]})
    for offsets in (["0", 5], meta["frame_offsets"][::-1]):
        with pytest.raises(SampleError, match="frame_offsets must be increasing integers"):
            sample_meta(sample | {"json": schema.encode_json(meta | {"frame_offsets": offsets})})
    for broken, complaint in [(b"[1, 2]", "an object expected"), (b'{"fps": "16"}', "fps, n_frames, audio_rate, n_a"),
                              (b"{not json", "bad json")]:
        with pytest.raises(SampleError, match=complaint):
            sample_meta(sample | {"json": broken})
    with pytest.raises(SampleError, match=r"no frames: neither mjpeg nor mp4 among its members \(json, wav\)"):
        jpeg_frames({"__key__": "k", "json": b"", "wav": b""}, meta)


@pytest.mark.parametrize("canvas, shape", [(112, (128, 170)), (64, (64, 85)), (40, (64, 85)), (32, (32, 43)),
                                           (16, (16, 22))])
def test_jpeg_frames_decode_at_the_strongest_simd_scaling_that_covers_the_canvas(canvas, shape):
    import simplejpeg

    from avcl.data.decode import SampleError, decode_jpeg

    gradient = np.broadcast_to(np.linspace(0, 255, 170, dtype=np.uint8)[None, :, None], (128, 170, 3))
    data = simplejpeg.encode_jpeg(np.ascontiguousarray(gradient), quality=95)
    frame = decode_jpeg(data, canvas)
    assert frame.shape == (*shape, 3) and min(shape) >= min(canvas, 128)
    assert abs(float(frame.mean()) - float(gradient.mean())) < 6  # edge blocks pad
    with pytest.raises(SampleError, match="corrupt JPEG"):
        decode_jpeg(data[:20], canvas)


def test_without_simplejpeg_frames_decode_with_pillow_at_full_size(monkeypatch):
    import sys

    from avcl.data.decode import SampleError, decode_jpeg
    from avtools.transcode import encode_jpeg

    gradient = np.broadcast_to(np.linspace(0, 255, 170, dtype=np.uint8)[None, :, None], (128, 170, 3))
    packed = b"xx" + encode_jpeg(gradient, 95)
    fast = decode_jpeg(memoryview(packed)[2:], 112)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # `import simplejpeg` now raises ImportError
    slow = decode_jpeg(memoryview(packed)[2:], 112)
    assert slow.shape == fast.shape == (128, 170, 3) and np.abs(slow.astype(int) - fast).mean() < 2
    with pytest.raises(SampleError, match="corrupt JPEG"):
        decode_jpeg(packed[:20], 112)


def test_shards_open_one_ahead_unreadable_ones_are_counted_and_early_exit_closes_both(timecoded_dataset, monkeypatch):
    from avcl.data import stream as stream_module
    from avcl.data.stream import MAX_UNREADABLE_IN_A_ROW, BadData, read_samples

    opened = []

    def open_and_record(url):
        opened.append(open(url, "rb"))
        return opened[-1]

    monkeypatch.setattr(stream_module, "open_url", open_and_record)
    shards = [str(p) for p in sorted(timecoded_dataset.glob("*.tar"))]
    bad = BadData()
    keys = [s["__key__"] for s in read_samples(iter([shards[0], "/no/such.tar", shards[1]]), bad)]
    assert len(keys) == 4 and bad.counts == {"OSError": 1}
    with pytest.raises(StreamError, match=f"{MAX_UNREADABLE_IN_A_ROW} shards in a row could not be opened"):
        list(read_samples(iter(["/no/such.tar"] * MAX_UNREADABLE_IN_A_ROW), BadData()))
    opened.clear()
    shard_iterator = stream_module._open_shards(iter(shards), BadData())
    next(shard_iterator)
    deadline = time.monotonic() + 10
    while len(opened) < 2 and time.monotonic() < deadline:  # the second shard opens in a thread
        time.sleep(0.01)
    assert len(opened) == 2  # the first shard, being read, and the second, opened ahead
    shard_iterator.close()
    assert all(f.closed for f in opened)


def test_read_ahead_delivers_the_bytes_then_the_error_and_closes_early():
    from avcl.data.sources import READ_BUFFER, _ReadAhead

    class Flaky(io.RawIOBase):
        def __init__(self, good: bytes, then: Exception | None):
            self.data, self.then = io.BytesIO(good), then

        def readable(self):
            return True

        def readinto(self, buffer):
            got = self.data.readinto(buffer)
            if got == 0 and self.then is not None:
                raise self.then
            return got

    payload = np.random.default_rng(0).bytes(3 * READ_BUFFER + 5)
    with io.BufferedReader(_ReadAhead(Flaky(payload, None), "s3://b/k"), 4096) as f:
        assert f.read() == payload
    got = bytearray()
    failing = _ReadAhead(Flaky(payload, ConnectionResetError("connection reset")), "s3://b/k")
    with pytest.raises(OSError, match="cannot read s3://b/k: connection reset"):
        while chunk := failing.read(100_000):
            got += chunk
    assert bytes(got) == payload  # every byte before the error
    with pytest.raises(OSError, match="connection reset"):
        failing.read(1)
    endless = _ReadAhead(Flaky(payload * 20, None), "s3://b/k", depth=2)
    assert endless.read(10) == payload[:10]
    endless.close()
    assert not endless.thread.is_alive() and endless.raw.closed

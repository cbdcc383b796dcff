"""The decoding pass: the frame-time rule, audio alignment, and the awkward real files."""
from __future__ import annotations

import math

import numpy as np
import pytest

from avcl.data import schema
from avtools import media
from avtools.card import SHEET_FRAMES, sheet_frames
from avtools.reasons import ClipError
from tests.conftest import MEDIA
from tests.support.timecoded import burst_onsets, frame_index, write_timecoded


@pytest.fixture(scope="module")
def timecoded(tmp_path_factory):
    path = tmp_path_factory.mktemp("tc") / "tc.mp4"
    write_timecoded(path, seconds=12, fps=25, size=(160, 120), gop=25)
    return str(path)


@pytest.mark.parametrize("fps,t0,t1", [(16, 3.0, 8.0), (25, 0.0, 4.0), (40, 1.3, 2.3)])
def test_frame_time_rule(timecoded, fps, t0, t1):
    clip = media.decode_window(timecoded, t0, t1, fps=fps, short_side=64, audio_rate=16000)
    expected = [math.floor((t0 + i / fps) * 25 + 1e-6) for i in range(round((t1 - t0) * fps))]
    assert [frame_index(f) for f in clip.frames] == expected
    assert clip.frames[0].shape == (64, 86, 3)


def test_audio_window_lines_up_with_frames(timecoded):
    clip = media.decode_window(timecoded, 3.0, 8.0, fps=16, short_side=64, audio_rate=16000)
    assert clip.audio.dtype == np.int16 and clip.audio.size == 5 * 16000
    onsets = burst_onsets(clip.audio / 32768.0, 16000)
    assert np.allclose(onsets, [0, 1, 2, 3, 4], atol=0.01)  # bursts at whole seconds of source time


def test_window_past_the_end_stops_at_the_last_frame(timecoded):
    clip = media.decode_window(timecoded, 10.0, 15.0, fps=16, short_side=64, audio_rate=16000)
    assert len(clip.frames) == 32 and frame_index(clip.frames[-1]) == 298  # floor(11.9375 * 25)
    assert clip.audio.size == 2 * 16000


def test_rotation_is_applied():
    clip = media.decode_window(str(MEDIA / "decord_video_90.mov"), 0, None, fps=30, short_side=64, audio_rate=16000)
    height, width = clip.frames[0].shape[:2]
    assert width == 64 and height > width  # 568x320 landscape coded, displayed portrait


def test_no_container_duration():
    info = media.probe(str(MEDIA / "moviepy_no_duration.webm"))
    assert info.duration is None and info.has_audio
    clip = media.decode_window(str(MEDIA / "moviepy_no_duration.webm"), 0, None, fps=16, short_side=64, audio_rate=16000)
    assert 4.8 <= clip.duration <= 5.0 and clip.audio.size == round(clip.duration * 16000)


def test_several_streams_pick_the_best_pair():
    info = media.probe(str(MEDIA / "torchcodec_nasa_13013.mp4"))
    assert (info.width, info.height, info.audio_rate) == (480, 270, 16000)


def test_variable_frame_rate(tmp_path):
    import fractions

    import av

    path = tmp_path / "vfr.mkv"
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 1.0]  # irregular presentation times (seconds)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for k, t in enumerate(times):
            rgb = np.full((48, 64, 3), 16 * k + 8, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), fractions.Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    clip = media.decode_window(str(path), 0.0, 1.0, fps=10, short_side=48, audio_rate=16000, want_audio=False)
    shown = [int(round((float(np.median(f[..., 0])) - 8) / 16)) for f in clip.frames]
    assert shown == [0, 1, 2, 2, 2, 3, 4, 4, 4, 4]  # the frame on screen at t = 0, 0.1, ..., 0.9


def test_corrupt_file_is_reported():
    with pytest.raises(ClipError) as err:
        media.decode_window(str(MEDIA / "decord_corrupted.mp4"), 0, 5, fps=16, short_side=64, audio_rate=16000)
    assert err.value.reason == "corrupt"


def test_output_size_keeps_aspect_and_even_sides():
    assert media.output_size(340, 256, 128) == (170, 128)
    assert media.output_size(320, 568, 128) == (128, 228)


def test_mp4_frame_storage_round_trips(timecoded):
    import io

    import av

    from avtools.fetch import Fetched
    from avtools.recipes import Clip
    from avtools.transcode import TranscodeSettings, make_sample

    clip = Clip("tc_000002_000004", "x", "train", 0, start=2.0, end=4.0, path=timecoded)
    sample = make_sample(clip, Fetched(timecoded, 0.0, 0, timecoded), TranscodeSettings(fps=16, short_side=64, frames="mp4"))
    members = dict(sample.members)
    assert not [m for m in members if m.endswith(".mjpeg")] and sample.meta["frames_format"] == "mp4"
    with av.open(io.BytesIO(members[f"{sample.key}.mp4"])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == sample.meta["n_frames"] == 32
    assert [frame_index(f.to_ndarray(format="rgb24")) for f in frames[:3]] == [50, 51, 53]
    keys = [i for i, f in enumerate(frames) if f.key_frame] + [len(frames)]
    assert keys[0] == 0 and max(b - a for a, b in zip(keys, keys[1:])) <= 16  # GOP at most 16 (scene cuts add more)
    as_read = {schema.split_member(name)[1]: data for name, data in sample.members} | {"__key__": sample.key}
    sheet = sheet_frames(as_read, sample.meta)  # the dataset card's contact sheet decodes the mp4
    assert len(sheet) == SHEET_FRAMES and frame_index(sheet[-1]) == frame_index(frames[-1].to_ndarray(format="rgb24"))


class _ScalerPerFrame:
    """The path before the fast one: `VideoFrame.reformat`, which builds a new scaler at every call."""

    @staticmethod
    def reformat(frame, **settings):
        return frame.reformat(**settings)


@pytest.mark.parametrize("name,t0,t1", [("moviepy_video_with_failing_audio.mp4", 0.5, 3.0),
                                        ("decord_video_90.mov", 0.0, None)])  # rotated
def test_the_fast_path_decodes_exactly_what_the_plain_path_did(name, t0, t1, monkeypatch):
    """One scaler kept per clip and one decoder thread per worker (the builder's fast path) give the same pixels
    and samples as a scaler built per frame with FFmpeg's own thread count (the path before it)."""
    from avtools.stages import Stages

    path, stages = str(MEDIA / name), Stages()
    fast = media.decode_window(path, t0, t1, fps=16, short_side=128, audio_rate=16000, threads=1, stages=stages)
    monkeypatch.setattr(media, "VideoReformatter", _ScalerPerFrame)
    plain = media.decode_window(path, t0, t1, fps=16, short_side=128, audio_rate=16000, threads=0)
    assert len(fast.frames) == len(plain.frames) > 0
    for ours, theirs in zip(fast.frames, plain.frames):
        np.testing.assert_array_equal(ours, theirs)
    if plain.audio is not None:
        np.testing.assert_array_equal(fast.audio, plain.audio)
    assert stages["decode"] > 0 and stages["scale"] > 0

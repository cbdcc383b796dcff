"""The real yt-dlp client against a range-capable HTTP server on 127.0.0.1."""
from __future__ import annotations

import pytest

from avtools import media
from avtools.fetch import FetchOptions, Fetcher, classify_download_error
from avtools.reasons import ClipError
from avtools.recipes import Clip
from avtools.transcode import TranscodeSettings, make_sample
from avcl.data import schema


def fetcher_for(server, **kw) -> Fetcher:
    return Fetcher(FetchOptions(url_template=server.url("{youtube_id}.mp4"), pad=1.0, retries=2, retry_wait=0.05, **kw))


def test_section_download_matches_the_request(served):
    clip = Clip("tc_a_000012_000022", "bowling", "train", 3, youtube_id="tc_a", start=12.0, end=22.0)
    before = served.bytes_sent["tc_a.mp4"]
    fetched = fetcher_for(served).fetch(clip)
    try:
        assert fetched.offset == 11.0  # the section starts `pad` before the clip
        size = (served.root / "tc_a.mp4").stat().st_size
        assert fetched.bytes_downloaded < 0.6 * size  # only the section, not the whole 30 s video
        sample = make_sample(clip, fetched, TranscodeSettings(fps=16, short_side=64, audio_rate=16000))
    finally:
        fetched.release()
    assert served.bytes_sent["tc_a.mp4"] > before
    meta = sample.meta
    assert (meta["fps"], meta["n_frames"], meta["audio_rate"], meta["n_audio_samples"]) == (16, 160, 16000, 160000)
    assert meta["start"] == 12.0 and meta["end"] == 22.0 and meta["height"] == 64
    names = [name for name, _ in sample.members]
    assert names == [f"{sample.key}.json", f"{sample.key}.wav", f"{sample.key}.mjpeg"]
    audio, rate = schema.read_wav(dict(sample.members)[f"{sample.key}.wav"])
    assert rate == 16000 and audio.size == 160000


@pytest.mark.parametrize("template", ["{youtube_id}.mp4", "watch/{youtube_id}"])
def test_first_frame_is_the_requested_time(served, template):
    """Direct media URLs (one HEAD check) and page URLs (yt-dlp's extractor) give the same section."""
    from tests.support.timecoded import frame_index

    clip = Clip("tc_b_000007_000009", "bowling", "train", 3, youtube_id="tc_b", start=7.0, end=9.0)
    fetched = Fetcher(FetchOptions(url_template=served.url(template), pad=1.0, retries=2, retry_wait=0.05)).fetch(clip)
    try:
        decoded = media.decode_window(fetched.path, clip.start - fetched.offset, clip.end - fetched.offset,
                                      fps=30, short_side=64, audio_rate=16000)
    finally:
        fetched.release()
    assert [frame_index(f) for f in decoded.frames[:3]] == [210, 211, 212]


@pytest.mark.parametrize("setup,reason", [
    (lambda s: s.missing.add("gone.mp4"), "not_found"),
    (lambda s: s.html_pages.add("gone.mp4"), "not_media"),
])
def test_failures_get_their_reason(served, setup, reason):
    setup(served)
    try:
        with pytest.raises(ClipError) as err:
            fetcher_for(served).fetch(Clip("gone_000000_000005", "bowling", "train", youtube_id="gone", start=0, end=5))
        assert err.value.reason == reason and not err.value.retryable
    finally:
        served.missing.discard("gone.mp4")
        served.html_pages.discard("gone.mp4")


def test_rate_limited_then_succeeds(served):
    served.rate_limited["tc_a.mp4"] = 2
    clip = Clip("tc_a_000001_000004", "bowling", "train", youtube_id="tc_a", start=1.0, end=4.0)
    fetched = fetcher_for(served).fetch(clip)
    fetched.release()
    assert served.rate_limited["tc_a.mp4"] == 0


def test_rate_limit_that_outlasts_the_retries_is_retryable(served):
    served.rate_limited["tc_a.mp4"] = 100
    try:
        with pytest.raises(ClipError) as err:
            fetcher_for(served).fetch(Clip("tc_a_000001_000004", "x", "train", youtube_id="tc_a", start=1.0, end=4.0))
        assert err.value.reason == "rate_limited" and err.value.retryable
    finally:
        served.rate_limited["tc_a.mp4"] = 0


@pytest.mark.parametrize("message,reason", [
    ("ERROR: [youtube] abc: Sign in to confirm you're not a bot. Use --cookies", "bot_check"),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", "private"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "removed"),
    ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this video available in your country", "unavailable"),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "forbidden"),
    ("ERROR: [youtube] abc: Requested format is not available", "js_runtime"),
    ("ERROR: Unable to download webpage: <urlopen error [Errno 111] Connection refused>", "network"),
    ("ERROR: something nobody has seen before", "fetch_error"),
])
def test_error_taxonomy(message, reason):
    url = "https://www.youtube.com/watch?v=abc"
    assert classify_download_error(message, url).reason == reason


def test_local_mirror_in_cvdf_layout(tmp_path, served):
    (tmp_path / "bowling").mkdir()
    (tmp_path / "bowling" / "tc_a_000012_000022.mp4").symlink_to(served.root / "tc_a.mp4")
    clip = Clip("tc_a_000012_000022", "bowling", "train", youtube_id="tc_a", start=12.0, end=22.0)
    fetched = Fetcher(FetchOptions(source=tmp_path)).fetch(clip)
    assert fetched.offset == 12.0 and fetched.path.endswith("tc_a_000012_000022.mp4")
    with pytest.raises(ClipError, match="not_found"):
        Fetcher(FetchOptions(source=tmp_path)).fetch(Clip("zz_000001_000002", "x", "train", youtube_id="zz", start=1, end=2))

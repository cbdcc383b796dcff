"""One clip from fetched media to a shard sample: probe, filter, decode the window, encode frames and audio.

Every rejection is a `ClipError` with a precise reason (no_video, no_audio, silent_audio, too_short,
corrupt); the build records it in the ledger and carries on. The audio-visual filters (no_audio, silent_audio)
apply only with `av_filters`: evaluation sets such as UCF101 keep every video of their official splits, the
ones without sound as video-only samples (no wav member, json `has_audio` false).
"""
from __future__ import annotations

import dataclasses
import fractions
import tempfile
from pathlib import Path

import numpy as np

from avcl.data import schema
from avtools import media
from avtools.fetch import Fetched
from avtools.reasons import ClipError
from avtools.recipes import Clip
from avtools.stages import Stages


NATIVE = "native"


@dataclasses.dataclass
class TranscodeSettings:
    fps: float | str = 16.0  # frames per second, or "native": each video's own rate, at most `max_fps`
    max_fps: float = 30.0
    short_side: int = 128
    audio_rate: int = 16000
    frames: str = "jpg"  # "jpg": a JPEG per frame, packed in one member; "mp4": one short-GOP H.264 stream
    jpeg_quality: int = 90
    gop: int = 16
    min_duration: float = 2.0  # seconds of media the clip window must hold
    silence_db: float = -60.0  # RMS level (dBFS) at or below which audio counts as silent
    av_filters: bool = True  # reject clips without an audio stream (no_audio) or with silent audio

    def __post_init__(self):
        if self.fps != NATIVE and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"fps must be a positive number or {NATIVE!r}, not {self.fps!r}")

    def output_fps(self, source_fps: float) -> float:
        """The frame rate a clip is written at: the setting, or its own rate capped by `max_fps`."""
        if self.fps != NATIVE:
            return float(self.fps)
        return min(source_fps, self.max_fps) if source_fps > 0 else self.max_fps


@dataclasses.dataclass
class Sample:
    key: str
    split: str
    meta: dict
    members: list[tuple[str, bytes]]
    stages: Stages = dataclasses.field(default_factory=Stages)  # seconds per stage spent making it

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.members)


def make_sample(clip: Clip, fetched: Fetched, settings: TranscodeSettings, *, decoder_threads: int = 0,
                stages: Stages | None = None) -> Sample:
    """The shard sample of `clip` from its fetched media; `decoder_threads` 0 lets FFmpeg choose (one per core),
    `stages` receives the time of each step."""
    stages = stages if stages is not None else Stages()
    with stages.timing("decode"):
        info = media.probe(fetched.path)
    want_video = not clip.audio_only
    if not info.has_video and not info.has_audio:
        raise ClipError("corrupt", f"{fetched.path} has neither a video nor an audio stream (truncated, or not media)")
    if want_video and not info.has_video:
        raise ClipError("no_video", f"{fetched.path} has no video stream")
    t0 = max(0.0, (clip.start or 0.0) - fetched.offset)
    t1 = None if clip.end is None else clip.end - fetched.offset
    if info.duration is not None and t0 >= info.duration:
        raise ClipError("too_short", f"the clip starts at {t0:.2f}s but the media lasts {info.duration:.2f}s")
    # decode before judging the audio: a corrupt file is reported as corrupt, whatever else it lacks
    decoded = media.decode_window(fetched.path, t0, t1, fps=settings.output_fps(info.fps),
                                  short_side=settings.short_side, audio_rate=settings.audio_rate,
                                  want_video=want_video, want_audio=info.has_audio, threads=decoder_threads,
                                  stages=stages)
    if not info.has_audio and (clip.audio_only or settings.av_filters):
        raise ClipError("no_audio", f"{fetched.path} has no audio stream")
    if decoded.duration < settings.min_duration:
        raise ClipError("too_short", f"{decoded.duration:.2f}s of media in the window, "
                                     f"--min-duration is {settings.min_duration}s")
    if decoded.audio is not None and settings.av_filters:
        level = media.loudness_db(decoded.audio)
        if level <= settings.silence_db:
            raise ClipError("silent_audio", f"audio RMS {level:.1f} dBFS <= --silence-db {settings.silence_db}")
    return encode_sample(clip, decoded, settings, source=fetched.source, stages=stages)


def encode_sample(clip: Clip, decoded: media.DecodedClip, settings: TranscodeSettings, source: str,
                  stages: Stages | None = None) -> Sample:
    stages = stages if stages is not None else Stages()
    frames, video = None, None
    with stages.timing("jpeg"):
        if decoded.frames and settings.frames == "mp4":
            video = encode_mp4(decoded.frames, decoded.fps, settings.gop)
        elif decoded.frames:
            frames = [encode_jpeg(rgb, settings.jpeg_quality) for rgb in decoded.frames]
    with stages.timing("wav"):
        audio = schema.wav_bytes(decoded.audio, settings.audio_rate) if decoded.audio is not None else None
    height, width = decoded.frames[0].shape[:2] if decoded.frames else (0, 0)
    start = clip.start or 0.0
    meta = {
        "clip_id": clip.clip_id, "youtube_id": clip.youtube_id, "label": clip.label,
        "label_index": clip.label_index, "split": clip.split, "start": start,
        "end": start + decoded.duration, "fps": decoded.fps if decoded.frames else 0,
        "n_frames": len(decoded.frames), "width": width, "height": height,
        "audio_rate": settings.audio_rate if audio is not None else 0,
        "n_audio_samples": 0 if decoded.audio is None else int(decoded.audio.size),
        "has_audio": audio is not None,
        "source": source,
        "frames_format": settings.frames if decoded.frames else "",
        **clip.extra,
    }
    key = schema.sample_key(clip.clip_id)
    return Sample(key, clip.split, meta, schema.members(key, meta, audio, frames, video), stages)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB", colorsubsampling="420")


def encode_mp4(frames: list[np.ndarray], fps: float, gop: int) -> bytes:
    """Frames as H.264 mp4 bytes (yuv420p, keyframe every `gop` frames, moov first). Written through a
    temporary file: moving the moov atom to the front (faststart) reopens the output by name."""

    height, width = frames[0].shape[:2]
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        _write_mp4(tmp.name, frames, fps, gop, width, height)
        return Path(tmp.name).read_bytes()


def _write_mp4(path: str, frames, fps: float, gop: int, width: int, height: int) -> None:
    import av

    with av.open(path, "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "20", "bf": "0"}
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())

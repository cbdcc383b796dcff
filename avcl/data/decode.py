"""Sample bytes to uint8 frames and int16 audio, decoding only what the views need.

JPEG frames decode with simplejpeg, DCT-domain downscaled by 1/8, 1/4 or 1/2 where the canvas allows (Pillow when
simplejpeg is missing); `mp4` samples decode with PyAV (short GOP, so the whole clip once); FLAC with soundfile,
only the windows the views need. Every function raises `SampleError` on bad bytes so the stream can
skip and count the sample.
"""
from __future__ import annotations

import io

import numpy as np

from avcl.data import schema


class SampleError(ValueError):
    """A sample that cannot be used (missing member, undecodable bytes); the stream skips and counts it."""


def sample_meta(sample: dict) -> dict:
    if schema.JSON_EXT not in sample:
        raise SampleError(f"{sample.get('__key__')}: no {schema.JSON_EXT} member")
    try:
        return schema.decode_json(sample[schema.JSON_EXT])
    except ValueError as exc:
        raise SampleError(f"{sample.get('__key__')}: bad json: {exc}") from exc


def frame_count(sample: dict, meta: dict) -> int:
    """Frames the sample holds; a JPEG sample missing frames its json promises is truncated and refused."""
    if schema.VIDEO_EXT in sample:
        return int(meta["n_frames"])
    have = len(schema.frame_members(sample))
    if have == 0 or have < int(meta["n_frames"]):
        raise SampleError(f"{sample.get('__key__')}: {have} of {meta['n_frames']} frames present")
    return have


def decode_frames(sample: dict, indices: np.ndarray, canvas: int) -> list[np.ndarray]:
    """RGB uint8 frames at `indices` (repeats allowed), each with short side >= canvas where the source allows."""
    unique = sorted(set(int(i) for i in indices))
    if schema.VIDEO_EXT in sample:
        decoded = _decode_mp4(sample[schema.VIDEO_EXT], set(unique))
    else:
        names = schema.frame_members(sample)
        decoded = {i: decode_jpeg(sample[names[i]], canvas) for i in unique}
    missing = [i for i in unique if i not in decoded]
    if missing:
        raise SampleError(f"{sample.get('__key__')}: frames {missing[:3]} missing from the video")
    return [decoded[int(i)] for i in indices]


def decode_jpeg(data: bytes, canvas: int) -> np.ndarray:
    try:
        import simplejpeg
    except ImportError:
        return _decode_jpeg_pillow(data)
    try:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                      **_simd_scaling(height, width, canvas))
    except ValueError as exc:
        raise SampleError(f"corrupt JPEG: {exc}") from exc


def _simd_scaling(height: int, width: int, canvas: int) -> dict[str, int]:
    """simplejpeg's size bounds that select the strongest 1/8, 1/4 or 1/2 DCT scaling still covering the canvas,
    or none. libjpeg-turbo has SIMD inverse DCTs only for these; 7/8 or 3/4 run scalar code and decode ~1.5x slower
    than the full size (BENCHMARKS.md, two-view loader)."""
    for denominator in (8, 4, 2):
        scaled_height, scaled_width = -(-height // denominator), -(-width // denominator)
        if min(scaled_height, scaled_width) >= canvas:
            return {"min_height": scaled_height, "min_width": scaled_width}
    return {}


def _decode_jpeg_pillow(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SampleError(f"corrupt JPEG: {exc}") from exc


def _decode_mp4(data: bytes, wanted: set[int]) -> dict[int, np.ndarray]:
    import av

    frames: dict[int, np.ndarray] = {}
    last = max(wanted)
    try:
        with av.open(io.BytesIO(data)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
    except av.error.FFmpegError as exc:
        raise SampleError(f"corrupt mp4: {exc}") from exc
    return frames


class AudioReader:
    """Random access to a sample's FLAC: only the windows the views need are decoded (seek + read)."""

    def __init__(self, sample: dict):
        import soundfile

        if schema.AUDIO_EXT not in sample:
            raise SampleError(f"{sample.get('__key__')}: no {schema.AUDIO_EXT} member (audio needed by these views)")
        self.key = sample.get("__key__")
        try:
            self.file = soundfile.SoundFile(io.BytesIO(sample[schema.AUDIO_EXT]))
        except Exception as exc:  # soundfile raises LibsndfileError (a RuntimeError) on bad bytes
            raise SampleError(f"{self.key}: corrupt FLAC: {exc}") from exc
        self.rate, self.length = self.file.samplerate, self.file.frames

    def read(self, lo: int, hi: int) -> np.ndarray:
        """int16 samples [lo, hi) of the recording (0 <= lo <= hi <= length)."""
        try:
            self.file.seek(lo)
            out = self.file.read(hi - lo, dtype="int16")
        except Exception as exc:
            raise SampleError(f"{self.key}: corrupt FLAC: {exc}") from exc
        if len(out) != hi - lo:
            raise SampleError(f"{self.key}: FLAC ends at {lo + len(out)} samples, not {hi}")
        return out

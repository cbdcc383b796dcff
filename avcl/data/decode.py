"""Sample bytes to uint8 frames and int16 audio, decoding only what the views need.

JPEG frames decode with simplejpeg, DCT-domain downscaled by 1/8, 1/4 or 1/2 where the canvas allows (Pillow when
simplejpeg is missing); `mp4` samples decode with PyAV (short GOP, so the whole clip once); WAV audio is read
window by window. Every function raises `SampleError` on bad bytes so the stream can skip and count the sample.
"""
from __future__ import annotations

import io
import wave

import numpy as np

from avcl.data import schema


class SampleError(ValueError):
    """A sample that cannot be used (missing member, undecodable bytes); the stream skips and counts it."""


NUMERIC_FIELDS = ("fps", "n_frames", "audio_rate", "n_audio_samples")  # what the views compute with


def sample_meta(sample: dict) -> dict:
    key = sample.get("__key__")
    if schema.JSON_EXT not in sample:
        raise SampleError(f"{key}: no {schema.JSON_EXT} member")
    try:
        meta = schema.decode_json(sample[schema.JSON_EXT])
    except schema.MetadataError as exc:
        raise SampleError(f"{key}: bad json: {exc}") from exc
    bad = [f for f in NUMERIC_FIELDS if isinstance(meta.get(f), bool) or not isinstance(meta.get(f), (int, float))]
    if bad:
        raise SampleError(f"{key}: bad json: {', '.join(bad)} missing or not numbers")
    if schema.JPEGS_EXT in sample:
        _check_frame_offsets(key, meta, len(sample[schema.JPEGS_EXT]))
    return meta


def _check_frame_offsets(key, meta: dict, packed_bytes: int) -> None:
    """The json's frame offsets must cut the packed JPEGs into n_frames pieces, to their last byte."""
    offsets = meta.get("frame_offsets")
    if not isinstance(offsets, list) or not all(type(o) is int for o in offsets) or offsets != sorted(offsets):
        raise SampleError(f"{key}: bad json: frame_offsets must be increasing integers")
    if len(offsets) != int(meta["n_frames"]) + 1 or offsets[-1] != packed_bytes:
        raise SampleError(f"{key}: {packed_bytes} bytes of frames, the json promises {offsets[-1]} "
                          f"in {meta['n_frames']} frames")


def frame_count(sample: dict, meta: dict) -> int:
    """Frames the sample holds (its json is `sample_meta`'s, checked against the packed JPEGs)."""
    if schema.VIDEO_EXT in sample:
        return int(meta["n_frames"])
    return len(jpeg_frames(sample, meta))


def jpeg_frames(sample: dict, meta: dict) -> list[memoryview]:
    """The sample's JPEG frames, sliced (without copies) from its packed member at the offsets `sample_meta`
    checked."""
    if schema.JPEGS_EXT not in sample:
        raise SampleError(f"{sample.get('__key__')}: no frames: neither {schema.JPEGS_EXT} nor {schema.VIDEO_EXT} "
                          f"among its members ({', '.join(sorted(e for e in sample if not e.startswith('__')))})")
    packed, offsets = memoryview(sample[schema.JPEGS_EXT]), meta["frame_offsets"]
    return [packed[lo:hi] for lo, hi in zip(offsets, offsets[1:])]


def decode_frames(sample: dict, meta: dict, indices: np.ndarray, canvas: int) -> list[np.ndarray]:
    """RGB uint8 frames at `indices` (repeats allowed), each with short side >= canvas where the source allows."""
    unique = sorted(set(int(i) for i in indices))
    if schema.VIDEO_EXT in sample:
        decoded = _decode_mp4(sample[schema.VIDEO_EXT], set(unique))
    else:
        jpegs = jpeg_frames(sample, meta)
        decoded = {i: decode_jpeg(jpegs[i], canvas) for i in unique if i < len(jpegs)}
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
    """Random access to a sample's WAV: only the windows the views need are read."""

    def __init__(self, sample: dict):
        self.key = sample.get("__key__")
        if schema.AUDIO_EXT not in sample:
            raise SampleError(f"{self.key}: no {schema.AUDIO_EXT} member (audio needed by these views)")
        try:
            self.file = wave.open(io.BytesIO(sample[schema.AUDIO_EXT]))
        except (wave.Error, EOFError) as exc:
            raise SampleError(f"{self.key}: corrupt WAV: {exc}") from exc
        if (self.file.getnchannels(), self.file.getsampwidth()) != (1, 2):
            raise SampleError(f"{self.key}: WAV is not mono 16-bit ({self.file.getnchannels()} channels, "
                              f"{8 * self.file.getsampwidth()} bits)")
        self.rate, self.length = self.file.getframerate(), self.file.getnframes()

    def read(self, lo: int, hi: int) -> np.ndarray:
        """int16 samples [lo, hi) of the recording (0 <= lo <= hi <= length)."""
        self.file.setpos(lo)
        out = np.frombuffer(self.file.readframes(hi - lo), "<i2")
        if len(out) != hi - lo:
            raise SampleError(f"{self.key}: truncated WAV: {len(out)} of the {hi - lo} samples in [{lo}, {hi})")
        return out

"""The avtools sample format, shared by the shard writer (avtools) and the reader (avcl). Torch-free.

A sample in a WebDataset tar shard is a group of members sharing one key (the key holds no dots):

    {key}.json            metadata (SAMPLE_FIELDS below)
    {key}.flac            mono 16-bit FLAC audio, absent for video-only samples
    {key}.{i:04d}.jpg     frame i as JPEG (frames="jpg", the default), absent for audio-only samples
    {key}.mp4             all frames as one short-GOP H.264 stream (frames="mp4"), instead of the JPEGs

Nothing else in the code base spells out a member name: use the helpers here.
"""
from __future__ import annotations

import io
import json
import re

JSON_EXT = "json"
AUDIO_EXT = "flac"
VIDEO_EXT = "mp4"
FRAME_EXT_RE = re.compile(r"^(\d{4})\.jpg$")
FRAME_FORMATS = ("jpg", "mp4")

SAMPLE_FIELDS = (
    "clip_id", "youtube_id", "label", "label_index", "split", "start", "end", "fps", "n_frames",
    "width", "height", "audio_rate", "n_audio_samples", "source",
)

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def sample_key(clip_id: str) -> str:
    """A tar key for a clip id: dots and other unsafe characters become '-' (WebDataset splits keys at dots)."""
    return _KEY_UNSAFE.sub("-", clip_id)


def frame_member(index: int) -> str:
    return f"{index:04d}.jpg"


def encode_json(meta: dict) -> bytes:
    missing = [f for f in SAMPLE_FIELDS if f not in meta]
    if missing:
        raise ValueError(f"sample metadata lacks {missing}")
    return json.dumps(meta, sort_keys=True).encode()


def decode_json(data: bytes) -> dict:
    return json.loads(data)


def frame_members(sample: dict) -> list[str]:
    """The frame extensions of a sample dict (as WebDataset groups them), in frame order."""
    return sorted(ext for ext in sample if FRAME_EXT_RE.match(ext))


def members(key: str, meta: dict, audio: bytes | None, frames: list[bytes] | None, video: bytes | None) -> list[tuple[str, bytes]]:
    """(member name, payload) pairs of one sample, in the order they are written to the tar."""
    out = [(f"{key}.{JSON_EXT}", encode_json(meta))]
    if audio is not None:
        out.append((f"{key}.{AUDIO_EXT}", audio))
    if video is not None:
        out.append((f"{key}.{VIDEO_EXT}", video))
    for i, jpg in enumerate(frames or ()):
        out.append((f"{key}.{frame_member(i)}", jpg))
    return out


def split_member(name: str) -> tuple[str, str]:
    """'dir/key.0001.jpg' -> ('dir/key', '0001.jpg'), WebDataset's rule: the key ends at the first dot of the basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def flac_bytes(samples_int16, rate: int) -> bytes:
    """Mono int16 numpy samples as FLAC bytes."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, samples_int16, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def read_flac(data: bytes):
    """FLAC bytes -> (int16 numpy array, rate)."""
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    return samples, rate

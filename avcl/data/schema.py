"""The avtools sample format, shared by the shard writer (avtools) and the reader (avcl). Torch-free.

A sample in a WebDataset tar shard is a group of members sharing one key (the key holds no dots):

    {key}.json            metadata (SAMPLE_FIELDS below)
    {key}.wav             mono 16-bit PCM audio, absent for video-only samples (json `has_audio` false)
    {key}.mjpeg           all frames as JPEGs back to back (frames="jpg", the default; an MJPEG stream ffmpeg
                          plays), frame i at bytes [frame_offsets[i], frame_offsets[i + 1]) of the json
    {key}.mp4             all frames as one short-GOP H.264 stream (frames="mp4"), instead of the JPEGs

Why so few members, and PCM: the loader pays per member (tar headers, grouping) and per decoded byte. One member
per frame (~160 for a 10 s clip) cost 3.2 ms of tar parsing per sample, and FLAC 2.1 ms for two 2 s windows;
three members take ~1 ms (reading included) and the PCM windows 0.04 ms. PCM makes a sample ~16% bigger than
FLAC would (BENCHMARKS.md, two-view loader).
Nothing else in the code base spells out a member name: use the helpers here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import re
import wave

FORMAT = "avtools-webdataset/2"
JSON_EXT = "json"
AUDIO_EXT = "wav"
JPEGS_EXT = "mjpeg"
VIDEO_EXT = "mp4"
FRAME_FORMATS = ("jpg", "mp4")

SAMPLE_FIELDS = (
    "clip_id", "youtube_id", "label", "label_index", "split", "start", "end", "fps", "n_frames",
    "width", "height", "audio_rate", "n_audio_samples", "has_audio", "source",
)

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def sample_key(clip_id: str) -> str:
    """A tar key for a clip id, one to one: a safe id (letters, digits, '_', '-') is its own key; in any other
    id the unsafe characters become '-' (WebDataset splits keys at dots, '/' makes folders) and a hash of the
    id is appended, so `a.b`, `a/b` and `a-b` stay three keys."""
    if not _KEY_UNSAFE.search(clip_id):
        return clip_id
    return f"{_KEY_UNSAFE.sub('-', clip_id)}-{hashlib.sha1(clip_id.encode()).hexdigest()[:10]}"


def encode_json(meta: dict) -> bytes:
    missing = [f for f in SAMPLE_FIELDS if f not in meta]
    if missing:
        raise ValueError(f"sample metadata lacks {missing}")
    return json.dumps(meta, sort_keys=True).encode()


class MetadataError(ValueError):
    """JSON (a sample's `.json` member, a dataset.json) that is not a JSON object."""


def decode_json(data: bytes | str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise MetadataError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise MetadataError(f"an object expected, not {type(value).__name__}")
    return value


def members(key: str, meta: dict, audio: bytes | None, jpegs: list[bytes] | None,
            video: bytes | None) -> list[tuple[str, bytes]]:
    """(member name, payload) pairs of one sample, in the order they are written to the tar; JPEG frames are
    packed into one member, their byte offsets added to the metadata."""
    if jpegs:
        meta = meta | {"frame_offsets": [0, *itertools.accumulate(len(jpg) for jpg in jpegs)]}
    out = [(f"{key}.{JSON_EXT}", encode_json(meta))]
    if audio is not None:
        out.append((f"{key}.{AUDIO_EXT}", audio))
    if video is not None:
        out.append((f"{key}.{VIDEO_EXT}", video))
    if jpegs:
        out.append((f"{key}.{JPEGS_EXT}", b"".join(jpegs)))
    return out


def split_member(name: str) -> tuple[str, str]:
    """'dir/key.wav' -> ('dir/key', 'wav'), WebDataset's rule: the key ends at the first dot of the basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def wav_bytes(samples_int16, rate: int) -> bytes:
    """Mono int16 numpy samples as WAV bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples_int16.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


def read_wav(data: bytes):
    """WAV bytes of `wav_bytes` -> (int16 numpy array, rate)."""
    import numpy as np

    with wave.open(io.BytesIO(data)) as recording:
        return np.frombuffer(recording.readframes(recording.getnframes()), "<i2"), recording.getframerate()


# ---- dataset.json: what a built dataset holds ---------------------------------------------------------------

DATASET_JSON = "dataset.json"


@dataclasses.dataclass
class ShardInfo:
    name: str
    samples: int


@dataclasses.dataclass
class ClassCount:
    available: int = 0
    total: int = 0


@dataclasses.dataclass
class SplitInfo:
    available: int = 0  # clips in the shards
    total: int = 0  # clips the annotations name
    failed: int = 0
    classes: dict[str, ClassCount] = dataclasses.field(default_factory=dict)
    shards: list[ShardInfo] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DatasetInfo:
    """dataset.json, written by the builder (avtools.ledger.summarize) and read by everything else: per split its
    shards with sample counts and per-class counts; per official fold and role the expected and available
    videos; the build's parameters, tool versions and class list; what became of the annotation rows."""
    name: str
    class_list: dict = dataclasses.field(default_factory=dict)  # file, version, classes, sha256
    format: str = FORMAT
    preprocessing: dict = dataclasses.field(default_factory=dict)
    samples_per_shard: int = 0
    partitions: int = 1
    split_rule: dict = dataclasses.field(default_factory=dict)  # the options that decided the splits
    tools: dict = dataclasses.field(default_factory=dict)
    complete: bool = False
    counts: dict = dataclasses.field(default_factory=dict)  # total, available, settled, duplicates_in_annotations
    annotations: dict = dataclasses.field(default_factory=dict)
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    splits: dict[str, SplitInfo] = dataclasses.field(default_factory=dict)
    folds: dict[str, dict[str, dict[str, int]]] = dataclasses.field(default_factory=dict)  # fold -> role -> counts

    def classes(self) -> list[str]:
        return sorted({name for split in self.splits.values() for name in split.classes})

    def shard_names(self) -> list[str]:
        return [shard.name for split in self.splits.values() for shard in split.shards]

    def shard_samples(self) -> dict[str, int]:
        return {shard.name: shard.samples for split in self.splits.values() for shard in split.shards}

    def to_json(self) -> bytes:
        document = dataclasses.asdict(self)
        if not self.folds:
            del document["folds"]
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DatasetInfo:
        """The document parsed and checked; a MetadataError naming the first field that is missing or wrong."""
        document = decode_json(data)
        try:
            splits = {name: SplitInfo(split.get("available", 0), split.get("total", 0), split.get("failed", 0),
                                      {c: ClassCount(**counts) for c, counts in split.get("classes", {}).items()},
                                      [ShardInfo(shard["name"], int(shard["samples"])) for shard in split["shards"]])
                      for name, split in document.get("splits", {}).items()}
            known = {f.name for f in dataclasses.fields(cls)} - {"splits"}
            return cls(splits=splits, **{k: v for k, v in document.items() if k in known})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetadataError(f"not an avtools dataset.json ({type(exc).__name__}: {exc})") from None

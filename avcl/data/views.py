"""What each method asks of one sample: N clips with speed, direction and order, and their aligned audio.

Decode once, emit many views. A `ViewSpec` says how many clips to draw from a video, how long (frames at the
stored fps, or at the rate `fps` asks for: an evaluation protocol's 16 fps read from 25 fps UCF101 takes every
1.5625th stored frame), at which playback speeds (frame skip k) and directions; TCGL's tuples (snippets with gaps, shuffled,
with the permutation's index as label); and the audio window that goes with each clip.

Timing rule (the same as the builder's): stored frame i shows time i / fps and audio sample j plays at j / rate.
A clip of T frames, stride s and speed k covers [t0, t0 + T*s*k / fps). Its audio window has the same centre and
covers `audio_seconds * k` of real time, so at speed 1 with `audio_seconds == T*s/fps` it has the same start and
span as the frames. Speed k shortens that audio to `audio_seconds` by averaging each k samples (a box low-pass,
then decimation: time compresses and pitch rises, as in playback), and a backward clip reverses its waveform.
Outside the recording the window is zero-padded. Audio-only samples (`video=False`, e.g. ESC-50) plan their
windows on a 100 Hz grid of the recording instead of on frames.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from avcl.data.decode import AudioReader, SampleError, decode_frames, frame_count, sample_meta


def permutations(n: int) -> list[tuple[int, ...]]:
    """TCGL's order classes for n snippets: the permutations of range(n) in lexicographic order."""
    return list(itertools.permutations(range(n)))


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    clips: int = 2  # clips drawn per video (TCGL: snippets per tuple)
    frames: int = 16
    stride: int = 1  # frame step at speed 1
    speeds: tuple[int, ...] = (1,)
    directions: tuple[int, ...] = (1,)  # 1 forward, -1 backward
    disjoint: bool = False  # clips from non-overlapping windows (ordering tasks)
    tuple_gap: int | None = None  # TCGL: consecutive snippets `tuple_gap` frames apart, shuffled, order label
    audio: bool = True
    audio_seconds: float = 1.0
    inter_order: bool = False  # an extra audio window before / at / after clip 0 with a 3-way label
    canvas: int = 128  # frames leave the CPU as canvas x canvas crops; the device does the random resized crop
    test_clips: int = 0  # evaluation: this many clips evenly spaced, deterministic (replaces `clips`)
    video: bool = True  # False: audio windows only (audio-only samples)
    fps: float = 0.0  # frame rate clips are sampled at from the stored frames (0: the stored rate, consecutive)

    @property
    def n_clips(self) -> int:
        return self.test_clips or self.clips


METHOD_VIEWS = {
    "xmodal": ViewSpec(clips=1, audio_seconds=1.0),
    "simclr": ViewSpec(clips=2, audio=False),
    "avcl": ViewSpec(clips=2, audio_seconds=2.0),
    "temporal-av": ViewSpec(clips=2, speeds=(1, 2, 4, 8), directions=(1, -1), disjoint=True, inter_order=True),
    "tcgl": ViewSpec(clips=3, tuple_gap=8, audio=False),
}


def run_spec(spec: ViewSpec, data) -> ViewSpec:
    """A method's views as a run's data config (`DataConfig`) sets them: its canvas, and its frames and frame step
    where given. Evaluation derives its views from these, so features see the frame step training saw."""
    overrides = {k: v for k, v in (("frames", data.frames), ("stride", data.stride)) if v}
    return dataclasses.replace(spec, canvas=data.canvas, **overrides)


def eval_spec(spec: ViewSpec, test_clips: int) -> ViewSpec:
    """The evaluation version of a spec: evenly spaced clips, speed 1, forward, no tuples."""
    return dataclasses.replace(spec, test_clips=test_clips, speeds=(1,), directions=(1,), disjoint=False,
                               tuple_gap=None, inter_order=False)


@dataclasses.dataclass
class ClipPlan:
    indices: np.ndarray  # stored frame indices, in playback order
    start: float  # seconds: first frame of the window in source order
    span: float  # seconds the window covers
    speed: int
    direction: int


def plan_clips(spec: ViewSpec, n_frames: int, fps: float, rng: np.random.Generator,
               window: tuple[float, float] = (0.0, 1.0)) -> tuple[list[ClipPlan], int]:
    """The clips of one video, and the order label (TCGL permutation index, else -1).

    `window` (fractions of the video) restricts where clips may lie: a temporally trimmed query.
    """
    first = int(window[0] * n_frames)
    if window != (0.0, 1.0):
        plans, order = plan_clips(spec, max(1, int(window[1] * n_frames) - first), fps, rng)
        return [dataclasses.replace(p, indices=p.indices + first, start=p.start + first / fps) for p in plans], order
    if spec.tuple_gap is not None:
        return _plan_tuple(spec, n_frames, fps, rng)
    step = frame_step(spec, fps)
    speeds = [1] * spec.n_clips if spec.test_clips else rng.choice(_fitting_speeds(spec, n_frames, step), spec.n_clips).tolist()
    directions = [1] * spec.n_clips if spec.test_clips else rng.choice(spec.directions, spec.n_clips).tolist()
    lengths = [_window(spec.frames, step * k) for k in speeds]
    starts = _starts(spec, lengths, n_frames, rng)
    plans = []
    for start, length, speed, direction in zip(starts, lengths, speeds, directions):
        offsets = np.round(np.arange(spec.frames) * step * speed).astype(np.int64)
        indices = np.clip(start + offsets, 0, n_frames - 1)
        plans.append(ClipPlan(indices[::direction], start / fps, length / fps, int(speed), int(direction)))
    return plans, -1


def frame_step(spec: ViewSpec, stored_fps: float) -> float:
    """Stored frames between two frames of a clip at speed 1: the stride, times stored / sampled rate."""
    if not spec.fps or stored_fps <= 0:
        return float(spec.stride)
    return spec.stride * stored_fps / spec.fps


def _window(frames: int, step: float) -> int:
    """Stored frames a clip of `frames` frames `step` apart spans (the last one's own duration included)."""
    return max(1, int(round(frames * step)))


def _fitting_speeds(spec: ViewSpec, n_frames: int, step: float) -> list[int]:
    """The speeds whose windows fit in the video (all clips side by side when disjoint); at least the slowest."""
    clips = spec.n_clips if spec.disjoint else 1
    fitting = [k for k in spec.speeds if clips * _window(spec.frames, step * k) <= n_frames]
    return fitting or [min(spec.speeds)]


def _starts(spec: ViewSpec, lengths: list[int], n_frames: int, rng) -> list[int]:
    if spec.test_clips:
        return [int(round(s)) for s in np.linspace(0, max(0, n_frames - lengths[0]), spec.test_clips)]
    if not spec.disjoint:
        return [int(rng.integers(0, max(0, n_frames - length) + 1)) for length in lengths]
    # disjoint: random offsets into the free frames, windows laid out end to end in a random order
    free = max(0, n_frames - sum(lengths))
    offsets = np.sort(rng.integers(0, free + 1, len(lengths)))
    starts, used = [0] * len(lengths), 0
    for offset, clip in zip(offsets, rng.permutation(len(lengths))):
        starts[clip] = int(min(offset + used, max(0, n_frames - lengths[clip])))
        used += lengths[clip]
    return starts


def _plan_tuple(spec: ViewSpec, n_frames: int, fps: float, rng) -> tuple[list[ClipPlan], int]:
    span = spec.clips * spec.frames * spec.stride + (spec.clips - 1) * spec.tuple_gap
    start = int(rng.integers(0, max(0, n_frames - span) + 1))
    snippet_starts = [start + i * (spec.frames * spec.stride + spec.tuple_gap) for i in range(spec.clips)]
    orders = permutations(spec.clips)
    order = int(rng.integers(len(orders)))
    permutation = orders[order]
    plans = []
    for original in permutation:  # position i holds the snippet that came originally at permutation[i]
        s = snippet_starts[original]
        indices = np.clip(s + np.arange(spec.frames) * spec.stride, 0, n_frames - 1)
        plans.append(ClipPlan(indices, s / fps, spec.frames * spec.stride / fps, 1, 1))
    return plans, order


def audio_window(audio: AudioReader, centre: float, seconds: float, speed: int, direction: int) -> np.ndarray:
    """`seconds * rate` int16 samples: real time `seconds * speed` around `centre`, sped up and maybe reversed."""
    out_len = int(round(seconds * audio.rate))
    covered = out_len * speed
    first = int(round(centre * audio.rate)) - covered // 2
    window = np.zeros(covered, np.int16)
    lo, hi = max(0, first), min(audio.length, first + covered)
    if hi > lo:
        window[lo - first:hi - first] = audio.read(lo, hi)
    if speed > 1:
        window = window.reshape(out_len, speed).mean(axis=1).round().astype(np.int16)
    return window[::direction].copy()


def canvas_crop(frames: list[np.ndarray], canvas: int, rng: np.random.Generator | None) -> np.ndarray:
    """Stack frames as [T, canvas, canvas, 3]: one square crop for all (random, or centred when rng is None)."""
    height, width = frames[0].shape[:2]
    if min(height, width) < canvas:
        frames = [_upscale(f, canvas) for f in frames]
        height, width = frames[0].shape[:2]
    top = (height - canvas) // 2 if rng is None else int(rng.integers(0, height - canvas + 1))
    left = (width - canvas) // 2 if rng is None else int(rng.integers(0, width - canvas + 1))
    return np.stack([f[top:top + canvas, left:left + canvas] for f in frames])


def _upscale(frame: np.ndarray, canvas: int) -> np.ndarray:
    from PIL import Image

    height, width = frame.shape[:2]
    scale = canvas / min(height, width)
    size = (max(canvas, round(width * scale)), max(canvas, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


AUDIO_GRID_HZ = 100
FOLD_ROLES = ("train", "test", "unused")  # UCF101/HMDB51 `folds` json field, as codes 0, 1, 2 (-1: none)


def make_views(sample: dict, spec: ViewSpec, rng: np.random.Generator | None,
               window: tuple[float, float] = (0.0, 1.0)) -> dict:
    """One sample's views as numpy arrays (see `empty_views` for the keys); rng None means evaluation."""
    meta = sample_meta(sample)
    plan_rng = rng if rng is not None else np.random.default_rng(0)
    views = {"label": np.int64(meta.get("label_index", -1)), "valid": np.bool_(True), "folds": fold_codes(meta)}
    if spec.video:
        fps = float(meta["fps"])
        plans, order = plan_clips(spec, frame_count(sample, meta), fps, plan_rng, window)
        frames = decode_frames(sample, meta, np.concatenate([p.indices for p in plans]), spec.canvas)
        views["video"] = canvas_crop(frames, spec.canvas, rng).reshape(len(plans), spec.frames, spec.canvas,
                                                                         spec.canvas, 3)
    else:
        grid = int(meta["n_audio_samples"]) * AUDIO_GRID_HZ // int(meta["audio_rate"])
        audio_spec = dataclasses.replace(spec, frames=round(spec.audio_seconds * AUDIO_GRID_HZ), stride=1, fps=0.0)
        plans, order = plan_clips(audio_spec, max(1, grid), AUDIO_GRID_HZ, plan_rng, window)
    views.update({"speed": np.array([spec.speeds.index(p.speed) for p in plans]),
                  "direction": np.array([int(p.direction < 0) for p in plans]),
                  "start": np.array([p.start for p in plans], np.float32), "order": np.int64(order)})
    if spec.audio:
        audio = AudioReader(sample)
        if audio.rate != meta["audio_rate"]:
            raise SampleError(f"{sample.get('__key__')}: FLAC rate {audio.rate} != json audio_rate {meta['audio_rate']}")
        views["audio"] = np.stack([audio_window(audio, p.start + p.span / 2, spec.audio_seconds, p.speed, p.direction)
                                   for p in plans])
        if spec.inter_order:
            views["xorder"], views["audio_shifted"] = _shifted_audio(audio, plans[0], spec, rng)
    return views


def _shifted_audio(audio: AudioReader, plan: ClipPlan, spec: ViewSpec, rng) -> tuple[np.int64, np.ndarray]:
    """Audio for clip 0 taken one window before (0), at (1) or after (2) its frames: the inter-modal order task."""
    label = int(rng.integers(3)) if rng is not None else 1
    shift = (label - 1) * spec.audio_seconds * plan.speed
    centre = plan.start + plan.span / 2 + shift
    return np.int64(label), audio_window(audio, centre, spec.audio_seconds, plan.speed, plan.direction)


def fold_codes(meta: dict) -> np.ndarray:
    """The sample's role in official splits 1-3 (`folds` json field) as codes into FOLD_ROLES, -1 where absent."""
    folds = meta.get("folds") or {}
    return np.array([FOLD_ROLES.index(folds[str(k)]) if str(k) in folds else -1 for k in (1, 2, 3)], np.int64)


def empty_views(spec: ViewSpec, audio_rate: int) -> dict:
    """Zero views of the right shapes, marked invalid: evaluation's stand-in for a skipped sample or a pad."""
    n = spec.n_clips
    views = {"speed": np.zeros(n, np.int64), "direction": np.zeros(n, np.int64), "start": np.zeros(n, np.float32),
             "order": np.int64(-1), "label": np.int64(-1), "valid": np.bool_(False), "folds": np.full(3, -1)}
    if spec.video:
        views["video"] = np.zeros((n, spec.frames, spec.canvas, spec.canvas, 3), np.uint8)
    if spec.audio:
        views["audio"] = np.zeros((n, int(round(spec.audio_seconds * audio_rate))), np.int16)
        if spec.inter_order:
            views["xorder"], views["audio_shifted"] = np.int64(-1), np.zeros_like(views["audio"][0])
    return views

"""What each method asks of one sample: N clips with speed, direction and order, and their aligned audio.

Decode once, emit many views. A `ViewSpec` says how many clips to draw from a video, how long (frames at the
stored fps, or at the rate `fps` asks for: an evaluation protocol's 16 fps read from 25 fps UCF101 takes every
1.5625th stored frame), at which playback speeds (frame skip k) and directions; TCGL's tuples (snippets with gaps, shuffled,
with the permutation's index as label); and the audio window that goes with each clip.

Each method builds its own ViewSpec from its resolved config (`Method.view_spec`); `run_spec` applies the run's
data settings (frames, stride, canvas), so a preset, `--config` or `--set` changes what the stream samples.

Timing rule (the same as the builder's): stored frame i shows time i / fps and audio sample j plays at j / rate.
A clip of T frames, stride s and speed k covers [t0, t0 + T*s*k / fps). Its audio window has the same centre and
covers `audio_seconds * k` of real time (`audio_seconds = 0`: the clip's own span at speed 1, T*s / the sampled
rate, so audio stays with its frames at any frame rate). Speed k shortens that audio to `audio_seconds`:
`audio_speed = "resample"` low-passes below the new Nyquist frequency (an FFT brick wall) and decimates, as
playback at k times the speed would (time compresses, pitch rises, nothing aliases); `"box"` averages each k
samples (aliases: a low-level cue to the speed). A backward clip reverses its waveform. Outside the recording a
window is zero-padded, except the inter-modal order task's: clip 0 is placed so that its three windows (before,
at, after) lie inside the recording, and a sample too short for that gets the label -1 (ignored). Disjoint clips
take their speeds one after the other among those that still fit, so on a 10 s clip at 16 fps one clip can be at
speed 8 (128 frames) beside one at speed 1. Audio-only samples (`video=False`, e.g. ESC-50) plan their windows on
a 100 Hz grid of the recording instead of on frames.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np

from avcl.data.decode import AudioReader, SampleError, decode_frames, frame_count, sample_meta

log = logging.getLogger("avcl.data")


def permutations(n: int) -> list[tuple[int, ...]]:
    """TCGL's order classes for n snippets: the permutations of range(n) in lexicographic order."""
    return list(itertools.permutations(range(n)))


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    """What a clip is, which training and evaluation share: its frames, their step and sampling rate, the canvas
    they are cropped to, the modalities read and the audio window that goes with each clip."""
    frames: int = 16
    stride: int = 1  # frame step at speed 1
    fps: float = 0.0  # frame rate clips are sampled at from the stored frames (0: the stored rate, consecutive)
    canvas: int = 128  # frames leave the CPU as canvas x canvas crops; the device does the random resized crop
    video: bool = True  # False: audio windows only (audio-only samples)
    audio: bool = True
    audio_seconds: float = 1.0  # 0: the clip's span, frames * stride / fps (run_spec resolves it)


@dataclasses.dataclass(frozen=True)
class ViewSpec(ClipGeometry):
    """A clip geometry plus how training samples clips from a video. Every sampling field's default is the plain
    evaluation sampling (one speed, forward, independent windows, every video read), so views built from a
    geometry alone (`evaluation_views`) can never inherit a training-only choice."""
    clips: int = 2  # clips drawn per video (TCGL: snippets per tuple)
    speeds: tuple[int, ...] = (1,)
    directions: tuple[int, ...] = (1,)  # 1 forward, -1 backward
    disjoint: bool = False  # clips from non-overlapping windows (ordering tasks)
    tuple_gap: int | None = None  # TCGL: consecutive snippets `tuple_gap` frames apart, shuffled, order label
    audio_speed: str = "resample"  # resample (anti-aliased) | box (averages k samples)
    inter_order: bool = False  # an extra audio window before / at / after clip 0 with a 3-way label (2 clips)
    test_clips: int = 0  # evaluation: this many clips evenly spaced, deterministic (replaces `clips`)
    same_window: bool = False  # every clip is the first one's window again (two augmentations of one clip)
    min_frames: int = 0  # videos with fewer stored frames are skipped (counted as bad data), never padded

    def __post_init__(self):
        if self.audio_speed not in ("resample", "box"):
            raise ValueError(f"audio_speed must be resample or box, not {self.audio_speed!r}")
        if self.inter_order and self.clips != 2 and not self.test_clips:
            raise ValueError("the inter-modal order task needs exactly 2 clips per video")

    @property
    def n_clips(self) -> int:
        return self.test_clips or self.clips

    @property
    def geometry(self) -> ClipGeometry:
        return ClipGeometry(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ClipGeometry)})


def run_spec(spec: ViewSpec, data) -> ViewSpec:
    """A method's views as a run's data config (`DataConfig`) sets them: its canvas, and its frames and frame step
    where given; an audio window of 0 s becomes the clip's span. Evaluation takes its geometry from these, so
    features see the frame step training saw."""
    overrides = {k: v for k, v in (("frames", data.frames), ("stride", data.stride)) if v}
    spec = dataclasses.replace(spec, canvas=data.canvas, **overrides)
    if spec.audio and not spec.audio_seconds:
        if not spec.fps:
            raise ValueError("an audio window as long as the clip (audio_seconds 0) needs the clips' sampling rate "
                             "(a method's clip_fps)")
        spec = dataclasses.replace(spec, audio_seconds=spec.frames * spec.stride / spec.fps)
    return spec


def evaluation_views(geometry: ClipGeometry, clips: int, random: bool = False) -> ViewSpec:
    """The views evaluation reads: `clips` evenly spaced clips per video (or `clips` random ones, for a
    classifier's augmented training data) at speed 1, forward, from every video, whatever the length. Built
    from the geometry alone: what training samples (speeds, tuples, shared windows, minimum lengths) cannot
    reach it. Every protocol, training's kNN monitor and `avtools inspect --eval-clips` read through here."""
    return ViewSpec(**dataclasses.asdict(geometry), clips=clips, test_clips=0 if random else clips)


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
    if n_frames < spec.min_frames:
        raise SampleError(f"{n_frames} frames, fewer than the {spec.min_frames} the method needs: skipped")
    first = int(window[0] * n_frames)
    if window != (0.0, 1.0):
        plans, order = plan_clips(spec, max(1, int(window[1] * n_frames) - first), fps, rng)
        return [dataclasses.replace(p, indices=p.indices + first, start=p.start + first / fps) for p in plans], order
    if spec.tuple_gap is not None:
        return _plan_tuple(spec, n_frames, fps, rng)
    step = frame_step(spec, fps)
    if spec.test_clips:
        speeds, directions = [1] * spec.n_clips, [1] * spec.n_clips
    elif spec.disjoint:
        speeds, directions = _disjoint_speeds(spec, n_frames, step, rng), rng.choice(spec.directions, spec.n_clips).tolist()
    else:
        speeds = rng.choice(_fitting_speeds(spec, n_frames, step), spec.n_clips).tolist()
        directions = rng.choice(spec.directions, spec.n_clips).tolist()
    lengths = [_window(spec.frames, step * k) for k in speeds]
    if spec.disjoint and spec.inter_order and not spec.test_clips:
        starts = _starts_with_order_margin(spec, lengths, speeds[0], n_frames, fps, rng)
    else:
        starts = _starts(spec, lengths, n_frames, rng)
    if spec.same_window:
        starts, lengths, speeds = [starts[0]] * spec.n_clips, [lengths[0]] * spec.n_clips, [speeds[0]] * spec.n_clips
        directions = [directions[0]] * spec.n_clips
    plans = []
    for start, length, speed, direction in zip(starts, lengths, speeds, directions):
        offsets = np.round(np.arange(spec.frames) * step * speed).astype(np.int64)
        indices = np.clip(start + offsets, 0, n_frames - 1)
        plans.append(ClipPlan(indices[::direction], start / fps, length / fps, int(speed), int(direction)))
    return plans, -1


def _disjoint_speeds(spec: ViewSpec, n_frames: int, step: float, rng) -> list[int]:
    """Speeds drawn one clip after the other among those whose window still fits beside the slowest windows of the
    clips to come, then dealt to the clips in random order; with inter_order, clip 0 gets the slowest (its audio
    windows before and after must fit in the recording)."""
    slowest = min(spec.speeds)
    room, chosen = n_frames, []
    for remaining in range(spec.n_clips - 1, -1, -1):
        fitting = [k for k in spec.speeds if _window(spec.frames, step * k) + remaining * _window(spec.frames, step * slowest) <= room]
        speed = int(rng.choice(fitting)) if fitting else slowest
        chosen.append(speed)
        room -= _window(spec.frames, step * speed)
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    if spec.inter_order:
        chosen.sort()
    return chosen


def order_margin(spec: ViewSpec, speed: int, fps: float) -> float:
    """Frames the inter-modal order task needs on each side of clip 0's centre: 1.5 audio windows."""
    return 1.5 * spec.audio_seconds * speed * fps


def _starts_with_order_margin(spec: ViewSpec, lengths: list[int], speed: int, n_frames: int, fps: float, rng) -> list[int]:
    """Two disjoint windows, clip 0's centre at least `order_margin` from both ends when the video allows it (else
    the plain disjoint layout; the order label is then -1)."""
    w0, w1 = lengths
    margin = order_margin(spec, speed, fps)
    low, high = int(np.ceil(margin - w0 / 2)), int(np.floor(n_frames - margin - w0 / 2))
    before = (max(low, w1), min(high, n_frames - w0))  # clip 1 before clip 0
    after = (max(low, 0), min(high, n_frames - w0 - w1))  # clip 1 after clip 0
    sides = [side for side, (lo, hi) in (("before", before), ("after", after)) if lo <= hi]
    if not sides:
        return _starts(spec, lengths, n_frames, rng)
    side = sides[int(rng.integers(len(sides)))]
    lo, hi = before if side == "before" else after
    s0 = int(rng.integers(lo, hi + 1))
    s1 = int(rng.integers(0, s0 - w1 + 1)) if side == "before" else int(rng.integers(s0 + w0, n_frames - w1 + 1))
    return [s0, s1]


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


def audio_window(audio: AudioReader, centre: float, seconds: float, speed: int, direction: int,
                 mode: str = "resample") -> np.ndarray:
    """`seconds * rate` int16 samples: real time `seconds * speed` around `centre`, sped up and maybe reversed."""
    out_len = int(round(seconds * audio.rate))
    covered = out_len * speed
    first = int(round(centre * audio.rate)) - covered // 2
    window = np.zeros(covered, np.int16)
    lo, hi = max(0, first), min(audio.length, first + covered)
    if hi > lo:
        window[lo - first:hi - first] = audio.read(lo, hi)
    if speed > 1:
        window = speed_up(window, out_len, mode)
    return window[::direction].copy()


def speed_up(wave: np.ndarray, out_len: int, mode: str) -> np.ndarray:
    """int16 `wave` played len(wave) / out_len times faster, as `out_len` samples: `resample` keeps only the
    frequencies below the new Nyquist (rfft, truncate, irfft: no aliasing); `box` averages each k samples."""
    k = len(wave) // out_len
    if mode == "box":
        shortened = wave.reshape(out_len, k).mean(axis=1)
    else:
        spectrum = np.fft.rfft(wave.astype(np.float64))[:out_len // 2 + 1]
        shortened = np.fft.irfft(spectrum, n=out_len) / k
    return shortened.round().clip(-32768, 32767).astype(np.int16)


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
        n_frames = frame_count(sample, meta)
        plans, order = plan_clips(spec, n_frames, fps, plan_rng, window)
        if rng is None and plans[0].span * fps > n_frames + 1e-6:
            _note_short_video(sample.get("__key__"), n_frames, fps, plans[0].span)
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
            raise SampleError(f"{sample.get('__key__')}: wav rate {audio.rate} != json audio_rate {meta['audio_rate']}")
        views["audio"] = np.stack([audio_window(audio, p.start + p.span / 2, spec.audio_seconds, p.speed, p.direction,
                                                spec.audio_speed) for p in plans])
        if spec.inter_order:
            views["xorder"], views["audio_shifted"] = _shifted_audio(audio, plans[0], spec, rng)
    return views


_short_videos = 0


def _note_short_video(key: str, n_frames: int, fps: float, span: float) -> None:
    """Evaluation reads a video shorter than its clips (last frame repeated): warn for the 1st, 2nd, 4th... one."""
    global _short_videos
    _short_videos += 1
    if _short_videos & (_short_videos - 1) == 0:
        log.warning("%s: %d frames (%.2f s) is shorter than the evaluation clip (%.2f s): its last frame repeats to "
                    "fill it (short video #%d); lower protocol.frames or protocol.fps to read it whole", key, n_frames,
                    n_frames / fps, span, _short_videos)


def _shifted_audio(audio: AudioReader, plan: ClipPlan, spec: ViewSpec, rng) -> tuple[np.int64, np.ndarray]:
    """Audio for clip 0 taken one window before (0), at (1) or after (2) its frames: the inter-modal order task.
    Label -1 (ignored) with silence when the three windows do not all lie inside the recording: padding would
    tell the label."""
    half = 1.5 * spec.audio_seconds * plan.speed
    centre = plan.start + plan.span / 2
    if centre - half < -1e-6 or (centre + half) * audio.rate > audio.length + 1:
        return np.int64(-1), np.zeros(int(round(spec.audio_seconds * audio.rate)), np.int16)
    label = int(rng.integers(3)) if rng is not None else 1
    shift = (label - 1) * spec.audio_seconds * plan.speed
    return np.int64(label), audio_window(audio, centre + shift, spec.audio_seconds, plan.speed, plan.direction,
                                         spec.audio_speed)


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

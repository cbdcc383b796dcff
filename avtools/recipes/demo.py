"""`demo`: a small synthetic audio-visual dataset made on the spot (no internet, no local copy needed).

Each class pairs a motion pattern with a sound: a square bouncing along one direction that clicks at every
bounce, with a class-specific pitch. Nuisance varies per clip so that the classes are not trivial: the
square's size, colour, speed, phase and offset, the background's brightness, tint and noise. The square drags a
fading trail and each click starts sharply and decays, so playback direction shows in both modalities, and the
bounce speed varies less than a factor 2, so playback speed (frame skip 1/2/4) shows too: the temporal tasks of
temporal-av and TCGL have something to learn. Media are written once with PyAV into the avtools cache, then
read like the `folder` recipe.
"""
from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

from avtools.ffmpeg import cache_dir
from avtools.recipes import RecipeOptions, recipe
from avtools.recipes.folder import folder

CLASSES = {"horizontal-low": (0, 220.0), "vertical-mid": (1, 440.0), "diagonal-high": (2, 880.0),
           "antidiagonal-mid": (3, 660.0)}
CLIPS_PER_CLASS = 8
MEDIA_VERSION = 3  # bump when the clips change: media of each version and size live in their own folder
DIRECTIONS = [(1, 0), (0, 1), (1, 1), (1, -1)]
SECONDS, FPS, SIZE, RATE = 4.0, 16, 96, 16000
SPEEDS = (1.0, 1.5)  # bounces per second
TRAIL = (0.25, 0.5, 0.75)  # opacity of the square's last positions, oldest first


def demo_media(root: Path, clips_per_class: int = CLIPS_PER_CLASS) -> Path:
    """Write the demo videos (once per size and version) below `root`; returns the folder of class subfolders."""
    folder = root / f"v{MEDIA_VERSION}-{clips_per_class}-per-class"
    done = folder / ".complete"
    if not done.exists():
        rng = np.random.default_rng(0)
        for name, (direction, pitch) in CLASSES.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(clips_per_class):
                _write_clip(folder / name / f"{name}-{i:02d}.mp4", direction, pitch, rng)
        done.touch()
    return folder


def _bounce(n: int, speed: float, phase: float) -> np.ndarray:
    """0..1..0 triangle positions over n frames: one bounce per period."""
    t = np.arange(n) / FPS
    return np.abs(((t * speed + phase) % 1.0) * 2 - 1)


def _place(position: np.ndarray, direction: int, offset: float, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (x, y) in pixels of a square moving along `direction` at `position` (0..1)."""
    dx, dy = DIRECTIONS[direction]
    x = (position if dx else np.full_like(position, offset)) * extent
    y = ((position if dy > 0 else 1 - position) if dy else np.full_like(position, offset)) * extent
    return x.astype(int), y.astype(int)


def _write_clip(path: Path, direction: int, pitch: float, rng) -> None:
    import av

    n = int(SECONDS * FPS)
    speed, phase = rng.uniform(*SPEEDS), rng.uniform(0, 1)
    side = int(rng.integers(10, 22))
    xs, ys = _place(_bounce(n, speed, phase), direction, rng.uniform(0.2, 0.8), SIZE - side)
    colour = rng.integers(60, 256, 3)
    background, tint, grain = rng.uniform(20, 70), rng.uniform(-15, 15, 3), rng.uniform(4, 16)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        audio = out.add_stream("aac", rate=RATE, layout="mono")
        for k in range(n):
            frame = rng.normal(background + tint, grain, (SIZE, SIZE, 3)).clip(0, 255)
            for age, opacity in zip(range(len(TRAIL), 0, -1), TRAIL):
                j = max(0, k - age)
                square = frame[ys[j]:ys[j] + side, xs[j]:xs[j] + side]
                square += opacity * (colour - square)
            frame[ys[k]:ys[k] + side, xs[k]:xs[k] + side] = colour
            picture = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            picture.pts, picture.time_base = k, fractions.Fraction(1, FPS)
            out.mux(video.encode(picture))
        out.mux(video.encode())
        wave = _clicks(t_end=SECONDS, speed=speed, phase=phase, pitch=pitch, rng=rng)
        for i in range(0, wave.size, 1024):
            chunk = av.AudioFrame.from_ndarray((wave[i:i + 1024] * 32767).astype(np.int16)[None], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = RATE, i, fractions.Fraction(1, RATE)
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())


def _clicks(t_end: float, speed: float, phase: float, pitch: float, rng) -> np.ndarray:
    """A decaying tone at each bounce (when the square hits a wall), over background noise."""
    t = np.arange(int(t_end * RATE)) / RATE
    since = ((t * speed + phase) % 0.5) / speed  # seconds since the last wall hit (twice per period)
    tone = np.sin(2 * np.pi * pitch * t) * np.exp(-since * 30)
    return (0.5 * tone + rng.normal(0, 0.02, t.size)).astype(np.float32)


@recipe("demo")
def demo(definition: dict, options: RecipeOptions):
    root = demo_media(Path(options.cache or cache_dir()) / "demo-media")
    return folder(definition, RecipeOptions(source=root, val_fraction=0.25))

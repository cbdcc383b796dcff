"""`demo`: a small synthetic audio-visual dataset made on the spot (no internet, no local copy needed).

Each class pairs a motion pattern with a sound: a square bouncing along one direction that clicks at every
bounce, with a class-specific pitch; position, colour, speed and noise vary per clip. Media are written
once with PyAV into the avtools cache, then read like the `folder` recipe.
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
SECONDS, FPS, SIZE, RATE = 4.0, 16, 96, 16000


def demo_media(root: Path) -> Path:
    """Write the demo videos under `root` (once); returns the folder of class subfolders."""
    done = root / ".complete"
    if not done.exists():
        rng = np.random.default_rng(0)
        for name, (direction, pitch) in CLASSES.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(CLIPS_PER_CLASS):
                _write_clip(root / name / f"{name}-{i:02d}.mp4", direction, pitch, rng)
        done.touch()
    return root


def _write_clip(path: Path, direction: int, pitch: float, rng) -> None:
    import av

    n = int(SECONDS * FPS)
    speed = rng.uniform(0.5, 1.5)  # bounces per second
    phase = rng.uniform(0, 1)
    colour = rng.integers(80, 255, 3)
    offset = rng.uniform(0.2, 0.8)
    t = np.arange(n) / FPS
    tri = np.abs(((t * speed + phase) % 1.0) * 2 - 1)  # 0..1..0: one bounce per period
    dx, dy = [(1, 0), (0, 1), (1, 1), (1, -1)][direction]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        audio = out.add_stream("aac", rate=RATE, layout="mono")
        for k in range(n):
            frame = (rng.normal(40, 12, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
            pos = tri[k] if dx else offset
            x = int((pos if dx else offset) * (SIZE - 16))
            y = int(((tri[k] if dy > 0 else 1 - tri[k]) if dy else offset) * (SIZE - 16))
            frame[y:y + 16, x:x + 16] = colour
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
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

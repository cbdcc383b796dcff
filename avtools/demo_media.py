"""The demo's media: a small synthetic audio-visual dataset made on the spot (no internet, no local copy needed).

Each class pairs a motion pattern with a sound: a square that bounces left-right, bounces up-down, circles, or
pulses in size, and sounds at each turning point of its motion (twice per cycle) with a class-specific timbre:
a pure tone, a noise burst, a buzz rich in harmonics, a rising chirp (timbres differ in spectro-temporal
texture, which convolutional features tell apart from the start; pitch alone is a shift along frequency).
The patterns stay apart under horizontal flips and time reversal, the augmentations and tasks the methods apply
(a diagonal bounce would flip into the other diagonal). Nuisance varies per clip so that the classes are not
trivial: the square's size, colour, speed, phase and place, the background's brightness, tint and noise. The
square drags a fading trail and each sound starts sharply and decays, so playback direction shows in both
modalities, and the cycle speed varies less than a factor 2, so playback speed (frame skip 1/2/4) shows too:
the temporal tasks of temporal-av and TCGL have something to learn. Media are written once with PyAV into the
avtools cache; the `demo` recipe then reads them like the `folder` recipe.
"""
from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

CLASSES = {"horizontal-tone": ("horizontal", "tone"), "vertical-noise": ("vertical", "noise"),
           "circle-buzz": ("circle", "buzz"), "pulse-chirp": ("pulse", "chirp")}
CLIPS_PER_CLASS = 8
MEDIA_VERSION = 4  # bump when the clips change: media of each version and size live in their own folder
SECONDS, FPS, SIZE, RATE = 4.0, 16, 96, 16000
SPEEDS = (1.0, 1.5)  # motion cycles per second
TRAIL = (0.25, 0.5, 0.75)  # opacity of the square's last positions, oldest first


def demo_media(root: Path, clips_per_class: int = CLIPS_PER_CLASS) -> Path:
    """Write the demo videos (once per size and version) below `root`; returns the folder of class subfolders."""
    folder = root / f"v{MEDIA_VERSION}-{clips_per_class}-per-class"
    done = folder / ".complete"
    if not done.exists():
        rng = np.random.default_rng(0)
        for name, (motion, sound) in CLASSES.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(clips_per_class):
                _write_clip(folder / name / f"{name}-{i:02d}.mp4", motion, sound, rng)
        done.touch()
    return folder


def _squares(motion: str, n: int, speed: float, phase: float, side: int, rng) -> np.ndarray:
    """[n, 3] top-left x, y and side in pixels of the square in each frame; turning points at cycle 0 and ½."""
    cycle = 2 * np.pi * ((np.arange(n) / FPS * speed + phase) % 1.0)
    swing = (1 + np.cos(cycle)) / 2  # 1 -> 0 -> 1 over a cycle, turning at 0 and ½
    here, there = np.full(n, rng.uniform(0.2, 0.8)), np.full(n, rng.uniform(0.2, 0.8))
    sides = (side * (0.6 + 0.8 * swing)).astype(int) if motion == "pulse" else np.full(n, side)
    x, y = {"horizontal": (swing, here), "vertical": (here, swing), "circle": (swing, (1 + np.sin(cycle)) / 2),
            "pulse": (here, there)}[motion]
    return np.stack([(SIZE - sides) * x, (SIZE - sides) * y, sides], axis=1).astype(int)


def _write_clip(path: Path, motion: str, sound: str, rng) -> None:
    import av

    n = int(SECONDS * FPS)
    speed, phase = rng.uniform(*SPEEDS), rng.uniform(0, 1)
    squares = _squares(motion, n, speed, phase, int(rng.integers(10, 22)), rng)
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
                x, y, side = squares[max(0, k - age)]
                square = frame[y:y + side, x:x + side]
                square += opacity * (colour - square)
            x, y, side = squares[k]
            frame[y:y + side, x:x + side] = colour
            picture = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            picture.pts, picture.time_base = k, fractions.Fraction(1, FPS)
            out.mux(video.encode(picture))
        out.mux(video.encode())
        wave = _events(sound, speed, phase, rng)
        for i in range(0, wave.size, 1024):
            chunk = av.AudioFrame.from_ndarray((wave[i:i + 1024] * 32767).astype(np.int16)[None], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = RATE, i, fractions.Fraction(1, RATE)
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())


def _events(sound: str, speed: float, phase: float, rng) -> np.ndarray:
    """The class's sound, decaying from each turning point of the motion (cycle 0 and ½), over background noise."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    since = ((t * speed + phase) % 0.5) / speed  # seconds since the last turning point
    pitch = rng.uniform(300, 600)
    timbre = {"tone": lambda: np.sin(2 * np.pi * pitch * t),
              "noise": lambda: rng.uniform(-1, 1, t.size),
              "buzz": lambda: np.sign(np.sin(2 * np.pi * pitch / 2 * t)) * 0.7,
              "chirp": lambda: np.sin(2 * np.pi * pitch * (since + 40 * since ** 2))}[sound]()
    return (0.5 * timbre * np.exp(-since * 30) + rng.normal(0, 0.02, t.size)).astype(np.float32)

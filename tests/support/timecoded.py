"""Synthetic media whose content encodes its own time, so tests can check trims and alignment.

Video frame k is a solid colour: red = 16 * (k % 16) + 8, green = 16 * ((k // 16) % 16) + 8,
blue = 16 * ((k // 256) % 16) + 8, which survives
lossy coding (decode with `frame_index`). The audio is silence with a 50 ms 1 kHz burst at every whole second.
"""
from __future__ import annotations

import fractions

import av
import numpy as np


def write_timecoded(path, seconds: float = 20.0, fps: int = 25, size=(160, 120), audio_rate: int = 48000,
                    gop: int | None = None, audio: bool = True, silent: bool = False) -> None:
    """Encode `seconds` of timecoded H.264 (+ AAC) video to `path`; `gop` defaults to 2 s of frames; `silent`
    writes an audio track of digital silence instead of the bursts."""
    width, height = size
    options = {"movflags": "+faststart"} if str(path).endswith(".mp4") else {}  # index first, as streamed files
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop or 2 * fps
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = out.add_stream("aac", rate=audio_rate, layout="mono") if audio else None
        wave = (np.zeros(int(seconds * audio_rate), np.float32) if silent else burst_track(seconds, audio_rate)) \
            if audio else None
        audio_done, step = 0, 1024
        for k in range(int(round(seconds * fps))):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = 16 * (k % 16) + 8
            rgb[..., 1] = 16 * ((k // 16) % 16) + 8
            rgb[..., 2] = 16 * ((k // 256) % 16) + 8
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
            if sound is not None:  # interleave audio with video, as real files are
                until = min(len(wave), int((k + 1) * audio_rate / fps))
                while audio_done + step <= until or (until == len(wave) and audio_done < until):
                    out.mux(sound.encode(_audio_frame(wave, audio_done, step, audio_rate)))
                    audio_done += step
        out.mux(video.encode())
        if sound is not None:
            out.mux(sound.encode())


def _audio_frame(wave: np.ndarray, start: int, step: int, rate: int) -> av.AudioFrame:
    chunk = (wave[start:start + step] * 32767).astype(np.int16)[None, :]
    frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
    return frame


def burst_track(seconds: float, rate: int) -> np.ndarray:
    """Silence with a 50 ms 1 kHz sine burst starting at every whole second."""
    t = np.arange(int(seconds * rate)) / rate
    return np.where((t % 1.0) < 0.05, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)


def frame_index(rgb: np.ndarray) -> int:
    """The source frame index a timecoded frame shows (robust to resizing and mild coding noise)."""
    digits = [int(round((float(np.median(rgb[..., c])) - 8) / 16)) % 16 for c in range(3)]
    return digits[0] + 16 * digits[1] + 256 * digits[2]


def burst_onsets(wave: np.ndarray, rate: int, quiet: float = 0.5) -> np.ndarray:
    """Times (s) where bursts start: the first loud sample after at least `quiet` seconds of quiet."""
    loud = np.flatnonzero(np.abs(wave) > 0.1)
    if loud.size == 0:
        return np.array([])
    starts = loud[np.concatenate([[True], np.diff(loud) > int(quiet * rate)])]
    return starts / rate

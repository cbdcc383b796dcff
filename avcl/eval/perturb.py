"""Benign transformations for fingerprinting queries (docs/protocols.md §7, a reconstruction of VPN-style queries).

A `Perturbation` is one family with its strength; the stream applies it to each sample's decoded views in the
loader workers, seeded per sample key, so the query set is the same on every run, rank and worker:

    visual: jpeg, h264 (low-quality re-encode), resize (down and up), aspect, crop, blur, noise, colour,
    overlay (text and an emoji-like disc); audio: audio-noise, audio-gain, audio-reencode (low-bitrate AAC);
    temporal: trim (the query covers only part of the clip).

Frames are the [N, T, H, W, 3] uint8 canvases the views hold; audio the [N, samples] int16 windows.
"""
from __future__ import annotations

import dataclasses
import fractions
import io

import numpy as np

from avcl.errors import ConfigError

VISUAL = ("jpeg", "h264", "resize", "aspect", "crop", "blur", "noise", "colour", "overlay")
AUDIO = ("audio-noise", "audio-gain", "audio-reencode")
TEMPORAL = ("trim",)
FAMILIES = VISUAL + AUDIO + TEMPORAL


@dataclasses.dataclass(frozen=True)
class Strengths:
    jpeg_quality: int = 10
    h264_crf: int = 40
    resize_factor: float = 0.35
    aspect: float = 1.4  # horizontal stretch, then centre crop
    crop_fraction: float = 0.7  # side of the kept crop
    blur_radius: float = 2.0
    noise_std: float = 15.0  # pixel values
    hue_shift: float = 0.1  # turns
    brightness: float = 1.3
    overlay_text: str = "avtools #1"
    audio_snr_db: float = 10.0
    audio_gain_db: float = -15.0
    audio_bitrate: int = 16000
    audio_rate: int = 16000
    trim_fraction: float = 0.5  # of the clip the query keeps


@dataclasses.dataclass(frozen=True)
class Perturbation:
    family: str
    strengths: Strengths = Strengths()

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown transformation {self.family!r}; families: {', '.join(FAMILIES)}")

    @property
    def describe(self) -> dict:
        return {"family": self.family, **dataclasses.asdict(self.strengths)}

    def window(self, rng: np.random.Generator) -> tuple[float, float]:
        if self.family != "trim":
            return (0.0, 1.0)
        start = float(rng.uniform(0, 1 - self.strengths.trim_fraction))
        return (start, start + self.strengths.trim_fraction)

    def apply(self, views: dict, rng: np.random.Generator) -> dict:
        s = self.strengths
        if self.family in VISUAL and "video" in views:
            views["video"] = VISUAL_FNS[self.family](views["video"], s, rng)
        elif self.family in AUDIO and "audio" in views:
            views["audio"] = AUDIO_FNS[self.family](views["audio"], s, rng)
        return views


def _per_image(frames: np.ndarray, fn) -> np.ndarray:
    """Apply an HxWx3 -> HxWx3 function to every frame of [N, T, H, W, 3]."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    return np.stack([fn(f) for f in flat]).reshape(frames.shape)


def _pil(fn):
    def apply(frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        return np.asarray(fn(Image.fromarray(frame)).convert("RGB"))
    return apply


def jpeg(frames, s: Strengths, rng):
    import simplejpeg

    return _per_image(frames, lambda f: simplejpeg.decode_jpeg(
        simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=s.jpeg_quality, colorspace="RGB"), colorspace="RGB"))


def h264(frames, s: Strengths, rng):
    """Each clip through libx264 at a high CRF (PyAV) and back."""
    import av

    out = []
    for clip in frames:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=16)
            stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
            stream.options = {"crf": str(s.h264_crf), "preset": "ultrafast"}
            for i, frame in enumerate(clip):
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                picture.pts, picture.time_base = i, fractions.Fraction(1, 16)
                container.mux(stream.encode(picture))
            container.mux(stream.encode())
        buffer.seek(0)
        with av.open(buffer) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        out.append(np.stack(decoded[:len(clip)]))
    return np.stack(out)


def resize(frames, s: Strengths, rng):
    from PIL import Image

    h, w = frames.shape[-3:-1]
    small = (max(8, int(w * s.resize_factor)), max(8, int(h * s.resize_factor)))
    return _per_image(frames, _pil(lambda im: im.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)))


def aspect(frames, s: Strengths, rng):
    from PIL import Image

    h, w = frames.shape[-3:-1]
    wide = int(w * s.aspect)
    left = (wide - w) // 2
    return _per_image(frames, _pil(lambda im: im.resize((wide, h), Image.BILINEAR).crop((left, 0, left + w, h))))


def crop(frames, s: Strengths, rng):
    from PIL import Image

    h, w = frames.shape[-3:-1]
    ch, cw = int(h * s.crop_fraction), int(w * s.crop_fraction)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return _per_image(frames, _pil(lambda im: im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)))


def blur(frames, s: Strengths, rng):
    from PIL import ImageFilter

    return _per_image(frames, _pil(lambda im: im.filter(ImageFilter.GaussianBlur(s.blur_radius))))


def noise(frames, s: Strengths, rng):
    return (frames + rng.normal(0, s.noise_std, frames.shape)).clip(0, 255).astype(np.uint8)


def colour(frames, s: Strengths, rng):
    """Brightness and a hue rotation (YIQ chroma plane), the same for the whole sample."""
    angle = 2 * np.pi * s.hue_shift * rng.choice([-1, 1])
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rotate = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    matrix = np.linalg.inv(to_yiq) @ rotate @ to_yiq * s.brightness
    return (frames.astype(np.float32) @ matrix.T.astype(np.float32)).clip(0, 255).astype(np.uint8)


def overlay(frames, s: Strengths, rng):
    """A caption and a yellow disc (an emoji stand-in) at a random place, the same on every frame."""
    from PIL import ImageDraw

    h, w = frames.shape[-3:-1]
    x, y = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h - 12)))
    radius = max(4, min(h, w) // 6)
    cx, cy = int(rng.integers(radius, w - radius)), int(rng.integers(radius, h - radius))

    def draw(im):
        canvas = ImageDraw.Draw(im)
        canvas.text((x, y), s.overlay_text, fill=(255, 255, 255))
        canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(250, 210, 40))
        return im

    return _per_image(frames, _pil(draw))


def audio_noise(audio, s: Strengths, rng):
    x = audio.astype(np.float32)
    power = np.mean(x ** 2, axis=-1, keepdims=True) + 1.0
    scale = np.sqrt(power / 10 ** (s.audio_snr_db / 10))
    return (x + rng.normal(0, 1, x.shape) * scale).clip(-32768, 32767).astype(np.int16)


def audio_gain(audio, s: Strengths, rng):
    return (audio.astype(np.float32) * 10 ** (s.audio_gain_db / 20)).clip(-32768, 32767).astype(np.int16)


def audio_reencode(audio, s: Strengths, rng):
    """Each window through AAC at a low bit rate (PyAV) and back to int16 at the same rate and length."""
    import av

    out = []
    for window in audio:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=s.audio_rate, layout="mono")
            stream.bit_rate = s.audio_bitrate
            frame = av.AudioFrame.from_ndarray(window[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = s.audio_rate, 0, fractions.Fraction(1, s.audio_rate)
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        buffer.seek(0)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=s.audio_rate)
        with av.open(buffer) as container:
            chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
        decoded = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        out.append(np.pad(decoded, (0, max(0, len(window) - len(decoded))))[:len(window)])
    return np.stack(out).astype(np.int16)


VISUAL_FNS = {"jpeg": jpeg, "h264": h264, "resize": resize, "aspect": aspect, "crop": crop, "blur": blur,
              "noise": noise, "colour": colour, "overlay": overlay}
AUDIO_FNS = {"audio-noise": audio_noise, "audio-gain": audio_gain, "audio-reencode": audio_reencode}

"""Audio on the device: log-mel spectrograms, SpecAugment masks, volume jitter; batched, plain torch.

Two spectrogram front ends, picked by `MelConfig.frontend`:
- `logmel` (avtools' own): torchaudio's MelSpectrogram where torchaudio imports, else the same computation
  written here (periodic Hann window, centred reflect-padded STFT, power spectrum, HTK mel filters without
  normalisation, as torchaudio's defaults); tests check it against librosa's HTK settings.
- `logfbank`: python_speech_features' `logfbank`, the input of GDT's and SeLaVi's released audio networks
  (their datasets/audio_utils.py): pre-emphasis, unwindowed frames zero-padded at the end, |rfft|^2 / n_fft,
  triangular filters on FFT bins, log; applied to int16 sample values, as those codes do, then z-normalised
  with the format's constants. Tests check it against the python_speech_features package itself.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn


FRONTENDS = ("logmel", "logfbank")


@dataclasses.dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 160
    win: int | None = None  # defaults to n_fft
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # defaults to sample_rate / 2
    log_offset: float = 1e-6
    frontend: str = "logmel"  # logmel | logfbank (see the module docstring)
    preemphasis: float = 0.97  # logfbank only
    z_mean: float = 0.0  # logfbank only: (log filterbank - z_mean) / z_std
    z_std: float = 1.0

    def __post_init__(self):
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {', '.join(FRONTENDS)}, not {self.frontend!r}")


def torchaudio_available() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # an ABI mismatch raises OSError or RuntimeError, not only ImportError
        return False
    return True


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filters(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """[n_freqs, n_mels] triangular HTK mel filters (torchaudio.functional.melscale_fbanks, norm=None)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(_hz_to_mel(float(f_min)), _hz_to_mel(float(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0).float()


class LogMel(nn.Module):
    """[..., samples] float waveform -> [..., n_mels, frames] log-mel (natural log of power + offset)."""

    def __init__(self, config: MelConfig = MelConfig(), backend: str = "auto"):
        super().__init__()
        self.config = config
        if backend not in ("auto", "torch", "torchaudio"):
            raise ValueError(f"log-mel backend must be auto, torch or torchaudio, not {backend!r}")
        use_torchaudio = backend == "torchaudio" or (backend == "auto" and torchaudio_available())
        self.backend = "torchaudio" if use_torchaudio else "torch"
        f_max = config.f_max or config.sample_rate / 2
        win = config.win or config.n_fft
        if use_torchaudio:
            import torchaudio

            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=win, hop_length=config.hop,
                f_min=config.f_min, f_max=f_max, n_mels=config.n_mels, power=2.0)
        else:
            self.register_buffer("window", torch.hann_window(win), persistent=False)
            self.register_buffer("filters", mel_filters(config.n_fft // 2 + 1, config.f_min, f_max,
                                                        config.n_mels, config.sample_rate), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.float()
        power = self.mel(wave) if self.backend == "torchaudio" else self._mel_power(wave)
        return torch.log(power + self.config.log_offset)

    def _mel_power(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape
        c = self.config
        spec = torch.stft(wave.reshape(-1, shape[-1]), c.n_fft, hop_length=c.hop, win_length=c.win or c.n_fft,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec.abs().pow(2)  # [batch, freqs, frames]
        mel = torch.matmul(power.transpose(1, 2), self.filters).transpose(1, 2)
        return mel.reshape(*shape[:-1], *mel.shape[-2:])


class LogFbank(nn.Module):
    """[..., samples] float waveform in [-1, 1] -> [..., n_mels, frames]: python_speech_features.logfbank of
    the int16 values (`win` and `hop` in samples, `n_mels` filters), z-normalised."""

    def __init__(self, config: MelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("filters", fbank_filters(config.n_mels, config.n_fft, config.sample_rate, config.f_min,
                                                      config.f_max or config.sample_rate / 2), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c, shape = self.config, wave.shape
        x = wave.reshape(-1, shape[-1]).double() * 32768.0
        x = torch.cat([x[:, :1], x[:, 1:] - c.preemphasis * x[:, :-1]], 1)
        win = c.win or c.n_fft
        n = fbank_frames(x.shape[1], win, c.hop)
        frames = F.pad(x, (0, (n - 1) * c.hop + win - x.shape[1])).unfold(1, win, c.hop)
        power = torch.fft.rfft(frames, n=c.n_fft).abs().pow(2) / c.n_fft
        energies = power @ self.filters.to(power.dtype)
        energies = torch.where(energies == 0, torch.finfo(torch.float64).eps, energies)
        spec = ((energies.log() - c.z_mean) / c.z_std).transpose(1, 2).float()
        return spec.reshape(*shape[:-1], *spec.shape[-2:])


def fbank_filters(n_filters: int, n_fft: int, sample_rate: int, low: float, high: float) -> torch.Tensor:
    """[n_fft // 2 + 1, n_filters] triangles between FFT bins floor((n_fft + 1) * hz / rate) of mel-spaced points
    (python_speech_features.get_filterbanks)."""
    mels = torch.linspace(_hz_to_mel(low), _hz_to_mel(high), n_filters + 2, dtype=torch.float64)
    bins = torch.floor((n_fft + 1) * (700.0 * (10 ** (mels / 2595.0) - 1.0)) / sample_rate)
    i = torch.arange(n_fft // 2 + 1, dtype=torch.float64).unsqueeze(1)
    left, centre, right = bins[:-2], bins[1:-1], bins[2:]
    rising = torch.where((i >= left) & (i < centre), (i - left) / (centre - left), 0.0)
    falling = torch.where((i >= centre) & (i < right), (right - i) / (right - centre), 0.0)
    return rising + falling


def fbank_frames(samples: int, win: int, hop: int) -> int:
    return 1 if samples <= win else 1 + math.ceil((samples - win) / hop)



def spectrogram(config: MelConfig, backend: str = "auto") -> nn.Module:
    """The front end `config` names: LogMel or LogFbank."""
    return LogFbank(config) if config.frontend == "logfbank" else LogMel(config, backend)


def frames_for(seconds: float, config: MelConfig) -> int:
    """Spectrogram frames of a `seconds` window (centred STFT; logfbank's unpadded frames)."""
    samples = int(round(seconds * config.sample_rate))
    if config.frontend == "logfbank":
        return fbank_frames(samples, config.win or config.n_fft, config.hop)
    return samples // config.hop + 1


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    time_masks: int = 2
    time_width: int = 10  # frames, each mask 0..width wide
    freq_masks: int = 2
    freq_width: int = 8  # mel bins
    volume_db: float = 6.0  # waveform gain drawn uniformly in [-db, +db]


def volume_jitter(wave: torch.Tensor, db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each waveform in [..., samples] by its own random gain in [-db, +db] decibels."""
    gain_db = (torch.rand(wave.shape[:-1] + (1,), generator=generator, device="cpu") * 2 - 1) * db
    return wave * (10 ** (gain_db / 20)).to(wave.device, wave.dtype)


def spec_augment(spec: torch.Tensor, config: SpecAugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero random time and frequency bands of [..., mels, frames] log-mels (set to each map's minimum)."""
    *lead, n_mels, n_frames = spec.shape
    keep = torch.ones(spec.shape, dtype=torch.bool, device=spec.device)
    for axis, count, width, size in ((-1, config.time_masks, config.time_width, n_frames),
                                     (-2, config.freq_masks, config.freq_width, n_mels)):
        for _ in range(count):
            widths = torch.randint(0, width + 1, tuple(lead), generator=generator)
            starts = (torch.rand(tuple(lead), generator=generator) * (size - widths + 1)).long()
            pos = torch.arange(size)
            band = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # [..., size]
            band = band.to(spec.device)
            keep &= ~(band[..., None, :] if axis == -1 else band[..., :, None])
    floor = spec.amin(dim=(-2, -1), keepdim=True)
    return torch.where(keep, spec, floor)

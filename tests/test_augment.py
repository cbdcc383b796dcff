"""Device-side augmentation and audio features: crops, flips, jitter, log-mel (both backends), SpecAugment."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avcl.data.audio import (LogMel, MelConfig, SpecAugmentConfig, frames_for, mel_filters, spec_augment, spectrogram,
                             torchaudio_available)
from avcl.data.augment import DeviceAugment, VideoAugmentConfig, crop_resize, rotate_hue, eval_boxes
from tests.conftest import MEDIA


def test_centre_crop_at_scale_one_is_a_pixel_crop_and_flip_mirrors_it():
    clips = torch.rand(2, 3, 4, 16, 16)
    box = eval_boxes(1, 12, 16).repeat(2, 1)
    torch.testing.assert_close(crop_resize(clips, box, 12), clips[..., 2:14, 2:14])
    flipped = crop_resize(clips, box, 12, flips=torch.tensor([True, False]))
    torch.testing.assert_close(flipped[0], clips[0, ..., 2:14, 2:14].flip(-1))
    three = eval_boxes(3, 12, 16)
    torch.testing.assert_close(crop_resize(clips[:1].repeat(3, 1, 1, 1, 1), three, 12)[0], clips[0, ..., 2:14, 0:12])


def test_hue_rotation_keeps_gray_and_a_full_turn_is_identity():
    x = torch.rand(2, 3, 2, 4, 4)
    torch.testing.assert_close(rotate_hue(x, torch.tensor([1.0, 0.0])), x, atol=1e-5, rtol=0)
    gray = x.mean(1, keepdim=True).expand_as(x)
    torch.testing.assert_close(rotate_hue(gray, torch.tensor([0.3, 0.7])), gray, atol=1e-5, rtol=0)


def test_device_augment_shapes_and_determinism():
    batch = {"video": torch.randint(0, 255, (2, 2, 4, 20, 20, 3), dtype=torch.uint8),
             "audio": torch.randint(-3000, 3000, (2, 2, 8000), dtype=torch.int16), "label": torch.tensor([0, 1])}
    aug = DeviceAugment(VideoAugmentConfig(size=16, test_crops=3), MelConfig(n_mels=40))
    a = aug(batch, generator=torch.Generator().manual_seed(0))
    b = aug(batch, generator=torch.Generator().manual_seed(0))
    assert a["video"].shape == (2, 2, 3, 4, 16, 16) and a["video"].dtype == torch.float32
    assert a["audio"].shape == (2, 2, 1, 40, 51)
    torch.testing.assert_close(a["video"], b["video"])
    gray = DeviceAugment(VideoAugmentConfig(size=16, grayscale=1.0, normalize=False))(batch)["video"]
    torch.testing.assert_close(gray[:, :, 0], gray[:, :, 1])
    torch.testing.assert_close(gray[:, :, 1], gray[:, :, 2])
    test = aug(batch, train=False)
    assert test["video"].shape == (2, 6, 3, 4, 16, 16)  # 2 clips x 3 crops
    torch.testing.assert_close(test["video"], aug(batch, train=False)["video"])


def test_log_mel_torch_backend_finds_a_tone_in_its_mel_band():
    config = MelConfig(sample_rate=16000, n_fft=512, hop=160, n_mels=64)
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t)
    spec = LogMel(config, backend="torch")(tone)
    assert spec.shape == (64, 101)
    filters = mel_filters(257, 0.0, 8000.0, 64, 16000)
    assert int(spec[:, 50].argmax()) == int(filters[round(1000 / (8000 / 256))].argmax())
    assert filters.sum(0).gt(0).all()  # every mel band sees some frequency


@pytest.mark.skipif(not torchaudio_available(), reason="torchaudio does not import with this torch")
def test_log_mel_backends_agree():
    config = MelConfig(sample_rate=16000, n_fft=512, hop=160, n_mels=80)
    wave = torch.randn(3, 16000)
    torch.testing.assert_close(LogMel(config, "torch")(wave), LogMel(config, "torchaudio")(wave), atol=1e-3, rtol=1e-4)


def test_spec_augment_masks_bands_within_limits():
    spec = torch.randn(4, 2, 40, 100, generator=torch.Generator().manual_seed(0))
    config = SpecAugmentConfig(time_masks=1, time_width=10, freq_masks=1, freq_width=5)
    out = spec_augment(spec, config, torch.Generator().manual_seed(3))
    floor = spec.amin(dim=(-2, -1), keepdim=True).expand_as(spec)
    at_floor = out == floor  # masked cells hold each map's minimum (as does the minimum cell itself)
    assert torch.equal(out[~at_floor], spec[~at_floor])
    widths = []
    for i in range(4):
        for j in range(2):
            cols = int(at_floor[i, j].all(0).sum())
            rows = int(at_floor[i, j].all(1).sum())
            assert cols <= 10 and rows <= 5
            band_cells = cols * 40 + rows * 100 - cols * rows
            assert int(at_floor[i, j].sum()) - band_cells in (0, 1)  # only whole bands (+ the minimum cell)
            widths.append(cols + rows)
    assert sum(widths) > 0  # masks were drawn at all


def real_speech(rate: int, seconds: float = 2.0) -> np.ndarray:
    """int16 mono samples of a real recording (the shared media's wav), resampled to `rate` by FFmpeg."""
    import av

    with av.open(str(MEDIA / "mmaction2_test.wav")) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        chunks = [r.to_ndarray().ravel() for frame in container.decode(audio=0) for r in resampler.resample(frame)]
    samples = np.concatenate(chunks)
    return samples[:int(rate * seconds)]


def test_log_mel_equals_librosa_htk_mel_on_real_audio():
    """avtools' log-mel against librosa.feature.melspectrogram with htk=True, norm=None, power 2, centred
    reflect-padded periodic Hann STFT: the settings avtools names."""
    import librosa

    wave = real_speech(16000)
    config = MelConfig(sample_rate=16000, n_fft=512, hop=160, n_mels=80)
    ours = LogMel(config, backend="torch")(torch.tensor(wave).float() / 32768).numpy()
    mel = librosa.feature.melspectrogram(y=wave.astype(np.float32) / 32768, sr=16000, n_fft=512, hop_length=160,
                                         n_mels=80, htk=True, norm=None, power=2.0, center=True, pad_mode="reflect")
    np.testing.assert_allclose(ours, np.log(mel + config.log_offset), atol=2e-3, rtol=0)


@pytest.mark.parametrize("rate, win, hop, filters, z", [(24000, 480, 240, 40, (1.93, 17.89)),  # GDT (main_gdt.py)
                                                        (48000, 960, 480, 257, (0.0, 1.0))])  # SeLaVi (opt.py)
def test_logfbank_equals_python_speech_features_on_real_audio(rate, win, hop, filters, z):
    """GDT's and SeLaVi's audio input: python_speech_features.logfbank(int16 wave, rate, winlen=0.02,
    winstep=0.01, nfilt, nfft=1024) transposed, then (x - 1.93) / 17.89 for GDT (z_normalize=True)."""
    import python_speech_features as speech

    wave = real_speech(rate)
    reference = (speech.logfbank(wave, rate, winlen=0.02, winstep=0.01, nfilt=filters, nfft=1024).T - z[0]) / z[1]
    config = MelConfig(sample_rate=rate, n_fft=1024, win=win, hop=hop, n_mels=filters, frontend="logfbank",
                       z_mean=z[0], z_std=z[1])
    ours = spectrogram(config)(torch.tensor(wave).float() / 32768).numpy()
    assert ours.shape == reference.shape == (filters, frames_for(len(wave) / rate, config))
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)

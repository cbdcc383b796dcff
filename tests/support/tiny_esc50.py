"""A tiny ESC-50-shaped repository (audio/*.wav + meta/esc50.csv) of synthetic recordings: 2 classes (a low
and a high tone in noise), 2 recordings per class and fold, 5 s at 16 kHz, real 16-bit WAV files like ESC-50's own."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from avcl.data.schema import wav_bytes

RATE = 16000
CLASSES = {0: ("low_tone", 300.0), 1: ("high_tone", 1500.0)}


def write_tiny_esc50(root: Path, per_class_and_fold: int = 2) -> Path:
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rows = []
    t = np.arange(5 * RATE) / RATE
    for fold in range(1, 6):
        for target, (category, pitch) in CLASSES.items():
            for i in range(per_class_and_fold):
                name = f"{fold}-{target}{i:03d}-A-{target}.wav"
                tone = np.sin(2 * np.pi * pitch * rng.uniform(0.9, 1.1) * t) * rng.uniform(0.2, 0.6)
                recording = np.clip(tone + rng.normal(0, 0.05, t.size), -1, 1) * 32767
                (root / "audio" / name).write_bytes(wav_bytes(recording.astype(np.int16), RATE))
                rows.append({"filename": name, "fold": fold, "target": target, "category": category,
                             "esc10": "False", "src_file": f"{target}{i:03d}", "take": "A"})
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root

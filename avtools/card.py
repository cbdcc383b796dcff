"""The dataset card: one PNG with available/total clips per class and a contact sheet of a few samples
(frames along time, with the log spectrogram of their audio)."""
from __future__ import annotations

import io

import numpy as np

from avcl.data import schema
from avcl.data.decode import decode_frames, sample_meta
from avcl.data.schema import DatasetInfo
from avcl.data.sources import open_url
from avcl.plots import pyplot
from avtools.inspect import iter_samples

SHEET_SAMPLES = 4
SHEET_FRAMES = 6


def write_card(store, info: DatasetInfo) -> None:
    store.put_bytes("card.png", render_card(info, _some_samples(store, info)))


def _some_samples(store, info: DatasetInfo) -> list[dict]:
    """Up to SHEET_SAMPLES samples of distinct classes, from the first shard of each split."""
    samples, labels = [], set()
    for split in info.splits.values():
        for shard in split.shards[:1]:
            with open_url(store.local_path(shard.name)) as stream:
                for sample in iter_samples(stream):
                    label = schema.decode_json(sample[schema.JSON_EXT])["label"]
                    if label not in labels:
                        labels.add(label)
                        samples.append(sample)
                    if len(samples) >= SHEET_SAMPLES:
                        return samples
    return samples


def render_card(info: DatasetInfo, samples: list[dict]) -> bytes:
    plt = pyplot()

    classes = _class_counts(info)
    bar_height = max(3.0, 0.18 * len(classes))
    fig = plt.figure(figsize=(12, bar_height + 2.2 * max(1, len(samples))), dpi=80)
    grid = fig.add_gridspec(1 + max(1, len(samples)), SHEET_FRAMES + 2,
                            height_ratios=[bar_height] + [2.2] * max(1, len(samples)))
    bars = fig.add_subplot(grid[0, :])
    names = list(classes)
    bars.barh(names, [classes[n][1] for n in names], color="#dddddd", label="total")
    bars.barh(names, [classes[n][0] for n in names], color="#3b7dd8", label="available")
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=7)
    bars.legend(loc="lower right")
    counts = info.counts
    version = info.class_list.get("version")
    name = f"{info.name} (class list {version})" if version else info.name
    bars.set_title(f"{name}: {counts['available']}/{counts['total']} clips available")
    for row, sample in enumerate(samples, start=1):
        _draw_sample(fig, grid, row, sample)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _class_counts(info: DatasetInfo) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = {}
    for split in info.splits.values():
        for name, count in split.classes.items():
            entry = totals.setdefault(name, [0, 0])
            entry[0] += count.available
            entry[1] += count.total
    return {name: (a, t) for name, (a, t) in sorted(totals.items())}


def sheet_frames(sample: dict, meta: dict) -> list[np.ndarray]:
    """SHEET_FRAMES frames spread over the clip, at stored size, from the JPEGs or the mp4 alike."""
    n_frames = int(meta.get("n_frames") or 0)
    if not n_frames:
        return []
    picks = np.linspace(0, n_frames - 1, SHEET_FRAMES).round().astype(int)
    return decode_frames(sample, meta, picks, canvas=min(int(meta["width"]), int(meta["height"])))


def _draw_sample(fig, grid, row: int, sample: dict) -> None:
    meta = sample_meta(sample)
    for col, frame in enumerate(sheet_frames(sample, meta)):
        ax = fig.add_subplot(grid[row, col])
        ax.imshow(frame)
        ax.set_axis_off()
        if col == 0:
            ax.set_title(f"{meta['label']} ({meta['split']})", fontsize=8, loc="left")
    if schema.AUDIO_EXT in sample:
        audio, rate = schema.read_wav(sample[schema.AUDIO_EXT])
        ax = fig.add_subplot(grid[row, SHEET_FRAMES:])
        with np.errstate(divide="ignore"):  # silent stretches have zero power
            ax.specgram(audio.astype(np.float32) / 32768.0, NFFT=512, Fs=rate, noverlap=256, cmap="magma")
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("Hz", fontsize=7)
        ax.tick_params(labelsize=6)

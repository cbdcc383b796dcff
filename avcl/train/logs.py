"""What a run reports: progress (a live bar on a terminal, timestamped lines in a log), metrics.jsonl,
TensorBoard scalars, optionally Weights & Biases, and, at the end, loss curves."""
from __future__ import annotations

import json
import time
from pathlib import Path

from avcl.plots import pyplot, save_figure
from avcl.progress import Progress
from avcl.storage import RunFolder, local_errors, write_atomic
from avcl.train.config import ConfigError, TrainConfig

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after `step` (and a half-written last line): a run resumed from an older checkpoint (a
    fallback past an unreadable last.pt, a local log ahead of the uploaded checkpoint) logs those steps again."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and _record_step(line) <= step]
    if kept != lines:
        write_atomic(path, "".join(kept).encode())


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunLog:
    """Rank 0 writes; other ranks hold a silent instance so the loop never branches on rank. Files go to the run
    folder's local side; `sync` uploads them when the run folder is remote."""

    def __init__(self, folder: RunFolder, config: TrainConfig, total_steps: int, first_step: int, active: bool):
        self.folder, self.active = folder, active
        self.progress = Progress("train", total_steps, first_step, active=active)
        if active:
            truncate_metrics(folder.path(METRICS), first_step)
        with local_errors(folder.path(METRICS)):
            self.metrics = open(folder.path(METRICS), "a") if active else None
        self.tensorboard = _tensorboard(folder.path(TENSORBOARD)) if active else None
        self.wandb = _wandb(config, folder) if active and config.run.wandb else None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        if self.metrics:
            self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()
        self.sync()

    def sync(self) -> None:
        """Flush and upload the logs (a no-op for a local run folder)."""
        if not self.active:
            return
        if self.metrics and not self.metrics.closed:
            with local_errors(self.folder.path(METRICS)):
                self.metrics.flush()
        if self.tensorboard:
            self.tensorboard.flush()
        self.folder.push(METRICS, TENSORBOARD)

    def step(self, step: int, values: dict[str, float], show: bool) -> None:
        """Record one optimiser step's scalars and report it when `show`."""
        if not self.active:
            return
        if not show:
            self.progress.update(step)
            return
        record = {"step": step, "time": round(time.time(), 3), **{k: _round(v) for k, v in values.items()}}
        with local_errors(self.folder.path(METRICS)):
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        if self.tensorboard:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(values, step=step)
        shown = ["loss", "lr", "clips_per_s", "data_wait"]
        line = " ".join(f"{k}={_short(values[k])}" for k in shown if k in values)
        terms = " ".join(f"{k[5:]}={_short(v)}" for k, v in values.items() if k.startswith("loss/"))
        self.progress.update(step, f"{line} | {terms}" if terms else line, log=True)

    def print(self, message: str) -> None:
        self.progress.print(message)


def _wandb(config: TrainConfig, folder: RunFolder):
    """A Weights & Biases run (optional: `run.wandb=true` needs the wandb package; WANDB_MODE, WANDB_API_KEY...
    apply as usual)."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("run.wandb=true needs the wandb package: pip install wandb (or set run.wandb=false)") from None
    return wandb.init(project=config.run.wandb_project, name=Path(folder.url).name, dir=str(folder.local),
                      config=config.to_dict(), resume="allow")


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional
        return None
    return SummaryWriter(str(path))


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _short(value: float) -> str:
    return f"{value:.3g}"


def plot_curves(folder: RunFolder) -> Path | None:
    """RUN/curves.png: one panel per logged scalar of metrics.jsonl against the step."""
    path = folder.path(METRICS)
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r if k not in ("step", "time")})
    if not keys:
        return None
    plt = pyplot()

    columns = 4
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out = folder.path("curves.png")
    save_figure(fig, out, dpi=90)
    folder.push("curves.png")
    return out

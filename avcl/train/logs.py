"""What a run reports: a live progress line, metrics.jsonl, TensorBoard scalars and, at the end, loss curves."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunLog:
    """Rank 0 writes; other ranks hold a silent instance so the loop never branches on rank."""

    def __init__(self, run_dir: Path, total_steps: int, first_step: int, active: bool):
        self.run_dir, self.active = run_dir, active
        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[line]}"), TimeRemainingColumn(), console=self.console,
                                 disable=not active, transient=False)
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, line="")
        self.metrics = open(run_dir / "metrics.jsonl", "a") if active else None
        self.tensorboard = _tensorboard(run_dir) if active else None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        if self.metrics:
            self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()

    def step(self, step: int, values: dict[str, float], show: bool) -> None:
        """Record one optimiser step's scalars; refresh the live line when `show`."""
        self.progress.update(self.task, completed=step)
        if not self.active or not show:
            return
        record = {"step": step, "time": round(time.time(), 3), **{k: _round(v) for k, v in values.items()}}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.tensorboard:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        shown = ["loss", "lr", "clips_per_s", "data_wait"]
        line = " ".join(f"{k}={_short(values[k])}" for k in shown if k in values)
        terms = " ".join(f"{k[5:]}={_short(v)}" for k, v in values.items() if k.startswith("loss/"))
        self.progress.update(self.task, line=f"{line} | {terms}")

    def print(self, message: str) -> None:
        if self.active:
            self.progress.console.print(message)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _short(value: float) -> str:
    return f"{value:.3g}"


def plot_curves(run_dir: Path) -> Path | None:
    """RUN/curves.png: one panel per logged scalar of metrics.jsonl against the step."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in records for k in r if k not in ("step", "time")})
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

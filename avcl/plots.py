"""Figures are files: matplotlib's pyplot on the Agg backend, imported only when a figure is drawn."""
from __future__ import annotations

from pathlib import Path

from avcl.storage import atomic_file


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write `fig` as the PNG `path` whole or not at all (a full disk is the one-line storage error), and
    close it."""
    try:
        with atomic_file(path) as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return path

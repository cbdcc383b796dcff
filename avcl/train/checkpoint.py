"""Checkpoints: written atomically, loaded without running code, carrying everything a resume needs.

A checkpoint is a plain dict of tensors and Python scalars (model, optimiser, scheduler, scaler, loop state,
RNG states, the resolved config as a dict) saved with `torch.save` to a temporary file in the same folder,
flushed to disk and renamed over the target: a crash mid-write leaves the previous file whole. Loading uses
`torch.load(weights_only=True)`, which refuses pickled code.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

LAST, BEST = "last.pt", "best.pt"


def save_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_partial(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a killed run left (`.last.pt.*.tmp`, a checkpoint's size
    each). Only the run's own main process writes in its folder, so at its start every such file is stale."""
    stale = [p for p in run_dir.glob(".*.pt.*.tmp") if p.is_file()] if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (a run folder holds {LAST}, {BEST}, step_*.pt)")
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict:
    """RNG states as tensors and plain lists, which weights_only loading accepts."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]

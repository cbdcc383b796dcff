"""Checkpoints: written atomically, loaded without running code, carrying everything a resume needs.

A checkpoint is a plain dict of tensors and Python scalars (model, optimiser, scheduler, scaler, loop state,
RNG states, the resolved config as a dict) saved with `torch.save` to a temporary file in the same folder,
flushed to disk and renamed over the target: a crash mid-write leaves the previous file whole. Loading uses
`torch.load(weights_only=True)`, which refuses pickled code; a file it cannot read is a CheckpointError that
says so (never advising to load it with code execution allowed).
"""
from __future__ import annotations

import argparse
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from avcl.errors import UserError
from avcl.storage import atomic_file

LAST, BEST = "last.pt", "best.pt"
STEP = re.compile(r"step_(\d+)\.pt")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or whose layout matches no backbone or converter."""


def save_atomic(payload: dict, path: Path) -> None:
    with atomic_file(path) as f:
        torch.save(payload, f)


def sweep_partial(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a killed run left (`.last.pt.*.tmp`, a checkpoint's size
    each). Only the run's own main process writes in its folder, so at its start every such file is stale."""
    stale = [p for p in run_dir.glob(".*.pt.*.tmp") if p.is_file()] if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# plain records that released training checkpoints carry beside their weights (GDT's and SeLaVi's `args`): data
# only, so loading them runs no code
SAFE_GLOBALS = [argparse.Namespace]


def load(path: Path, map_location="cpu") -> dict:
    """A checkpoint file's dict, loaded without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there (a run folder holds {LAST}, {BEST}, step_N.pt; an "
                              "export folder export.json and *_encoder.pt)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several kinds for files it cannot read safely
        raise CheckpointError(f"{path}: not a readable avtools checkpoint ({unreadable_because(exc)}); use a "
                              "checkpoint avtools train wrote, or a state_dict saved with torch.save") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: holds a {type(saved).__name__}, not a dict of weights; save model.state_dict()")
    return saved


def unreadable_because(exc: Exception) -> str:
    """Why torch could not load a file, in a few words (torch's own message advises running its code)."""
    text = str(exc)
    pickled = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if pickled:
        return f"it holds code or objects avtools does not load (a pickled {pickled.group(1)})"
    if isinstance(exc, pickle.UnpicklingError):  # whatever torch's wording: weights_only refused the pickle
        return "it holds code or objects avtools does not load"
    if isinstance(exc, EOFError) or "PytorchStreamReader" in text or "central directory" in text:
        return "truncated or corrupt"
    return f"not a torch.save file: {type(exc).__name__}"


def resume_candidates(names: list[str]) -> list[str]:
    """The checkpoints a resume may start from, in the order to try: last.pt, step_N.pt newest first, best.pt."""
    steps = sorted((int(m.group(1)), name) for name in names if (m := STEP.fullmatch(name)))
    ordered = [LAST] + [name for _, name in reversed(steps)] + [BEST]
    return [name for name in ordered if name in names]


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

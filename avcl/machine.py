"""What this process may use of the machine. Torch-free (the builder uses it too)."""
from __future__ import annotations

import os
import re

MAX_LOADER_WORKERS = 8


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: what SLURM, taskset or a container grant),
    not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def loader_workers(value: int | str) -> int:
    """Loader processes per rank: a number as given, or `auto`: the usable cores shared among this node's ranks
    (torchrun's LOCAL_WORLD_SIZE), at most MAX_LOADER_WORKERS."""
    if value == "auto":
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        return max(1, min(MAX_LOADER_WORKERS, usable_cores() // max(1, ranks)))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"workers must be auto or a number >= 0 (0: load in the main process), not {value!r}")
    return value


DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = ("bf16", "fp16", "fp32")


def check_device(value: str) -> str:
    """`value` if it names a device avtools can run on: auto (CUDA when present), cpu, cuda or cuda:N."""
    if not isinstance(value, str) or not DEVICES.fullmatch(value):
        raise ValueError(f"device {value!r}: use auto, cpu, cuda or cuda:N")
    return value


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"precision {value!r}: use {', '.join(PRECISIONS)}")
    return value


def running(pid: int) -> bool:
    """Whether a process of this host has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

"""The process's place in a run: device and process group (torchrun's environment), the autocast table, and
the collective helpers training, evaluation and the losses share. Imports nothing else of avcl's but the error
family and the device names."""
from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys

import torch
import torch.distributed as dist

from avcl.errors import ConfigError
from avcl.machine import check_device

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclasses.dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """Device and process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); 1 process without.
    `device` is auto (CUDA when present), cpu, cuda (the local rank's GPU) or cuda:N."""
    world_size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    kind, _, index = check_device(device).partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}, but no CUDA device is visible; use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}, but {torch.cuda.device_count()} CUDA device(s) are visible")
    use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
    local = int(index) if index else int(os.environ.get("LOCAL_RANK", 0))
    target = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        atexit.register(leave_process_group)
    return Context(rank, world_size, target)


def finish() -> None:
    """The normal end of a distributed run: wait for every rank, then leave the process group. A rank that
    tears down while another still runs (rank 0 saving) can abort at exit with gloo ("terminate called without
    an active exception": 1 torchrun run in 4 here, none in 15 with this)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def end_rank() -> None:
    """End a torchrun rank whose work is done and written: flush, then exit without the interpreter's teardown,
    where gloo's transport still aborts now and then even after `finish` ("terminate called without an active
    exception", ~1 run in 30 here), which torchrun reports as a failed run. Does nothing outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        finish()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def leave_process_group() -> None:
    """At exit, also after an error: leave the group without waiting for the others (they may be gone)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, differentiable (each rank's gradient returns to it)."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed._functional_collectives import all_gather_single_autograd

    return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)


@torch.no_grad()
def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (the same shape on every rank) from every rank along dim 0, without gradients."""
    _, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def own_rows(n: int, device) -> torch.Tensor:
    """Indices of this rank's rows in a gathered batch of n rows per rank."""
    rank, _ = world()
    return torch.arange(n, device=device) + rank * n


def gather_rows(x: torch.Tensor, device) -> torch.Tensor:
    """Concatenate each rank's rows (any count per rank) on every rank, in rank order, on the CPU."""
    size = world()[1]
    if size == 1:
        return x
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    x = x.to(backend_device)
    sizes = [torch.zeros(1, dtype=torch.long, device=backend_device) for _ in range(size)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=backend_device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=backend_device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(n)] for p, n in zip(parts, sizes)]).cpu()


def gather_objects(items: list) -> list:
    """Concatenate each rank's list of picklable items on every rank, in rank order."""
    size = world()[1]
    if size == 1:
        return items
    out = [None] * size
    dist.all_gather_object(out, items)
    return [item for part in out for item in part]


def mean_over_ranks(values: list[float], ctx: Context) -> float:
    """The mean of every rank's values together."""
    total = torch.tensor([sum(values), len(values)], dtype=torch.float64)
    if ctx.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1].clamp(min=1)).item()

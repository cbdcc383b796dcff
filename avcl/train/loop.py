"""The training loop: one GPU or many (torchrun + DDP; gloo on CPU), resumable, guarded.

    stream (per-rank micro-batches) -> device augment -> method -> loss -> backward (accumulated, DDP-averaged)
    -> clip -> optimiser -> schedule -> logs, kNN monitor, atomic checkpoints

Batch arithmetic: `data.batch_size` is the global batch. Each rank reads micro-batches of
batch_size / (world_size * accumulate) and steps the optimiser every `accumulate` micro-batches, so the global
batch, the learning rate (lr * batch_size / base_batch) and the step count do not depend on the world size.
Resuming restores model, optimiser, scheduler, scaler, the method's buffers (e.g. the temporal-av queue), the
loop state and RNG, and reopens the data stream at the checkpoint's epoch with a fresh seed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import avcl.methods as methods
from avcl import models
from avcl.data.augment import DeviceAugment
from avcl.data.sources import SourceError, open_url, resolve_all
from avcl.data.stream import EvalStream, StreamConfig, TrainStream, loader
from avcl.data.views import eval_spec, run_spec
from avcl.methods.base import flat
from avcl.eval.features import extract
from avcl.eval.knn import leave_one_out_accuracy
from avcl.train import checkpoint
from avcl.train.config import TrainConfig, to_text
from avcl.train.logs import RunLog, plot_curves


class TrainingError(RuntimeError):
    """A run cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """Device and process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); 1 process without."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda, but no CUDA device is visible; use --device cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(rank, world, target)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class Trainer:
    """Model, optimiser, schedule, scaler and one optimiser step; no data, so tests can drive it directly."""

    def __init__(self, config: TrainConfig, ctx: Context):
        self.config, self.ctx = config, ctx
        run, optim = config.run, config.optim
        self.method = methods.build(config.method_name, config.method).to(ctx.device)
        if run.sync_bn and ctx.world > 1:
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if run.channels_last:
            models.channels_last(self.method)
        self.model = self.method
        if ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.method, device_ids=ids)
        self.forward = torch.compile(self.model) if run.compile else self.model
        self.augment = DeviceAugment(config.video, config.mel, config.spec_augment).to(ctx.device)
        if run.precision not in AUTOCAST:
            raise TrainingError(f"run.precision must be one of {', '.join(AUTOCAST)}, not {run.precision!r}")
        # CUDA only: CPU bf16 autocast is emulated on most CPUs, and its conv3d backward gave NaN weight
        # gradients at random (a finite loss, 1 run in 2 of a 1-step width-4 R(2+1)D run, reproduced on 2.13)
        self.autocast = AUTOCAST[run.precision] if ctx.device.type == "cuda" else None
        self.lr = optim.lr * config.data.batch_size / optim.base_batch
        self.optimizer = build_optimizer(self.method, optim, self.lr)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=run.precision == "fp16")
        self.scheduler = None

    def schedule(self, total_steps: int, steps_per_epoch: int) -> None:
        self.scheduler = build_scheduler(self.optimizer, self.config.optim, total_steps, steps_per_epoch)

    def step(self, micro_batches: list[dict], step: int) -> tuple[float, dict[str, float]]:
        """One optimiser step over model-ready micro-batches; returns the mean loss and terms as floats."""
        sums: dict[str, torch.Tensor] = {}
        for i, inputs in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            no_sync = self.model.no_sync() if (self.ctx.world > 1 and not last) else contextlib.nullcontext()
            with no_sync:
                with torch.autocast(self.ctx.device.type, dtype=self.autocast or torch.float32,
                                    enabled=self.autocast is not None):
                    loss, terms = self.forward(inputs)
                self.check_finite(loss, terms, step)
                self.scaler.scale(loss / len(micro_batches)).backward()
            for key, value in {"loss": loss.detach().float(), **terms}.items():
                sums[key] = sums.get(key, 0) + value
        if self.config.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.method.parameters(), self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.optim.schedule != "plateau":
            self.scheduler.step()
        means = dict(zip(sums, (torch.stack(list(sums.values())) / len(micro_batches)).tolist()))  # one sync
        return means.pop("loss"), means

    def check_finite(self, loss: torch.Tensor, terms: dict, step: int) -> None:
        """All ranks agree whether the loss is finite (so none is left waiting in an all-reduce)."""
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.ctx.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise NonFiniteLoss(step, float(loss.detach()), shown)

    def state_dict(self) -> dict:
        return {"model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class NonFiniteLoss(TrainingError):
    def __init__(self, step: int, loss: float, terms: str):
        self.step, self.loss, self.terms = step, loss, terms
        super().__init__(f"loss is {loss} at step {step} ({terms})")


def build_optimizer(method: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and kernels only, unless `decay_norm_and_bias`."""
    params = [p for p in method.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1 or cfg.decay_norm_and_bias]
    no_decay = [p for p in params if not (p.ndim > 1 or cfg.decay_norm_and_bias)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.name in ("adam", "adamw"):
        return (torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW)(groups, lr=lr)
    raise TrainingError(f"optim.name must be sgd, adam or adamw, not {cfg.name!r}")


def build_scheduler(optimizer, cfg, total_steps: int, steps_per_epoch: int):
    """Per-step linear warm-up then cosine to min_lr (or constant); plateau steps once per epoch on its loss."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    if cfg.schedule not in ("cosine", "constant"):
        raise TrainingError(f"optim.schedule must be cosine, plateau or constant, not {cfg.schedule!r}")
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    base = optimizer.param_groups[0]["lr"]
    floor = cfg.min_lr / base if base else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- the run -------------------------------------------------------------------------------------------------

def train(config: TrainConfig, run_dir: Path, resume: bool = False) -> Path:
    """Pre-train `config.method_name`; returns the path of the final checkpoint (RUN/last.pt)."""
    ctx = setup(config.run.device)
    run, data = config.run, config.data
    micro = _micro_batch(data.batch_size, ctx.world, run.accumulate)
    sources = _sources(data.train, "train")
    val_sources = _sources(data.val, data.val_split) if data.val else []
    torch.manual_seed(run.seed + ctx.rank)
    trainer = Trainer(config, ctx)
    spec = run_spec(trainer.method.view_spec(), data)
    epoch_micro_steps = TrainStream(sources, spec, _stream_config(data, micro, ctx, 0, 0), data.epoch_samples or None).steps_per_epoch
    steps_per_epoch = max(1, epoch_micro_steps // run.accumulate)
    total = run.max_steps or run.epochs * steps_per_epoch
    trainer.schedule(total, steps_per_epoch)
    state = _start(trainer, run_dir, resume, ctx, config)
    clips_per_step = data.batch_size * spec.n_clips
    with RunLog(run_dir, total, state["step"], ctx.main) as log:
        log.print(f"[bold]{config.method_name}[/]: {total} steps ({steps_per_epoch}/epoch), global batch "
                  f"{data.batch_size} = {ctx.world} rank(s) x {run.accumulate} x {micro}, lr {trainer.lr:.4g}, "
                  f"{ctx.device}, {run.precision if ctx.device.type == 'cuda' else 'fp32'}; run folder {run_dir}")
        while state["step"] < total:
            epoch = state["step"] // steps_per_epoch
            stream = TrainStream(sources, spec, _stream_config(data, micro, ctx, epoch, run.seed + 1_000_003 * state["resumes"]),
                                 data.epoch_samples or None)
            batches = iter(loader(stream, pin_memory=ctx.device.type == "cuda"))
            remaining = min(steps_per_epoch - state["step"] % steps_per_epoch, total - state["step"])
            epoch_losses = []
            for _ in range(remaining):
                started = time.perf_counter()
                raw = [next(batches) for _ in range(run.accumulate)]
                waited = time.perf_counter() - started
                inputs = [trainer.augment(b, train=True) for b in raw]
                try:
                    loss, terms = trainer.step(inputs, state["step"] + 1)
                except NonFiniteLoss as exc:
                    raise TrainingError(f"{exc}; stopped. The last good checkpoint is {_last_good(run_dir)}. "
                                        "Lower optim.lr, add warm-up (optim.warmup_epochs) or set optim.clip_grad, "
                                        "then --resume.") from None
                except torch.OutOfMemoryError:
                    raise TrainingError(f"out of memory at {micro} samples per rank and step: lower --batch-size or "
                                        f"raise --set run.accumulate={run.accumulate * 2} (same global batch, "
                                        "less memory)") from None
                state["step"] += 1
                epoch_losses.append(loss)
                elapsed = time.perf_counter() - started
                values = {"loss": loss, "lr": trainer.optimizer.param_groups[0]["lr"],
                          "clips_per_s": clips_per_step / elapsed, "data_wait": waited / elapsed,
                          **{f"loss/{k}": v for k, v in terms.items()}}
                step = state["step"]
                if run.knn_every and val_sources and step % run.knn_every == 0:
                    values["knn_top1"] = knn_monitor(trainer, val_sources, spec, config, ctx)
                    _keep_best(trainer, state, values["knn_top1"], run_dir, ctx, config)
                log.step(step, values, show=step % run.log_every == 0 or step == total or "knn_top1" in values)
                if step % run.checkpoint_every == 0 or step == total:
                    _save(trainer, state, run_dir, ctx, config, keep=run.keep_every and step % run.keep_every == 0)
            epoch_loss = _mean_over_ranks(epoch_losses, ctx)
            if config.optim.schedule == "plateau":
                trainer.scheduler.step(epoch_loss)
            if not (run.knn_every and val_sources):
                _keep_best(trainer, state, -epoch_loss, run_dir, ctx, config)
            _save(trainer, state, run_dir, ctx, config)
        _save(trainer, state, run_dir, ctx, config)  # also when a resume had nothing left to do
        if ctx.main:
            plot_curves(run_dir)
    return run_dir / checkpoint.LAST


def _micro_batch(batch: int, world: int, accumulate: int) -> int:
    if batch % (world * accumulate):
        raise TrainingError(f"--batch-size {batch} must be divisible by world size x accumulation "
                            f"({world} x {accumulate})")
    return batch // (world * accumulate)


def _sources(specs: list[str], split: str):
    """Resolve and open the first shard of each source now, so a bad URL fails in seconds, naming itself."""
    try:
        sources = resolve_all(specs, split)
        for source in sources:
            if not source.urls:
                raise SourceError(f"{source.spec}: no shards")
            if not source.urls[0].startswith("pipe:"):
                with open_url(source.urls[0]) as f:
                    if not f.read(512):
                        raise SourceError(f"{source.urls[0]}: empty shard")
    except (SourceError, OSError) as exc:
        raise TrainingError(f"data source: {exc}") from None
    return sources


def _stream_config(data, micro: int, ctx: Context, epoch: int, seed: int) -> StreamConfig:
    return StreamConfig(batch_size=micro, workers=data.workers, world_size=ctx.world, rank=ctx.rank, seed=seed,
                        epoch=epoch, shuffle=data.shuffle)


def _start(trainer: Trainer, run_dir: Path, resume: bool, ctx: Context, config: TrainConfig) -> dict:
    last = run_dir / checkpoint.LAST
    if ctx.main:
        checkpoint.sweep_partial(run_dir)
    if resume:
        saved = checkpoint.load(last, map_location=ctx.device)
        trainer.load_state_dict(saved)
        state = dict(saved["state"])
        state["resumes"] += 1
        if ctx.main:
            checkpoint.set_rng_state(saved["rng"])
        else:  # other ranks' RNG is not saved: reseed them apart from rank 0 and from their previous runs
            torch.manual_seed(config.run.seed + ctx.rank + 1_000_003 * state["resumes"])
        return state
    if last.exists():
        raise TrainingError(f"{run_dir} already holds a run ({last.name}): pass --resume to continue it, or "
                            "choose another --out")
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        print(to_text(config))
    return {"step": 0, "resumes": 0, "best": -math.inf, "best_step": 0}


def _payload(trainer: Trainer, state: dict, config: TrainConfig) -> dict:
    return {**trainer.state_dict(), "state": dict(state), "rng": checkpoint.rng_state(),
            "config": config.to_dict(), "method_name": config.method_name}


def _save(trainer, state, run_dir: Path, ctx: Context, config, keep: bool = False) -> None:
    if ctx.main:
        payload = _payload(trainer, state, config)
        checkpoint.save_atomic(payload, run_dir / checkpoint.LAST)
        if keep:
            checkpoint.save_atomic(payload, run_dir / f"step_{state['step']}.pt")


def _keep_best(trainer, state: dict, score: float, run_dir: Path, ctx: Context, config) -> None:
    """best.pt tracks the highest score: the kNN monitor's accuracy, or else minus the epoch's mean loss."""
    if score > state["best"]:
        state["best"], state["best_step"] = score, state["step"]
        if ctx.main:
            checkpoint.save_atomic(_payload(trainer, state, config), run_dir / checkpoint.BEST)


def _last_good(run_dir: Path) -> str:
    last = run_dir / checkpoint.LAST
    if not last.exists():
        return "none (no checkpoint was written yet)"
    step = checkpoint.load(last)["state"]["step"]
    return f"{last} (step {step})"


def _mean_over_ranks(values: list[float], ctx: Context) -> float:
    total = torch.tensor([sum(values), len(values)], dtype=torch.float64)
    if ctx.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1].clamp(min=1)).item()


def knn_monitor(trainer: Trainer, sources, spec, config: TrainConfig, ctx: Context) -> float:
    """Leave-one-out weighted kNN top-1 on the validation shards' video features (1 centre clip per sample)."""
    stream = EvalStream(sources, eval_spec(spec, 1), _stream_config(config.data, max(1, config.data.batch_size // ctx.world), ctx, 0, 0))
    trainer.method.eval()
    embed = lambda inputs: trainer.method.video_features(flat(inputs["video"])).unflatten(0, inputs["video"].shape[:2])  # noqa: E731
    try:
        features = extract(embed, stream, trainer.augment, trainer.autocast)
    finally:
        trainer.method.train()
    return leave_one_out_accuracy(torch.from_numpy(features.features), torch.from_numpy(features.labels), config.run.knn_k)

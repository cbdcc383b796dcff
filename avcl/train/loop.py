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
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import avcl.methods as methods
from avcl import models
from avcl.data.augment import DeviceAugment
from avcl.data.sources import SourceError, open_url, resolve_all
from avcl.data.stream import StreamConfig, TrainStream, loader
from avcl.data.views import run_spec
from avcl.errors import TrainingError
from avcl.locks import exclusive_folder
from avcl.machine import loader_workers
from avcl.methods.base import Method
from avcl.runtime import AUTOCAST, Context, finish, mean_over_ranks, setup
from avcl.storage import RunFolder, write_atomic
from avcl.train import checkpoint
from avcl.train.config import TrainConfig, compact
from avcl.train.heldout import knn_monitor, plateau_metric
from avcl.train.logs import METRICS, RunLog, plot_curves
from avcl.train.optim import build_optimizer, build_scheduler
from avcl.urls import redact


CONFIG = "config.json"


def for_device(config: TrainConfig, device: torch.device) -> TrainConfig:
    """The run settings this device handles soundly, recorded in config.json: on CUDA the config's own; on the
    CPU fp32 without channels-last 3D convolutions (CPU bf16 autocast is emulated on most CPUs, and with it and
    channels-last the conv3d backward gave NaN gradients at random: xmodal and tcgl's presets stopped on a NaN
    loss at step 2-3, reproduced on torch 2.13)."""
    if device.type == "cuda":
        return config
    return dataclasses.replace(config, run=dataclasses.replace(config.run, precision="fp32", channels_last=False))


class Embedder(nn.Module):
    """A method's `embed` as a module's forward, so DDP can wrap it (its hooks sync the gradients)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch: dict, reuse: dict | None = None) -> dict:
        return self.method.embed(batch, reuse)


class Trainer:
    """Model, optimiser, schedule, scaler and one optimiser step; no data, so tests can drive it directly.

    A step takes its micro-batches as the loader gives them (CPU views) and augments each on the device only when
    it is used, so one micro-batch's inputs are on the device at a time. With `run.accumulate > 1` a method with
    terms across samples (`cross_sample`) is stepped through its embeddings: all micro-batches embedded without
    gradients, then each recomputed with gradients against the others' cached embeddings, so the contrastive
    terms keep every negative of the global batch (the gradients equal the large batch's, BatchNorm's
    per-micro-batch statistics apart). Its augmentation is seeded per micro-batch so both passes see the same.
    """

    def __init__(self, config: TrainConfig, ctx: Context):
        self.config, self.ctx = config, ctx
        run, optim = config.run, config.optim
        self.method = methods.build(config.method_name, config.method).to(ctx.device)
        if run.sync_bn and ctx.world > 1:
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if run.channels_last:
            models.channels_last(self.method)
        self.cached = run.accumulate > 1 and self.method.cross_sample
        self.model = Embedder(self.method) if self.cached else self.method
        if ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = torch.compile(self.model) if run.compile else self.model
        self.augment = DeviceAugment(config.video, config.mel, config.spec_augment).to(ctx.device)
        if run.precision not in AUTOCAST:
            raise TrainingError(f"run.precision must be one of {', '.join(AUTOCAST)}, not {run.precision!r}")
        self.autocast = AUTOCAST[run.precision]
        self.lr = optim.lr * config.data.batch_size / optim.base_batch
        self.optimizer = build_optimizer(self.method, optim.name, self.lr, optim.momentum, optim.weight_decay,
                                         optim.decay_norm_and_bias)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=run.precision == "fp16")
        self.scheduler = None

    def schedule(self, total_steps: int, steps_per_epoch: int) -> None:
        self.scheduler = build_scheduler(self.optimizer, self.config.optim, total_steps, steps_per_epoch)

    def step(self, micro_batches: list[dict], step: int) -> tuple[float, dict[str, float]]:
        """One optimiser step over the loader's micro-batches; returns the loss and terms as floats."""
        loss, terms = self.accumulate(micro_batches, step)
        if self.config.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.method.parameters(), self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.optim.schedule != "plateau":
            self.scheduler.step()
        values = dict(zip(["loss", *terms], torch.stack([loss.detach().float(), *terms.values()]).tolist()))  # one sync
        return values.pop("loss"), values

    def accumulate(self, micro_batches: list[dict], step: int) -> tuple[torch.Tensor, dict]:
        """The step's gradients, accumulated into the parameters' .grad; (loss, terms) of the whole step."""
        return self._through_embeddings(micro_batches, step) if self.cached else self._one_by_one(micro_batches, step)

    def _one_by_one(self, micro_batches: list[dict], step: int):
        sums: dict[str, torch.Tensor] = {}
        for i, raw in enumerate(micro_batches):
            with self._sync_only_last(i, len(micro_batches)), self._autocast():
                loss, terms = self.forward(self.augment(raw, train=True))
            self.check_finite(loss, terms, step)
            self.scaler.scale(loss / len(micro_batches)).backward()
            for key, value in {"loss": loss.detach().float(), **terms}.items():
                sums[key] = sums.get(key, 0) + value / len(micro_batches)
        loss = sums.pop("loss")
        return loss, sums

    def _through_embeddings(self, micro_batches: list[dict], step: int):
        seeds = [int(torch.randint(2 ** 62, ())) for _ in micro_batches]
        inputs = lambda i: self.augment(micro_batches[i], train=True, generator=torch.Generator().manual_seed(seeds[i]))  # noqa: E731
        self.method.prepare_step()
        with torch.no_grad(), self._autocast():
            cached = [self.method.embed(inputs(i)) for i in range(len(micro_batches))]
        meta = merge_meta(micro_batches, self.ctx.device)
        for i in range(len(micro_batches)):
            with self._sync_only_last(i, len(micro_batches)), self._autocast():
                mine = self.forward(inputs(i), reuse=cached[i])
                embedded = {key: torch.cat([mine[key] if j == i else part[key] for j, part in enumerate(cached)])
                            for key in mine}
                loss, terms = self.method.objective(meta, embedded)
            self.check_finite(loss, terms, step)
            self.scaler.scale(loss).backward()  # the whole step's loss; only micro-batch i carries gradients
        self.method.finish_step({key: torch.cat([part[key] for part in cached]) for key in cached[0]})
        return loss.detach().float(), terms

    def _sync_only_last(self, i: int, n: int):
        return self.model.no_sync() if (self.ctx.world > 1 and i < n - 1) else contextlib.nullcontext()

    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.autocast or torch.float32,
                              enabled=self.autocast is not None)

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


def merge_meta(batches: list[dict], device: torch.device) -> dict:
    """The small tensors of a step's micro-batches, concatenated on the device (what `objective` reads)."""
    return {key: torch.cat([b[key] for b in batches]).to(device) for key, value in batches[0].items()
            if torch.is_tensor(value) and key not in Method.BIG}


class NonFiniteLoss(TrainingError):
    def __init__(self, step: int, loss: float, terms: str):
        self.step, self.loss, self.terms = step, loss, terms
        super().__init__(f"loss is {loss} at step {step} ({terms})")


# ---- the run -------------------------------------------------------------------------------------------------

class Stopped(Exception):
    """SIGTERM or SIGINT stopped the run at a step boundary, after a checkpoint (not an error: the CLI prints how
    to continue and exits 128 + the signal's number)."""

    def __init__(self, signum: int, step: int, saved: str):
        self.signum, self.step, self.saved = signum, step, saved
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {saved}")


def train(config: TrainConfig, out: str | Path, resume: bool = False, allow_config_change: bool = False) -> str:
    """Pre-train `config.method_name` into the run folder `out` (local or s3://); returns the final checkpoint."""
    ctx = setup(config.run.device)
    config = for_device(config, ctx.device)
    folder = RunFolder(out)
    with exclusive_folder(folder, "run.lock" if ctx.main else f"run-rank{ctx.rank}.lock", f"run folder {redact(folder.url)}"):
        return _train(config, folder, ctx, resume, allow_config_change)


def _train(config: TrainConfig, folder: RunFolder, ctx: Context, resume: bool, allow_config_change: bool) -> str:
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
    state = _start(trainer, folder, resume, ctx, config, allow_config_change)
    plateau_sources = _plateau_sources(config, val_sources, ctx)
    heldout = _stream_config(data, max(1, data.batch_size // ctx.world), ctx, 0, 0)
    clips_per_step = data.batch_size * spec.n_clips
    with RunLog(folder, config, total, state["step"], ctx.main) as log, StopSignals() as stop:
        log.print(f"[bold]{config.method_name}[/]: {total} steps ({steps_per_epoch}/epoch), global batch "
                  f"{data.batch_size} = {ctx.world} rank(s) x {run.accumulate} x {micro}, lr {trainer.lr:.4g}, "
                  f"{ctx.device}, {run.precision if ctx.device.type == 'cuda' else 'fp32'}; run folder {folder.url}")
        log.print(f"config ({folder.url_of(CONFIG)}): {compact(config)}")
        while state["step"] < total:
            with contextlib.ExitStack() as epochs:  # the epoch's loader workers end with it, whatever the exit
                epoch = state["step"] // steps_per_epoch
                stream = TrainStream(sources, spec, _stream_config(data, micro, ctx, epoch, run.seed + 1_000_003 * state["resumes"]),
                                     data.epoch_samples or None)
                batches = epochs.enter_context(loader(stream, pin_memory=ctx.device.type == "cuda"))
                remaining = min(steps_per_epoch - state["step"] % steps_per_epoch, total - state["step"])
                epoch_losses = []
                for _ in range(remaining):
                    if stop.agreed(ctx):
                        _save(trainer, state, folder, ctx, config, log)
                        raise Stopped(stop.signum, state["step"], folder.url_of(checkpoint.LAST))
                    started = time.perf_counter()
                    raw = [next(batches) for _ in range(run.accumulate)]
                    waited = time.perf_counter() - started
                    try:
                        loss, terms = trainer.step(raw, state["step"] + 1)
                    except NonFiniteLoss as exc:
                        raise TrainingError(f"{exc}; stopped. The last good checkpoint is {_last_good(folder)}. "
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
                        values["knn_top1"] = knn_monitor(trainer, val_sources, spec, heldout, run.knn_k)
                        _keep_best(trainer, state, values["knn_top1"], folder, ctx, config)
                    log.step(step, values, show=step % run.log_every == 0 or step == total or "knn_top1" in values)
                    keep = bool(run.keep_every) and step % run.keep_every == 0
                    if keep or step % run.checkpoint_every == 0 or step == total:
                        _save(trainer, state, folder, ctx, config, log, keep=keep)
                epoch_loss = mean_over_ranks(epoch_losses, ctx)
                if config.optim.schedule == "plateau":
                    trainer.scheduler.step(plateau_metric(trainer, plateau_sources, spec, heldout, ctx, config, epoch_loss,
                                                          log))
                if not (run.knn_every and val_sources):
                    _keep_best(trainer, state, -epoch_loss, folder, ctx, config)
                _save(trainer, state, folder, ctx, config, log)
        _save(trainer, state, folder, ctx, config, log)  # also when a resume had nothing left to do
        if ctx.main:
            plot_curves(folder)
    finish()
    return folder.url_of(checkpoint.LAST)


class StopSignals:
    """SIGTERM (a scheduler's preemption, an eviction) and SIGINT (Ctrl-C) ask the loop to stop at the next step
    boundary, after a checkpoint; a second SIGINT stops at once. Loader workers ignore both (`loader`), so a
    signal sent to the whole process group reaches the loop, not a worker mid-batch."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._asked) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _asked(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self, ctx: Context) -> bool:
        """Whether any rank was asked to stop (every rank then stops at the same step)."""
        if ctx.world == 1:
            return bool(self.signum)
        asked = torch.tensor([float(self.signum)], device=ctx.device)
        dist.all_reduce(asked, op=dist.ReduceOp.MAX)
        self.signum = self.signum or int(asked.item())
        return bool(self.signum)


def _micro_batch(batch: int, world: int, accumulate: int) -> int:
    if batch % (world * accumulate):
        raise TrainingError(f"--batch-size {batch} must be divisible by world size x accumulation "
                            f"({world} x {accumulate})")
    return batch // (world * accumulate)


def _sources(given: list[str], split: str):
    """Resolve and open the first shard of each source now, so a bad URL fails in seconds, naming itself."""
    try:
        sources = resolve_all(given, split)
        for source in sources:
            if not source.urls:
                raise SourceError(f"{source.given}: no shards")
            if not source.urls[0].startswith("pipe:"):
                with open_url(source.urls[0]) as f:
                    if not f.read(512):
                        raise SourceError(f"{source.urls[0]}: empty shard")
    except (SourceError, OSError) as exc:
        raise TrainingError(f"data source: {exc}") from None
    return sources


def _stream_config(data, micro: int, ctx: Context, epoch: int, seed: int) -> StreamConfig:
    return StreamConfig(batch_size=micro, workers=loader_workers(data.workers), world_size=ctx.world, rank=ctx.rank, seed=seed,
                        epoch=epoch, shuffle=data.shuffle)


def _start(trainer: Trainer, folder: RunFolder, resume: bool, ctx: Context, config: TrainConfig,
           allow_config_change: bool = False) -> dict:
    if ctx.main:
        checkpoint.sweep_partial(folder.local)
    if resume:
        saved, name = _resume_from(folder, ctx)
        if ctx.main:
            folder.pull(METRICS)  # a remote run's log goes on where it stopped
        changed = config_changes(saved["config"], config.to_dict())
        if changed and not allow_config_change:
            raise TrainingError(f"--resume with another config than {folder.url_of(name)}'s ({'; '.join(changed)}): "
                                "rerun with its settings, or pass --allow-config-change to continue anyway")
        trainer.load_state_dict(saved)
        state = dict(saved["state"])
        state["resumes"] += 1
        if ctx.main:
            checkpoint.set_rng_state(saved["rng"])
        else:  # other ranks' RNG is not saved: reseed them apart from rank 0 and from their previous runs
            torch.manual_seed(config.run.seed + ctx.rank + 1_000_003 * state["resumes"])
        return state
    if checkpoint.resume_candidates(folder.names()):
        raise TrainingError(f"{folder.url} already holds a run (checkpoints there): pass --resume to continue it, or "
                            "choose another --out")
    if ctx.main:
        write_atomic(folder.path(CONFIG), (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        folder.push(CONFIG)
    return {"step": 0, "resumes": 0, "best": -math.inf, "best_step": 0}


def _resume_from(folder: RunFolder, ctx: Context) -> tuple[dict, str]:
    """The checkpoint a resume continues from: last.pt, or when it cannot be read the newest readable of
    step_N.pt and best.pt (said so on the log)."""
    candidates = checkpoint.resume_candidates(folder.names())
    if not candidates:
        raise TrainingError(f"--resume: {folder.url} holds no checkpoint ({checkpoint.LAST}, step_N.pt or "
                            f"{checkpoint.BEST}); drop --resume to start a new run there")
    unreadable: list[str] = []
    found = _first_readable(folder, [checkpoint.LAST], candidates, ctx, unreadable)
    if found is None:  # the newest readable step_N.pt or best.pt, whichever is further on
        kept = [name for name in candidates if checkpoint.STEP.fullmatch(name)]
        options = [_first_readable(folder, names, candidates, ctx, unreadable) for names in (kept, [checkpoint.BEST])]
        found = max((o for o in options if o is not None), key=lambda item: item[0], default=None)
    if found is None:
        raise TrainingError(f"--resume: no readable checkpoint in {folder.url}: {'; '.join(unreadable)}")
    step, name, saved = found
    if unreadable and ctx.main:
        print(f"{'; '.join(unreadable)}; resuming from {folder.url_of(name)} (step {step})", file=sys.stderr, flush=True)
    return saved, name


def _first_readable(folder: RunFolder, names: list[str], present: list[str], ctx: Context, unreadable: list[str]):
    """(step, name, checkpoint) of the first of `names` present that loads; the others' errors in `unreadable`."""
    for name in (n for n in names if n in present):
        folder.pull(name)
        try:
            saved = checkpoint.load(folder.path(name), map_location=ctx.device)
        except checkpoint.CheckpointError as exc:
            unreadable.append(str(exc))
            continue
        return saved["state"]["step"], name, saved
    return None


RESUMABLE_CHANGES = ("data.workers", "data.val", "run.device", "run.epochs", "run.max_steps", "run.log_every",
                     "run.checkpoint_every", "run.keep_every", "run.knn_every", "run.compile")


def config_changes(before: dict, now: dict) -> list[str]:
    """`key before -> now` for every setting that differs, except those a resume may change (more steps, other
    logging, workers, device)."""
    def flat_items(values: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in values.items():
            out.update(flat_items(value, f"{prefix}{key}.") if isinstance(value, dict) and key != "task_weights"
                       else {f"{prefix}{key}": value})
        return out

    old, new = flat_items(before), flat_items(now)
    return [f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}" for key in sorted(set(old) | set(new))
            if key not in RESUMABLE_CHANGES and json.dumps(old.get(key)) != json.dumps(new.get(key))]


def _plateau_sources(config: TrainConfig, val_sources, ctx: Context):
    """The held-out sources a plateau schedule on a validation term reads: --val-data, else the training
    folders' val split (TCGL holds out videos of its training set), else none (the train loss then)."""
    optim = config.optim
    if optim.schedule != "plateau" or not optim.plateau_on.startswith("val:"):
        return []
    if val_sources:
        return val_sources
    try:
        return _sources(config.data.train, config.data.val_split)
    except TrainingError:
        if ctx.main:
            print(f"optim.plateau_on={optim.plateau_on}: no held-out data (no --val-data, no "
                  f"'{config.data.val_split}' split beside the training data); the plateau follows the train loss")
        return []


def _payload(trainer: Trainer, state: dict, config: TrainConfig) -> dict:
    return {**trainer.state_dict(), "state": dict(state), "rng": checkpoint.rng_state(),
            "config": config.to_dict(), "method_name": config.method_name}


def _save(trainer, state, folder: RunFolder, ctx: Context, config, log: RunLog, keep: bool = False) -> None:
    if ctx.main:
        payload = _payload(trainer, state, config)
        checkpoint.save_atomic(payload, folder.path(checkpoint.LAST))
        written = [checkpoint.LAST]
        if keep:
            written.append(f"step_{state['step']}.pt")
            checkpoint.save_atomic(payload, folder.path(written[-1]))
        folder.push(*written)
        log.sync()


def _keep_best(trainer, state: dict, score: float, folder: RunFolder, ctx: Context, config) -> None:
    """best.pt tracks the highest score: the kNN monitor's accuracy, or else minus the epoch's mean loss."""
    if score > state["best"]:
        state["best"], state["best_step"] = score, state["step"]
        if ctx.main:
            checkpoint.save_atomic(_payload(trainer, state, config), folder.path(checkpoint.BEST))
            folder.push(checkpoint.BEST)


def _last_good(folder: RunFolder) -> str:
    last = folder.path(checkpoint.LAST)
    if not last.exists():
        return "none (no checkpoint was written yet)"
    step = checkpoint.load(last)["state"]["step"]
    return f"{folder.url_of(checkpoint.LAST)} (step {step})"

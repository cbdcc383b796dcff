"""Shards to batches of views, distributed-correct, for training and for evaluation.

Training (`TrainStream`): every rank and worker draws shards with replacement (weighted by source) from its own
seeded generator, so no rank can run out; the epoch is a fixed number of batches computed from dataset.json's
sample counts (open_clip's arithmetic: steps = N // (batch * world), split evenly over workers), so every rank
takes the same number of steps. Raw sample bytes are shuffled in a bounded buffer before decoding.

Evaluation (`EvalStream`): shard i goes to slot i mod (world * workers); each slot reads its shards once, in
order, and pads to the sample count dataset.json promises, so a sample is seen exactly once. Every rank yields
the same number of full batches: short ones are filled, and ranks with fewer batches add whole ones, with
invalid samples (`valid == False`), which is also what a corrupt sample becomes.

Both streams take an optional `select(meta) -> bool` that keeps samples by their json before decoding (an
official split's train or test videos). Evaluation with a selection cannot pad to a promised count, so ranks
may then run different batch counts: `avcl.eval.features.extract` gathers once at the end, which allows that.

Bad data (a truncated shard, a corrupt JPEG, a sample without its audio or json) is skipped (training) or marked
invalid (evaluation), counted, and reported in rate-limited warnings.
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import multiprocessing
import multiprocessing.queues
import os
import random
import signal
import sys
import weakref
import zlib
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from avcl.data.decode import SampleError, sample_meta
from avcl.data.sources import Source, open_url
from avcl.data.views import ViewSpec, empty_views, make_views
from avcl.errors import UserError
from avcl.urls import redact

log = logging.getLogger("avcl.data")


class StreamError(UserError):
    """A source whose data training cannot use (nothing but unreadable shards or samples); the message names it."""


class BadData:
    """Counts skipped items per kind and logs the 1st, 2nd, 4th, 8th... of each kind (rate-limited)."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, exc: Exception) -> bool:  # a WebDataset handler: True means go on
        kind = type(exc).__name__
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n & (n - 1) == 0:
            detail = " ".join(str(a) for a in exc.args if isinstance(a, str))
            log.warning("skipped bad data (%s #%d): %s", kind, n, detail[:300])
        return True


MAX_UNREADABLE_IN_A_ROW = 32
MAX_BAD_SAMPLES_IN_A_ROW = 1000  # training stops naming its sources rather than spin on data it cannot use


def _open_shards(urls: Iterator[str], bad: BadData) -> Iterator[dict]:
    """Shards as WebDataset's expander takes them. The next one is opened in a thread while this one is read,
    so an object store's time to first byte (moto: 0.1 s for a 130 MB shard) overlaps the decoding."""
    failures = 0
    with cf.ThreadPoolExecutor(1, thread_name_prefix="open-shard") as pool:
        def open_next() -> list[tuple[str, cf.Future]]:
            return [(url, pool.submit(open_url, url)) for url in itertools.islice(urls, 1)]

        upcoming = open_next()
        try:
            while upcoming:
                (url, opening), upcoming = upcoming[0], open_next()
                try:
                    stream = opening.result()
                except Exception as exc:
                    failures += 1
                    if failures >= MAX_UNREADABLE_IN_A_ROW:
                        raise StreamError(f"{failures} shards in a row could not be opened, the last {redact(url)}: "
                                          f"{exc}") from exc
                    bad(OSError(f"cannot read shard {redact(url)}: {exc}"))
                    continue
                failures = 0
                try:
                    yield {"url": url, "stream": stream}
                finally:
                    try:
                        stream.close()
                    except OSError as exc:  # a pipe: command that failed, a connection cut at the end
                        bad(OSError(f"shard {redact(url)}: {exc}"))
        finally:
            for _, opening in upcoming:  # opened ahead, never read: how its pipe: command ended does not matter
                if opening.exception() is None:
                    with contextlib.suppress(OSError):
                        opening.result().close()


def read_samples(urls: Iterator[str], bad: BadData) -> Iterator[dict]:
    """Raw samples ({'__key__', ext: bytes}) of the shards at `urls`, read and grouped by WebDataset's own code."""
    def files():
        empty = 0  # shards in a row that held no member: a source of nothing (pipe:false, an empty file)
        for shard in _open_shards(urls, bad):
            members = 0
            for member in tar_file_expander([shard], handler=bad, eof_value=None):
                members += 1
                yield member
            empty = 0 if members else empty + 1
            if empty >= MAX_UNREADABLE_IN_A_ROW:
                raise StreamError(f"{empty} shards in a row held no samples, the last {redact(shard['url'])}: check "
                                  "the source (a pipe: command that prints nothing or fails, empty or truncated files)")
            yield {}  # end of shard, also after a truncated one, so no sample spans two shards

    return group_by_keys(files(), handler=bad)


def selected(samples: Iterator[dict], select, bad: BadData) -> Iterator[dict]:
    """The raw samples whose json passes `select` (all when None); a sample without readable json is bad."""
    if select is None:
        yield from samples
        return
    for sample in samples:
        try:
            if select(sample_meta(sample)):
                yield sample
        except SampleError as exc:
            bad(exc)


def collate(views: list[dict]) -> dict:
    batch = {}
    for key in views[0]:
        if key == "key":
            batch[key] = [v[key] for v in views]
        else:
            batch[key] = torch.from_numpy(np.stack([v[key] for v in views]))
    return batch


def _worker(configured: int) -> int:
    """This DataLoader worker's id; the slot arithmetic needs the worker count the stream was configured with."""
    info = get_worker_info()
    workers = 1 if info is None else info.num_workers
    if workers != max(1, configured):
        raise RuntimeError(f"stream configured for {configured} workers runs under {workers}: use avcl.data.stream.loader")
    return 0 if info is None else info.id


def _with_key(views: dict, key: str) -> dict:
    views["key"] = key
    return views


@dataclasses.dataclass
class StreamConfig:
    batch_size: int
    workers: int = 2
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    epoch: int = 0
    shuffle: int = 1000  # raw samples in the shuffle buffer (bytes, not decoded tensors)
    audio_rate: int = 16000  # for the shape of invalid stand-ins when no sample could be read


class TrainStream(IterableDataset):
    """Endless resampled shards cut into equal epochs of `steps_per_epoch` batches on every rank."""

    def __init__(self, sources: list[Source], spec: ViewSpec, config: StreamConfig,
                 epoch_samples: int | None = None, select=None):
        self.sources, self.spec, self.config, self.select = sources, spec, config, select
        total = epoch_samples or _total_samples(sources)
        workers = max(1, config.workers)
        steps = max(1, total // (config.batch_size * config.world_size))
        self.batches_per_worker = math.ceil(steps / workers)
        self.steps_per_epoch = self.batches_per_worker * workers

    def __iter__(self):
        c = self.config
        worker = _worker(c.workers)
        rng = np.random.default_rng([c.seed, c.epoch, c.rank, worker])
        bad = BadData()
        self.bad_in_a_row = 0
        urls = _weighted_shards(self.sources, random.Random(int(rng.integers(2 ** 62))))
        samples = selected(read_samples(urls, bad), self.select, bad)
        raw = wds.shuffle(bufsize=c.shuffle, initial=min(c.shuffle, 100),
                          rng=random.Random(int(rng.integers(2 ** 62))))(samples)
        views = (v for v in (self._views(s, rng, bad) for s in raw) if v is not None)
        batches = (collate(chunk) for chunk in _chunks(views, c.batch_size))
        yield from itertools.islice(batches, self.batches_per_worker)

    def _views(self, sample: dict, rng, bad: BadData) -> dict | None:
        try:
            views = _with_key(make_views(sample, self.spec, rng), sample["__key__"])
        except SampleError as exc:
            bad(exc)
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= MAX_BAD_SAMPLES_IN_A_ROW:
                raise StreamError(f"{self.bad_in_a_row} samples in a row could not be used, the last: {exc}; "
                                  f"check the data ({', '.join(redact(s.given) for s in self.sources)})") from None
            return None
        self.bad_in_a_row = 0
        return views


def _total_samples(sources: list[Source]) -> int:
    unknown = [s.given for s in sources if s.num_samples is None]
    if unknown:
        raise StreamError(f"no sample counts for {', '.join(redact(u) for u in unknown)}: point at a dataset folder "
                          "or at shards with their dataset.json beside them, or give the epoch size (training: --set "
                          "data.epoch_samples=N)")
    return sum(s.num_samples for s in sources)


def _weighted_shards(sources: list[Source], rng: random.Random) -> Iterator[str]:
    weights = [s.weight for s in sources]
    while True:
        source = rng.choices(sources, weights)[0]
        yield rng.choice(source.urls)


class EvalStream(IterableDataset):
    """Every sample exactly once over ranks and workers; the same number of full batches on every rank.

    `seed` draws random (training-style) views, reproducibly per sample key: augmented crops for a classifier.
    `perturb` (an object with `window(rng) -> (lo, hi)` and `apply(views, rng) -> views`) transforms each
    sample's views, seeded per key: fingerprinting queries.
    """

    def __init__(self, sources: list[Source], spec: ViewSpec, config: StreamConfig, select=None,
                 seed: int | None = None, perturb=None):
        self.spec, self.config, self.select, self.seed, self.perturb = spec, config, select, seed, perturb
        self.shards = [(url, n) for s in sources for url, n in zip(s.urls, s.shard_samples)]
        self.workers = max(1, config.workers)
        slots = config.world_size * self.workers
        if slots > 1 and any(n is None for _, n in self.shards):
            raise ValueError("evaluation over several ranks or workers needs each shard's sample count: "
                             "read a dataset folder, or shards with their dataset.json beside them")
        self.slot_samples = [sum(n or 0 for _, n in self.shards[i::slots]) for i in range(slots)]
        per_rank = [sum(math.ceil(n / config.batch_size) for n in self.slot_samples[r * self.workers:(r + 1) * self.workers])
                    for r in range(config.world_size)]
        self.batches_per_rank = max(per_rank) if per_rank else 0
        self.extra_batches = self.batches_per_rank - per_rank[config.rank]

    def __len__(self) -> int:
        return self.batches_per_rank

    def __iter__(self):
        c = self.config
        worker = _worker(c.workers)
        slot = c.rank * self.workers + worker
        mine = self.shards[slot::c.world_size * self.workers]
        bad = BadData()
        known = self.select is None and all(n is not None for _, n in mine)
        expected = self.slot_samples[slot] if known else None
        views = self._views(selected(read_samples((url for url, _ in mine), bad), self.select, bad), bad)
        if expected is not None:  # a truncated shard must not cost this rank a batch
            padding = (self._invalid() for _ in itertools.count())
            views = itertools.islice(itertools.chain(views, padding), expected)
        for chunk in _chunks(views, c.batch_size):
            yield collate(chunk + [self._invalid()] * (c.batch_size - len(chunk)))
        if worker == 0:
            for _ in range(self.extra_batches):
                yield collate([self._invalid()] * c.batch_size)

    def _views(self, samples, bad: BadData):
        for sample in samples:
            key = sample["__key__"]
            try:
                rng = None if self.seed is None and self.perturb is None else sample_rng(self.seed or 0, key)
                window = self.perturb.window(rng) if self.perturb is not None else (0.0, 1.0)
                views = make_views(sample, self.spec, rng if self.seed is not None else None, window)
                if self.perturb is not None:
                    views = self.perturb.apply(views, rng)
                yield _with_key(views, key)
            except SampleError as exc:
                bad(exc)
                yield self._invalid()

    def _invalid(self) -> dict:
        return _with_key(empty_views(self.spec, self.config.audio_rate), "")


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (seed, sample key): the same draws for a sample on any rank, worker or run."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _chunks(items, size: int):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def loader(stream: TrainStream | EvalStream, pin_memory: bool = False) -> "Batches":
    """The stream's batches through a DataLoader with the stream's configured workers (see `Batches`)."""
    return Batches(stream, pin_memory)


class Batches:
    """A DataLoader's batches whose workers always end: `close()` (or the end of a `with` block, or interpreter
    exit) shuts them down. Workers ignore SIGINT and SIGTERM while the loader runs: Ctrl-C or a scheduler's signal
    reaches the whole process group and the main process decides (training checkpoints first); once the loader
    is being shut down, a SIGTERM from the main process ends them at once, so no exit waits on a busy worker.
    A worker's UserError (data it cannot use, named) arrives as its own one-line message."""

    _open: "weakref.WeakSet[Batches]" = weakref.WeakSet()

    def __init__(self, stream: TrainStream | EvalStream, pin_memory: bool = False):
        workers = stream.config.workers
        self.stopping = multiprocessing.get_context().Event() if workers else None
        init = functools.partial(_worker_signals, self.stopping) if workers else None
        self._loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                  persistent_workers=False, prefetch_factor=4 if workers else None,
                                  worker_init_fn=init)
        self._iterator = None
        self.expected = stream.steps_per_epoch if isinstance(stream, TrainStream) else 0  # an endless stream's cut
        self.delivered = 0
        Batches._open.add(self)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        if self._iterator is None:
            self._iterator = iter(self._loader)
        return self

    def __next__(self):
        try:
            batch = next(iter(self)._iterator)
        except UserError as exc:
            raise type(exc)(_worker_message(exc)) from None
        except StopIteration:
            self.close()
            if self.delivered < self.expected:  # a worker's batches were lost on their way to this process
                raise StreamError(f"the data loader delivered {self.delivered} of {self.expected} batches: its workers "
                                  "could not hand the others over through shared memory (/dev/shm full or too "
                                  "small; in a container raise --shm-size) - or set data.workers=0") from None
            raise
        self.delivered += 1
        return batch

    def close(self) -> None:
        if self.stopping is not None:
            self.stopping.set()
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iterator = None

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@atexit.register
def _let_workers_go() -> None:
    """At exit, before multiprocessing terminates and joins the workers of loaders never closed: let them go."""
    for batches in list(Batches._open):
        if batches.stopping is not None:
            batches.stopping.set()


def _worker_signals(stopping, worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0) if stopping.is_set() else None)
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_batch_not_handed_over)


def _batch_not_handed_over(exc: Exception, batch) -> None:
    """In a worker, instead of multiprocessing's traceback: one line saying why a batch could not be sent."""
    print(f"loader worker {os.getpid()}: a batch could not be handed over: {exc}", file=sys.stderr, flush=True)


def _worker_message(exc: Exception) -> str:
    """The original message of an exception a DataLoader worker raised (torch re-raises it with the worker's
    whole traceback as its message)."""
    text = str(exc).rstrip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(f"{type(exc).__module__}.{type(exc).__name__}: ") else last

"""`avtools build-dataset`: turn a recipe's clips into finished shards, a ledger, dataset.json and a card.

Work is resumable and partitionable: clips the ledger has settled (ok, or a final failure) are skipped,
transient failures are tried again, and `--partition I/N` keeps the clips whose id hashes to I, so N
machines build disjoint parts of one dataset into one output. Workers are processes (fetch + decode +
encode of one clip each; downloads of some overlap the CPU work of others); the parent writes shards, and
at most `2 * workers` clips are in flight, which bounds memory.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import signal
import tempfile
import time
import traceback
from pathlib import Path

from avcl.data import schema
from avtools import __version__
from avtools.fetch import FetchOptions, Fetcher
from avtools.ledger import DATASET_JSON, Ledger, Row, failure_row, summarize, write_dataset_json, write_ledger_table
from avtools.reasons import ClipError
from avtools.recipes import Clip, RecipeOptions, plan
from avtools.shards import ShardWriter, belongs_to, clear_staging, shard_seq
from avtools.store import LocalStore, open_store
from avtools.transcode import TranscodeSettings, make_sample


@dataclasses.dataclass
class BuildOptions:
    dataset: str
    out: str
    recipe: RecipeOptions = dataclasses.field(default_factory=RecipeOptions)
    fetch: FetchOptions = dataclasses.field(default_factory=FetchOptions)
    transcode: TranscodeSettings = dataclasses.field(default_factory=TranscodeSettings)
    samples_per_shard: int = 500
    workers: int = max(2, 2 * (os.cpu_count() or 1))
    partition: tuple[int, int] = (0, 1)
    limit: int | None = None
    card: bool = True


@dataclasses.dataclass
class BuildResult:
    summary: dict
    processed: int
    ok: int
    failed: int
    seconds: float
    interrupted: bool = False


def partition_of(clip_id: str, parts: int) -> int:
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) % parts


def partition_tag(partition: tuple[int, int]) -> str:
    index, parts = partition
    return f"{index:03d}-" if parts > 1 else ""


def dedupe(clips: list[Clip]) -> tuple[list[Clip], int]:
    seen: dict[str, Clip] = {}
    for clip in clips:
        seen.setdefault(clip.clip_id, clip)
    return sorted(seen.values(), key=lambda c: c.clip_id), len(clips) - len(seen)


def build(options: BuildOptions, progress=None) -> BuildResult:
    started = time.time()
    clips, duplicates = dedupe(plan(options.dataset, options.recipe))
    index, parts = options.partition
    mine = [c for c in clips if partition_of(c.clip_id, parts) == index]
    store = open_store(options.out)
    _check_same_settings(store, options)
    tag = partition_tag(options.partition)
    ledger = Ledger(store, tag)
    settled = ledger.load()
    staging = _staging_dir(store, options.out)
    clear_staging(staging, tag)
    next_seq = _remove_orphan_shards(store, settled, tag)
    todo = [c for c in mine if c.clip_id not in settled or settled[c.clip_id].retryable]
    if options.limit is not None:
        todo = todo[:options.limit]
    writer = ShardWriter(store, ledger, staging, tag, options.samples_per_shard, next_seq)
    counts = {"ok": 0, "failed": 0}
    if progress is not None:
        progress.start(len(todo), len(mine) - len(todo))
    interrupted = False
    try:
        for clip, outcome in _run(todo, options):
            _record(clip, outcome, writer, ledger, counts)
            if progress is not None:
                progress.advance(outcome[0] is not None, counts)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()
        ledger.flush()
        if progress is not None:
            progress.stop()
    rows = ledger.load()
    summary = summarize(clips, rows, _parameters(options), duplicates)
    write_ledger_table(store, list(rows.values()))
    write_dataset_json(store, summary)
    if options.card and summary["complete"]:
        from avtools.card import write_card

        write_card(store, summary)
    return BuildResult(summary, counts["ok"] + counts["failed"], counts["ok"], counts["failed"],
                       time.time() - started, interrupted)


def _record(clip: Clip, outcome, writer: ShardWriter, ledger: Ledger, counts: dict) -> None:
    sample, error, downloaded, seconds = outcome
    if sample is not None:
        writer.add(sample, Row(clip.clip_id, clip.split, clip.label, "ok", bytes_downloaded=downloaded, seconds=seconds))
        counts["ok"] += 1
    else:
        ledger.add(failure_row(clip, error, downloaded, seconds))
        counts["failed"] += 1


def _run(todo: list[Clip], options: BuildOptions):
    """Yield (clip, (sample | None, error | None, bytes, seconds)) as workers finish, in-flight bounded."""
    if options.workers <= 1:
        _init_worker(options)
        for clip in todo:
            yield clip, _process(clip)
        return
    context = _worker_context()
    with cf.ProcessPoolExecutor(options.workers, mp_context=context, initializer=_init_worker,
                                initargs=(options,)) as pool:
        pending: dict[cf.Future, Clip] = {}
        queue = iter(todo)
        try:
            while True:
                while len(pending) < 2 * options.workers:
                    clip = next(queue, None)
                    if clip is None:
                        break
                    pending[pool.submit(_process, clip)] = clip
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    clip = pending.pop(future)
                    yield clip, _outcome(future)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _worker_context():
    """Workers start from a fork server, which imported this module once, where the platform has one. Never
    plain fork: a thread of this process (rich's refresh, a caller's server) can hold a lock, stdout's among
    them, at the moment of the fork, and the child then waits for it forever."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _outcome(future: cf.Future):
    try:
        return future.result()
    except Exception as exc:  # a worker died (out of memory, a crash in a codec): record it, carry on
        return None, ClipError("internal", f"worker failed: {exc!r}"), 0, 0.0


_FETCHER: Fetcher | None = None
_SETTINGS: TranscodeSettings | None = None


def _init_worker(options: BuildOptions) -> None:
    global _FETCHER, _SETTINGS
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    _FETCHER, _SETTINGS = Fetcher(options.fetch), options.transcode


def _process(clip: Clip):
    """Fetch and transcode one clip in a worker; never raises."""
    started = time.time()
    fetched = None
    try:
        fetched = _FETCHER.fetch(clip)
        sample = make_sample(clip, fetched, _SETTINGS)
        return sample, None, fetched.bytes_downloaded, time.time() - started
    except ClipError as error:
        return None, error, fetched.bytes_downloaded if fetched else 0, time.time() - started
    except Exception as exc:
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return None, ClipError("internal", message), 0, time.time() - started
    finally:
        if fetched is not None:
            fetched.release()


def _staging_dir(store, out: str) -> Path:
    if isinstance(store, LocalStore):
        return Path(store.root) / ".staging"
    digest = hashlib.sha1(out.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"avtools-staging-{digest}"


def _remove_orphan_shards(store, settled: dict[str, Row], tag: str) -> dict[str, int]:
    """Delete this partition's shards that no ledger part commits (a run killed between the two writes);
    return the next free shard number of each split."""
    committed = {row.shard for row in settled.values() if row.shard}
    for name in store.list():
        if "/" not in name and name.endswith(".tar") and belongs_to(name, tag) and name not in committed:
            store.delete(name)
    next_seq: dict[str, int] = {}
    for name in committed:
        if belongs_to(name, tag):
            split = name.split("-", 1)[0]
            next_seq[split] = max(next_seq.get(split, 0), (shard_seq(name) or 0) + 1)
    return next_seq


class BuildError(ValueError):
    """A build that cannot go on in its --out; the message says why and what to do."""


def _check_same_settings(store, options: BuildOptions) -> None:
    """A rerun adds to the shards already in --out only if it writes them the same way: mixed shard formats,
    frame rates or sizes would pass unnoticed into training."""
    if not store.exists(DATASET_JSON):
        return
    before = json.loads(store.get_bytes(DATASET_JSON))
    now = _parameters(options)
    changed = [f"format {before.get('format')} -> {now['format']}"] if before.get("format") != now["format"] else []
    changed += [f"{key} {before['preprocessing'].get(key)} -> {value}" for key, value in now["preprocessing"].items()
                if before.get("preprocessing", {}).get(key) != value]
    if changed:
        raise BuildError(f"{options.out} holds a build made differently ({'; '.join(changed)}): rerun with its "
                         f"settings, or build into a new --out")


def _parameters(options: BuildOptions) -> dict:
    import av
    import yt_dlp

    return {
        "name": options.dataset,
        "format": schema.FORMAT,
        "preprocessing": dataclasses.asdict(options.transcode) | {"pad": options.fetch.pad},
        "samples_per_shard": options.samples_per_shard,
        "partitions": options.partition[1],
        "tools": {"avtools": __version__, "yt-dlp": yt_dlp.version.__version__, "pyav": av.__version__,
                  "ffmpeg": av.library_versions.get("libavformat"), "python": platform.python_version()},
    }

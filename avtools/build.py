"""`avtools build-dataset`: turn a recipe's clips into finished shards, a ledger, dataset.json and a card.

Work is resumable and partitionable: clips the ledger has settled (ok, or a final failure) are skipped,
transient failures are tried again, and `--partition I/N` keeps the clips whose id hashes to I, so N
machines build disjoint parts of one dataset into one output. Workers are processes (fetch + decode +
encode of one clip each; downloads of some overlap the CPU work of others); the parent writes shards, and
at most `2 * workers` clips are in flight, which bounds memory.

What keeps finished work safe: the build's settings are recorded before its first shard and a rerun made
differently is refused; shard names are parsed against the known splits; a clip gets `clip_timeout` seconds of
wall clock before it is recorded as a `network` failure (its downloads also time out on every read); Ctrl-C and
SIGTERM stop the pool without waiting for a hung worker, finishing the shards already open; workers exit when
the build's process dies; temporary files a killed run left are swept at start.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path

from avcl.data import schema
from avcl.data.schema import DATASET_JSON, DatasetInfo
from avcl.errors import UserError
from avcl.locks import exclusive
from avcl.machine import usable_cores
from avcl.storage import LocalStore, open_store, remove_orphans
from avcl.urls import redact
from avtools import __version__
from avtools.fetch import FetchOptions, Fetcher
from avtools.ledger import (Ledger, LedgerRow, annotation_rows, failure_row, summarize, write_dataset_json,
                            write_ledger_table)
from avtools.reasons import ClipError
from avtools.recipes import Clip, RecipeError, RecipeOptions, class_list_stamp, plan
from avtools.shards import ShardWriter, belongs_to, clear_staging, shard_seq
from avtools.stages import Stages
from avtools.transcode import TranscodeSettings, make_sample

SETTINGS = "ledger/settings.json"  # the build's settings, written before its first shard
RECORDED = ("name", "class_list", "format", "preprocessing", "split_rule")  # what must not change between runs into one --out
STALE_TEMPORARY = 600.0  # seconds: a temporary file this old belongs to no running writer


@dataclasses.dataclass
class BuildOptions:
    dataset: str
    out: str
    recipe: RecipeOptions = dataclasses.field(default_factory=RecipeOptions)
    fetch: FetchOptions = dataclasses.field(default_factory=FetchOptions)
    transcode: TranscodeSettings = dataclasses.field(default_factory=TranscodeSettings)
    samples_per_shard: int = 500
    workers: int = dataclasses.field(default_factory=lambda: max(2, 2 * usable_cores()))
    partition: tuple[int, int] = (0, 1)
    limit: int | None = None
    card: bool = True
    clip_timeout: float = 300.0  # seconds of wall clock per clip (fetch + decode + encode)


@dataclasses.dataclass
class BuildResult:
    summary: DatasetInfo
    processed: int
    ok: int
    failed: int
    seconds: float
    interrupted: bool = False
    stages: Stages = dataclasses.field(default_factory=Stages)  # where the time went (avtools/stages.py)
    warnings: list[str] = dataclasses.field(default_factory=list)  # empty splits, classes missing from a split


def partition_of(clip_id: str, parts: int) -> int:
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) % parts


def partition_tag(partition: tuple[int, int]) -> str:
    index, parts = partition
    return f"{index:03d}-" if parts > 1 else ""


def dedupe(clips: list[Clip]) -> tuple[list[Clip], int, list[str]]:
    """One clip per id (the first row wins), the number of repeated rows, and those that disagree with the kept
    row on label or split ("id: kept label/split, dropped label/split (file:line)")."""
    seen: dict[str, Clip] = {}
    conflicts = []
    for clip in clips:
        kept = seen.setdefault(clip.clip_id, clip)
        if kept is not clip and (kept.label, kept.split) != (clip.label, clip.split):
            conflicts.append(f"{clip.clip_id}: kept {kept.label}/{kept.split} ({kept.origin}), dropped "
                             f"{clip.label}/{clip.split} ({clip.origin})")
    return sorted(seen.values(), key=lambda c: c.clip_id), len(clips) - len(seen), conflicts


def distinct_keys(clips: list[Clip]) -> None:
    """Two clips must never share a tar key (WebDataset would merge or drop them): refuse at planning."""
    owner: dict[str, str] = {}
    for clip in clips:
        key = schema.sample_key(clip.clip_id)
        if owner.setdefault(key, clip.clip_id) != clip.clip_id:
            raise RecipeError(f"clip ids {owner[key]!r} and {clip.clip_id!r} map to the same sample key {key!r}")


def build(options: BuildOptions, progress=None) -> BuildResult:
    started = time.time()
    planned = plan(options.dataset, options.recipe)
    clips, duplicates, conflicts = dedupe(planned.clips)
    distinct_keys(clips)
    index, parts = options.partition
    mine = [c for c in clips if partition_of(c.clip_id, parts) == index]
    store = open_store(options.out)
    tag = partition_tag(options.partition)
    with exclusive(store, f"ledger/{tag}build.lock", f"partition {index}/{parts} of {redact(options.out)}"):
        store.sweep(STALE_TEMPORARY)
        _record_settings(store, options, planned.split_rule)
        ledger = Ledger(store, tag)
        ledger.write_annotations(annotation_rows(planned.rejected))
        settled = ledger.load()
        _refuse_split_changes(clips, settled, options.out)
        splits = {c.split for c in clips} | {row.split for row in settled.values()}
        staging = _staging_dir(store, options.out)
        clear_staging(staging, tag, splits)
        next_seq = _remove_orphan_shards(store, settled, tag, splits)
        todo = [c for c in mine if c.clip_id not in settled or settled[c.clip_id].retryable]
        if options.limit is not None:
            todo = todo[:options.limit]
        writer = ShardWriter(store, ledger, staging, tag, options.samples_per_shard, next_seq,
                             on_shard=progress.shard if progress is not None else None)
        counts = {"ok": 0, "failed": 0}
        if progress is not None:
            progress.start(len(todo), len(mine) - len(todo))
        interrupted, stages, loop_started = False, Stages(), time.perf_counter()
        workroot = _download_folder()
        options = dataclasses.replace(options, fetch=dataclasses.replace(options.fetch, workroot=workroot))
        try:
            with _sigterm_interrupts(), contextlib.closing(_run(todo, options)) as outcomes:
                for clip, outcome in outcomes:  # an error here closes the generator, which stops the pool at once
                    with stages.timing("write"):
                        _record(clip, outcome, writer, ledger, counts, stages)
                    if progress is not None:
                        progress.advance(outcome[0] is not None, counts)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stages["wait"] += time.perf_counter() - loop_started - stages["write"]
            with stages.timing("write"):
                writer.close()
                ledger.flush()
                ledger.compact(lambda name: belongs_to(name, tag, splits))
            shutil.rmtree(workroot, ignore_errors=True)
            if progress is not None:
                progress.stop()
        rows = ledger.refresh()  # with what other partitions committed meanwhile
        annotations = {"rows_rejected": len(planned.rejected), "rows_of_other_classes": planned.other_classes,
                       "duplicate_rows": duplicates, "conflicting_duplicates": len(conflicts),
                       "rejected": [f"{where}: {why}" for where, why in planned.rejected[:20]], "conflicts": conflicts[:20]}
        summary = summarize(clips, rows, _parameters(options, planned.split_rule), annotations)
        write_ledger_table(store, list(rows.values()))
        write_dataset_json(store, summary)
        if options.card and summary.complete and (counts["ok"] + counts["failed"] or not store.exists("card.png")):
            from avtools.card import write_card

            write_card(store, summary)
        return BuildResult(summary, counts["ok"] + counts["failed"], counts["ok"], counts["failed"],
                           time.time() - started, interrupted, stages, split_warnings(clips))


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler's stop, `kill`) ends the build like Ctrl-C: open shards finished, ledger flushed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record(clip: Clip, outcome, writer: ShardWriter, ledger: Ledger, counts: dict, stages: Stages) -> None:
    sample, error, downloaded, seconds = outcome
    if sample is not None:
        stages.update(sample.stages)
        writer.add(sample, LedgerRow(clip.clip_id, clip.split, clip.label, "ok", bytes_downloaded=downloaded, seconds=seconds))
        counts["ok"] += 1
    else:
        ledger.add(failure_row(clip, error, downloaded, seconds))
        counts["failed"] += 1


def _run(todo: list[Clip], options: BuildOptions):
    """Yield (clip, (sample | None, error | None, bytes, seconds)) as workers finish, in-flight bounded."""
    if options.workers <= 1:
        _init_worker(options, os.getpid())
        for clip in todo:
            yield clip, _process(clip)
        return
    pool = cf.ProcessPoolExecutor(options.workers, mp_context=_worker_context(), initializer=_init_worker,
                                  initargs=(options, os.getpid()))
    pending: dict[cf.Future, Clip] = {}
    queue = iter(todo)
    try:
        _check_worker_imports(pool)
        while True:
            while len(pending) < 2 * options.workers:
                clip = next(queue, None)
                if clip is None:
                    break
                pending[pool.submit(_process, clip)] = clip
            if not pending:
                break
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                clip = pending.pop(future)
                yield clip, _outcome(future)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _check_worker_imports(pool: cf.ProcessPoolExecutor) -> None:
    """The pool's first task: workers that cannot import avtools, or import another copy than this process's,
    stop the build with one line instead of failing every clip."""
    try:
        theirs = pool.submit(_avtools_folder).result(timeout=300)
    except Exception as exc:
        raise BuildError(f"build workers cannot start ({exc!r}); reinstall avtools (bash install.sh)") from None
    if theirs != _avtools_folder():
        raise BuildError(f"build workers import avtools from {theirs}, not from {_avtools_folder()} as this process "
                         "does: run from a folder without an `avtools` folder in it, or reinstall avtools")


def _avtools_folder() -> str:
    import avtools

    return str(Path(avtools.__file__).resolve().parent)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Stop at once: kill the workers with their ffmpeg children, a hung one included (`shutdown` would wait for
    it), then cancel what has not started. The executor keeps its processes in `_processes` (until shutdown).

    A worker killed while sending a result leaves half a message in the result pipe, and the executor's manager
    thread then waits for the rest forever, which hangs the interpreter's exit (it joins that thread). Closing
    this process's end of the pipe, the last writer once the workers are gone, ends that wait with EOF. The
    manager thread then closes its wake-up pipe, which the interpreter's exit hook would still write to (a
    traceback after the build's own error line): the pool is taken off that hook's list."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # each worker leads its own group (_init_worker)
    with contextlib.suppress(AttributeError, OSError):
        pool._result_queue._writer.close()
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        cf.process._threads_wakeups.pop(manager, None)


def _worker_context():
    """Workers start from a fork server, which imported this module once, where the platform has one. Never
    plain fork: a thread of this process (rich's refresh, a caller's server) can hold a lock, stdout's among
    them, at the moment of the fork, and the child then waits for it forever."""
    # workers import avtools from the installation, never from a folder named avtools in the current directory
    # (a clone's parent): Python >= 3.11 leaves the working directory off the fork server's import path
    os.environ["PYTHONSAFEPATH"] = "1"
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
_CLIP_TIMEOUT = 0.0
_DECODER_THREADS = 0


class ClipTimeout(BaseException):
    """Raised in a worker when a clip has used its wall-clock limit. A BaseException, so that no library catches
    it on the way up; yt-dlp kills its ffmpeg child on the way (`Popen.communicate_or_kill`)."""


def _init_worker(options: BuildOptions, parent: int) -> None:
    global _FETCHER, _SETTINGS, _CLIP_TIMEOUT, _DECODER_THREADS
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
        os.setpgrp()  # a group of its own: the worker and its ffmpeg children end together (`_stop`, `_exit_with`)
        threading.Thread(target=_exit_with, args=(parent,), name="parent watch", daemon=True).start()
    _FETCHER, _SETTINGS, _CLIP_TIMEOUT = Fetcher(options.fetch), options.transcode, options.clip_timeout
    _DECODER_THREADS = decoder_threads(options.workers)


def decoder_threads(workers: int) -> int:
    """Decoder threads per worker: the usable cores shared among the workers, at least one. FFmpeg's default
    (a thread per core in every decoder) oversubscribes the machine: 2 workers on 2 cores ran 10-20% slower."""
    return max(1, usable_cores() // max(workers, 1))


def _exit_with(parent: int, every: float = 1.0) -> None:
    """End this worker (and the ffmpeg it may be waiting on) once the build's process is gone: a killed build
    must not leave workers holding its terminal or a scheduler's pipes."""
    while True:
        time.sleep(every)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os.killpg(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise ClipTimeout in this (main) thread after `seconds` of wall clock (no limit for 0)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ClipTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _process(clip: Clip):
    """Fetch and transcode one clip in a worker within its time limit; never raises."""
    started = time.time()
    fetched, stages = None, Stages()
    try:
        with _time_limit(_CLIP_TIMEOUT):
            with stages.timing("fetch"):
                fetched = _FETCHER.fetch(clip)
            sample = make_sample(clip, fetched, _SETTINGS, decoder_threads=_DECODER_THREADS, stages=stages)
        return sample, None, fetched.bytes_downloaded, time.time() - started
    except ClipTimeout:
        error = ClipError("network", f"no result within the clip time limit of {_CLIP_TIMEOUT:.0f} s (--clip-timeout)")
    except ClipError as exc:
        error = exc
    except Exception as exc:
        error = ClipError("internal", "".join(traceback.format_exception_only(type(exc), exc)).strip())
    finally:
        if fetched is not None:
            fetched.release()
    if fetched is not None:  # name the clip's source, not the temporary file it was read from
        error = ClipError(error.reason, error.message.replace(fetched.path, redact(fetched.source)))
    return None, error, fetched.bytes_downloaded if fetched else 0, time.time() - started


def _download_folder() -> str:
    """A temporary folder for this build's downloads, removed at its end with whatever killed workers left in
    it; the folders of builds whose process is gone (killed with SIGKILL) are removed first."""
    remove_orphans(Path(tempfile.gettempdir()).glob("avtools-build-*-*"), lambda folder: folder.name.split("-")[2])
    return tempfile.mkdtemp(prefix=f"avtools-build-{os.getpid()}-")


def _staging_dir(store, out: str) -> Path:
    if isinstance(store, LocalStore):
        return Path(store.root) / ".staging"
    digest = hashlib.sha1(out.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"avtools-staging-{digest}"


def _remove_orphan_shards(store, settled: dict[str, LedgerRow], tag: str, splits: set[str]) -> dict[str, int]:
    """Delete this partition's shards that no ledger part commits (a run killed between the two writes);
    return the next free shard number of each split (names parsed against the known splits)."""
    committed = {row.shard: row.split for row in settled.values() if row.shard}
    for name in store.list():
        if "/" not in name and name not in committed and belongs_to(name, tag, splits):
            store.delete(name)
    next_seq: dict[str, int] = {}
    for name, split in committed.items():
        seq = shard_seq(name, split, tag)
        if seq is not None:
            next_seq[split] = max(next_seq.get(split, 0), seq + 1)
    return next_seq


class BuildError(UserError):
    """A build that cannot go on in its --out; the message says why and what to do."""


def _record_settings(store, options: BuildOptions, split_rule: dict) -> None:
    """Before the first shard: record what this build writes, or refuse when --out holds shards of another
    dataset or class list (label indices would disagree), written another way (mixed shard formats, frame
    rates or sizes would pass unnoticed into training) or split another way (a clip built as train could then
    be listed as test). An output of an older avtools has only its dataset.json to compare with."""
    now = {key: value for key, value in _parameters(options, split_rule).items() if key in RECORDED}
    recorded = SETTINGS if store.exists(SETTINGS) else DATASET_JSON if store.exists(DATASET_JSON) else None
    before = {}
    if recorded == SETTINGS:
        before = _recorded_settings(store, options.out)
    elif recorded == DATASET_JSON:
        before = {key: value for key, value in dataclasses.asdict(DatasetInfo.from_json(store.get_bytes(recorded))).items()
                  if key in RECORDED}
    if before:
        changed = [f"{key} {before[key]} -> {now[key]}" for key in ("name", "format")
                   if key in before and before[key] != now[key]]
        if before.get("class_list") and before["class_list"] != now["class_list"]:
            changed.append(f"class list {_class_list_name(before['class_list'])} -> "
                           f"{_class_list_name(now['class_list'])}")
        changed += [f"{key} {before.get('preprocessing', {}).get(key)} -> {value}"
                    for key, value in now["preprocessing"].items() if before.get("preprocessing", {}).get(key) != value]
        if "split_rule" in before:
            changed += [f"{key} {before['split_rule'].get(key)} -> {now['split_rule'].get(key)}"
                        for key in sorted(before["split_rule"].keys() | now["split_rule"].keys())
                        if before["split_rule"].get(key) != now["split_rule"].get(key)]
        if changed:
            raise BuildError(f"{options.out} holds a build made differently ({'; '.join(changed)}): rerun with its "
                             f"settings, or build into a new --out")
    if recorded != SETTINGS or before.keys() != now.keys():
        store.put_bytes(SETTINGS, json.dumps(now, indent=1).encode())


def _recorded_settings(store, out: str) -> dict:
    try:
        before = json.loads(store.get_bytes(SETTINGS))
    except ValueError as exc:
        raise BuildError(f"{redact(out)}/{SETTINGS}: not valid JSON ({exc}); restore it, or build into a new --out") \
            from None
    if not isinstance(before, dict):
        raise BuildError(f"{redact(out)}/{SETTINGS}: not a settings record; restore it, or build into a new --out")
    return before


def _refuse_split_changes(clips: list[Clip], settled: dict, out: str) -> None:
    """A clip already built keeps its split: one whose split the plan now changes (other annotation lists, files
    added across a per-class quota) would list a shard of one split under another."""
    moved = [(c, settled[c.clip_id].split) for c in clips if c.clip_id in settled and settled[c.clip_id].split != c.split]
    if moved:
        clip, was = moved[0]
        raise BuildError(f"{out}: {len(moved)} clip(s) already built would change split (e.g. {clip.clip_id}: {was} "
                         f"-> {clip.split}); a clip never changes split within one output: rerun with the inputs "
                         f"and options of the first build, or build into a new --out")


def split_warnings(clips: list[Clip]) -> list[str]:
    """A dataset with a single split, and splits that hold no clip of some class the dataset has (that class
    cannot then be learnt or tested)."""
    classes = sorted({c.label for c in clips})
    by_split: dict[str, set] = {}
    for clip in clips:
        by_split.setdefault(clip.split, set()).add(clip.label)
    lines = []
    if len(by_split) == 1:
        lines.append(f"every clip is in split {next(iter(by_split))}: evaluation needs a second one to test on "
                     "(folder: --val-fraction above 0, or train/ and val/ folders)")
    for split, present in sorted(by_split.items()):
        missing = [c for c in classes if c not in present]
        if missing and split != "unused":
            lines.append(f"split {split} has no clip of {len(missing)} of {len(classes)} classes "
                         f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    return lines


def _class_list_name(stamp: dict) -> str:
    return " ".join(filter(None, (stamp.get("file"), stamp.get("version"), stamp.get("sha256", "")[:12])))


def _parameters(options: BuildOptions, split_rule: dict) -> dict:
    import av
    import yt_dlp

    return {
        "name": options.dataset,
        "class_list": class_list_stamp(options.dataset),
        "format": schema.FORMAT,
        "preprocessing": dataclasses.asdict(options.transcode) | {"pad": options.fetch.pad},
        "samples_per_shard": options.samples_per_shard,
        "partitions": options.partition[1],
        "split_rule": split_rule,
        "tools": {"avtools": __version__, "yt-dlp": yt_dlp.version.__version__, "pyav": av.__version__,
                  "ffmpeg": av.library_versions.get("libavformat"), "python": platform.python_version()},
    }

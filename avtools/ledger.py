"""The ledger: one row per clip saying what became of it; the single source of truth for resume.

Rows are committed in parts under `ledger/` in the output: a shard's part (its samples' ok rows plus the
failures seen meanwhile) is written right after the shard itself, so a shard is finished once a part names it;
failures are also flushed on their own every `FLUSH_EVERY` rows. `ledger.parquet` and `dataset.json` are
derived from all parts (of every partition) at the end of each run. Parts are compacted at the end of a run
once a partition has more than `COMPACT_ABOVE`: its settled rows go into one part, written before the parts it
replaces are deleted (a run killed in between leaves duplicates, which reading resolves), so their number stays
bounded however many times a build is resumed.
"""
from __future__ import annotations

import dataclasses
import io
import re
import time
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from avcl.data.schema import DATASET_JSON, ClassCount, DatasetInfo, ShardInfo, SplitInfo
from avtools.reasons import REASONS

FLUSH_EVERY = 200
COMPACT_ABOVE = 64  # ledger parts of one partition
STATUSES = ("ok", "failed", "skipped")


@dataclasses.dataclass(slots=True)  # a Kinetics-700 ledger holds 650,000 of them
class LedgerRow:
    clip_id: str
    split: str
    label: str | None
    status: str
    reason: str = ""
    message: str = ""
    shard: str = ""
    bytes_downloaded: int = 0
    seconds: float = 0.0
    retryable: bool = False
    finished_at: float = dataclasses.field(default_factory=time.time)


SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("split", pa.string()), ("label", pa.string()), ("status", pa.string()),
    ("reason", pa.string()), ("message", pa.string()), ("shard", pa.string()),
    ("bytes_downloaded", pa.int64()), ("seconds", pa.float64()), ("retryable", pa.bool_()),
    ("finished_at", pa.float64()),
])


def rows_to_parquet(rows: list[LedgerRow]) -> bytes:
    """Rows as a zstd parquet file, built column by column (`asdict` per row took 30 s for 650,000)."""
    table = pa.table({name: [getattr(row, name) for row in rows] for name in SCHEMA.names}, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def rows_from_parquet(data: bytes) -> list[LedgerRow]:
    columns = pq.read_table(io.BytesIO(data), schema=SCHEMA).to_pydict()
    return [LedgerRow(*values) for values in zip(*(columns[name] for name in SCHEMA.names))]


def annotation_rows(rejected: list[tuple[str, str]]) -> list[LedgerRow]:
    """Rejected annotation rows (file:line, why) as skipped ledger rows, one per row, their id the file:line."""
    return [LedgerRow(where, "", None, "skipped", "bad_annotation", why) for where, why in rejected]


def failure_row(clip, error, bytes_downloaded: int = 0, seconds: float = 0.0) -> LedgerRow:
    return LedgerRow(clip.clip_id, clip.split, clip.label, "failed", error.reason, error.message, "",
               bytes_downloaded, seconds, REASONS[error.reason].retryable)


def settle(settled: dict[str, LedgerRow], row: LedgerRow) -> None:
    """Keep the row that says what became of its clip: ok beats failed; otherwise the newest row wins."""
    old = settled.get(row.clip_id)
    if old is None or (old.status != "ok" and (row.status == "ok" or row.finished_at >= old.finished_at)):
        settled[row.clip_id] = row


class Ledger:
    """Reads all committed parts; commits new ones for the partition `tag` of this run and keeps the settled
    rows up to date with them (`settled`, filled by `load`)."""

    def __init__(self, store, tag: str):
        self.store, self.tag = store, tag
        self.pending: list[LedgerRow] = []
        self.settled: dict[str, LedgerRow] = {}
        self.read: set[str] = set()  # the parts `settled` holds
        self.flushes = 0
        self.run = time.strftime("%Y%m%d-%H%M%S")

    def load(self) -> dict[str, LedgerRow]:
        """The settled row of every clip, from the parts of every partition."""
        self.settled, self.read = {}, set()
        return self.refresh()

    def refresh(self) -> dict[str, LedgerRow]:
        """`settled` with the parts written since it was read (by other partitions' builds) added."""
        for name in self.parts():
            if name not in self.read:
                for row in rows_from_parquet(self.store.get_bytes(name)):
                    settle(self.settled, row)
                self.read.add(name)
        return self.settled

    def parts(self) -> list[str]:
        return [name for name in self.store.list("ledger/") if name.endswith(".parquet")]

    def add(self, row: LedgerRow) -> None:
        self.pending.append(row)
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def commit_shard(self, shard: str, ok_rows: list[LedgerRow]) -> None:
        """Record a written shard's samples (and pending failures) in one part: the shard is now finished."""
        stem = shard.rsplit(".", 1)[0]
        self._commit(f"ledger/{stem}.parquet", ok_rows + self.pending)
        self.pending = []

    def _commit(self, name: str, rows: list[LedgerRow]) -> None:
        self.store.put_bytes(name, rows_to_parquet(rows))
        self.read.add(name)
        for row in rows:
            settle(self.settled, row)

    def write_annotations(self, rows: list[LedgerRow]) -> None:
        """The annotation rows this run rejected, in a part of their own (rewritten by every run)."""
        name = f"ledger/annotations-{self.tag}rejected.parquet"
        if rows:
            self.store.put_if_changed(name, rows_to_parquet(rows))
        elif self.store.exists(name):
            self.store.delete(name)

    def flush(self) -> None:
        if self.pending:
            self.flushes += 1
            self._commit(f"ledger/failures-{self.tag}{self.run}-{self.flushes:04d}.parquet", self.pending)
            self.pending = []

    def compact(self, is_shard: Callable[[str], bool]) -> int:
        """Merge this partition's parts into one when it has more than COMPACT_ABOVE; returns how many parts
        were merged (0 when none). `is_shard(name)` tells this partition's shard names. Call after the last
        commit of a run."""
        mine = [name for name in self.parts() if self._owns(name[len("ledger/"):-len(".parquet")], is_shard)]
        if len(mine) <= COMPACT_ABOVE:
            return 0
        rows: dict[str, LedgerRow] = {}
        for name in mine:
            for row in rows_from_parquet(self.store.get_bytes(name)):
                settle(rows, row)
        merged = f"ledger/compacted-{self.tag}{self.run}.parquet"
        self.store.put_bytes(merged, rows_to_parquet(sorted(rows.values(), key=lambda r: r.clip_id)))
        self.read.add(merged)
        for name in mine:
            if name != merged:
                self.store.delete(name)
        return len(mine)

    def _owns(self, stem: str, is_shard: Callable[[str], bool]) -> bool:
        """Whether a part (its name without folder and suffix) belongs to this partition: a shard's part, a
        failures part or a compacted part; never the annotation part, which every run rewrites."""
        run = r"\d{8}-\d{6}"
        return (is_shard(f"{stem}.tar")
                or re.fullmatch(re.escape(f"failures-{self.tag}") + run + r"-\d{4}", stem) is not None
                or re.fullmatch(re.escape(f"compacted-{self.tag}") + run, stem) is not None)


def write_ledger_table(store, rows: list[LedgerRow]) -> None:
    store.put_if_changed("ledger.parquet", rows_to_parquet(sorted(rows, key=lambda r: r.clip_id)))


def summarize(plan, rows: dict[str, LedgerRow], params: dict, annotations: dict) -> DatasetInfo:
    """dataset.json: parameters, tool versions, available/total per split and class, shards with counts, and
    what became of the annotation rows (rejected, of other classes, repeated)."""
    splits: dict[str, SplitInfo] = {}
    shard_samples: dict[str, dict[str, int]] = {}
    for clip in plan:
        split = splits.setdefault(clip.split, SplitInfo())
        per_class = split.classes.setdefault(clip.label or "", ClassCount())
        split.total += 1
        per_class.total += 1
        row = rows.get(clip.clip_id)
        if row is not None and row.status == "ok":
            split.available += 1
            per_class.available += 1
            counts = shard_samples.setdefault(clip.split, {})
            counts[row.shard] = counts.get(row.shard, 0) + 1
        elif row is not None:
            split.failed += 1
    for name, split in splits.items():
        split.shards = [ShardInfo(shard, n) for shard, n in sorted(shard_samples.get(name, {}).items())]
    reasons: dict[str, int] = {}
    for row in rows.values():
        if row.status == "failed":
            reasons[row.reason] = reasons.get(row.reason, 0) + 1
    settled = sum(1 for c in plan if c.clip_id in rows and not rows[c.clip_id].retryable)
    return DatasetInfo(
        **params, complete=settled == len(plan),
        counts={"total": len(plan), "available": sum(s.available for s in splits.values()), "settled": settled,
                "duplicates_in_annotations": annotations["duplicate_rows"]},
        annotations=annotations, failures=dict(sorted(reasons.items())), splits=dict(sorted(splits.items())),
        folds=fold_coverage(plan, rows))


def fold_coverage(plan, rows: dict[str, LedgerRow]) -> dict[str, dict[str, dict[str, int]]]:
    """Per official split (UCF101/HMDB51 `folds`) and role: the videos its lists name (expected) and how many
    are in the shards (available). Evaluation reads its epoch sizes and coverage from these."""
    folds: dict[str, dict[str, dict[str, int]]] = {}
    for clip in plan:
        row = rows.get(clip.clip_id)
        for fold, role in clip.extra.get("folds", {}).items():
            counts = folds.setdefault(str(fold), {}).setdefault(role, {"expected": 0, "available": 0})
            counts["expected"] += 1
            counts["available"] += int(row is not None and row.status == "ok")
    return {fold: dict(sorted(roles.items())) for fold, roles in sorted(folds.items())}


def write_dataset_json(store, info: DatasetInfo) -> None:
    store.put_if_changed(DATASET_JSON, info.to_json())

"""Write samples into WebDataset tar shards, one open shard per split.

A shard is written under a temporary name in a staging folder, then moved into the store under its final
name, and only then committed in the ledger; so an unfinished shard never looks finished. Names:
`{split}-{seq:06d}.tar`, or `{split}-{part:03d}-{seq:06d}.tar` when the build is partitioned. Split names
may hold '-' (`val-hard`), so a name is parsed against the splits the build knows, never by counting dashes.
Tars are PAX: a sample key longer than ustar's 100-character names is stored whole.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path
from typing import Callable

from avcl.storage import local_errors
from avtools.ledger import Ledger, LedgerRow


class ShardWriter:
    def __init__(self, store, ledger: Ledger, staging: Path, tag: str, samples_per_shard: int,
                 next_seq: dict[str, int], on_shard: Callable[[str, int], None] | None = None):
        self.store, self.ledger, self.staging, self.tag = store, ledger, Path(staging), tag
        self.on_shard = on_shard  # told (name, samples) of every finished shard
        self.samples_per_shard = samples_per_shard
        self.next_seq = dict(next_seq)  # split -> next shard number
        self.open: dict[str, _OpenShard] = {}
        if not self.staging.is_dir():
            with local_errors(self.staging):
                self.staging.mkdir(parents=True)

    def add(self, sample, row: LedgerRow) -> None:
        shard = self.open.get(sample.split)
        if shard is None:
            seq = self.next_seq.get(sample.split, 0)
            self.next_seq[sample.split] = seq + 1
            name = shard_name(sample.split, self.tag, seq)
            with local_errors(self.staging):
                shard = self.open[sample.split] = _OpenShard(name, self.staging / f"{name}.tmp")
        row.shard = shard.name
        with local_errors(shard.tmp):
            shard.write(sample, row)
        if len(shard.rows) >= self.samples_per_shard:
            self._finish(sample.split)

    def close(self) -> None:
        """Finish every open shard (a last, smaller shard is still a finished shard)."""
        for split in list(self.open):
            self._finish(split)

    def _finish(self, split: str) -> None:
        shard = self.open.pop(split)
        with local_errors(shard.tmp):
            shard.tar.close()
        self.store.put_file(str(shard.tmp), shard.name)
        self.ledger.commit_shard(shard.name, shard.rows)
        if self.on_shard is not None:
            self.on_shard(shard.name, len(shard.rows))


class _OpenShard:
    def __init__(self, name: str, tmp: Path):
        self.name, self.tmp = name, tmp
        self.tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)
        self.rows: list[LedgerRow] = []

    def write(self, sample, row: LedgerRow) -> None:
        for member, data in sample.members:
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o444, 0  # fixed mtime: identical builds, identical tars
            info.uname = info.gname = "avtools"
            self.tar.addfile(info, io.BytesIO(data))
        self.rows.append(row)


def shard_name(split: str, tag: str, seq: int) -> str:
    return f"{split}-{tag}{seq:06d}.tar"


def shard_seq(name: str, split: str, tag: str) -> int | None:
    """The sequence number of `name` if it is a shard (or a staging `.tmp` of one) of `split` in the partition
    with this tag ('' = unpartitioned, '007-' = part 7), else None."""
    match = re.fullmatch(re.escape(f"{split}-{tag}") + r"(\d{6})\.tar(\.tmp)?", name)
    return int(match.group(1)) if match else None


def belongs_to(name: str, tag: str, splits) -> bool:
    """Whether `name` is a shard (or staging file) of one of `splits` in the partition with this tag."""
    return any(shard_seq(name, split, tag) is not None for split in splits)


def clear_staging(staging: Path, tag: str, splits) -> None:
    """Remove the temporary shards of an interrupted run of this partition."""
    if staging.is_dir():
        for tmp in staging.glob("*.tmp"):
            if belongs_to(tmp.name, tag, splits):
                os.unlink(tmp)

"""Where a build's time goes: seconds per stage, summed over clips (workers) and over the run (the parent).

Stages in a worker: fetch, decode (demux and decode), scale (scaling and colour conversion), resample (audio),
jpeg (frame encoding: JPEG or H.264), wav; in the parent: write (shard and ledger writing) and wait (for the
next finished clip). `avtools build-dataset` prints them per clip at the end; `bench/build_throughput.py`
compares them with the bare ffmpeg floor.
"""
from __future__ import annotations

import collections
import contextlib
import time

WORKER = ("fetch", "decode", "scale", "resample", "jpeg", "wav")
PARENT = ("write", "wait")


class Stages(collections.Counter):
    """Seconds per stage name."""

    @contextlib.contextmanager
    def timing(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[stage] += time.perf_counter() - start

    def describe(self, clips: int) -> str:
        """'per clip in a worker: fetch 1 ms, decode 40 ms, ...; parent: write 0.3 s, wait 7.1 s'."""
        worker = [s for s in WORKER if s in self] + sorted(set(self) - set(WORKER + PARENT))
        per_clip = ", ".join(f"{stage} {1e3 * self[stage] / max(clips, 1):.0f} ms" for stage in worker)
        parent = ", ".join(f"{stage} {self[stage]:.1f} s" for stage in PARENT if stage in self)
        return f"per clip in a worker: {per_clip or 'nothing'}; parent: {parent or 'nothing'}"

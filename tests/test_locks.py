"""One writer per folder: a local flock and an S3 conditional-put lock object (on the moto server), each held by
a real second process; a holder killed with SIGKILL frees its lock, a live one is named in the refusal."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3
import pytest

from avcl import locks
from avcl.locks import LockHeld, exclusive
from avcl.storage import LocalStore, S3Store

HOLD = """
import sys, time
from avcl.locks import exclusive
from avcl.storage import open_store
with exclusive(open_store(sys.argv[1]), "run.lock", "folder"):
    print("held", flush=True)
    time.sleep(120)
"""


def holding(url: str) -> subprocess.Popen:
    """Another process holding the lock of `url` until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def refused_then_freed_by_a_kill(store) -> None:
    holder = holding(store.url)
    try:
        with pytest.raises(LockHeld, match=rf"folder \S+ is being written by pid {holder.pid} on \S+ since .* \(-c "):
            with exclusive(store, "run.lock", f"folder {store.url}"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(store, "run.lock", "folder") as lock:  # the killed holder's lock is free at once
        assert lock is not None
    assert "run.lock" not in store.list()  # released: nothing left behind


def test_a_local_folder_has_one_writer(tmp_path):
    refused_then_freed_by_a_kill(LocalStore(tmp_path / "run"))


def test_an_s3_folder_has_one_writer(s3_bucket):
    refused_then_freed_by_a_kill(S3Store(f"s3://{s3_bucket}/run"))


def test_an_s3_lock_of_another_host_is_taken_over_only_when_stale(s3_bucket, monkeypatch):
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="run/run.lock", Body=json.dumps(
        {"host": "node-elsewhere", "pid": 4242, "command": "avtools train", "since": "2026-01-01 00:00:00 UTC"}))
    store = S3Store(f"s3://{s3_bucket}/run")
    with pytest.raises(LockHeld, match="pid 4242 on node-elsewhere since 2026-01-01 00:00:00 UTC .avtools train."):
        with exclusive(store, "run.lock", "folder"):
            pass
    monkeypatch.setattr(locks, "STALE", -1.0)  # as if its holder had been silent for longer than STALE
    with exclusive(store, "run.lock", "folder"):
        held = json.loads(store.get_bytes("run.lock"))
    assert held["host"] != "node-elsewhere" and held["command"]


def test_an_s3_lock_is_kept_fresh_by_its_heartbeat(s3_bucket, monkeypatch):
    """A holder silent for longer than STALE loses its lock; one whose heartbeat rewrites it keeps it."""
    store = S3Store(f"s3://{s3_bucket}/run")
    monkeypatch.setattr(locks, "HEARTBEAT", 0.3)
    with exclusive(store, "run.lock", "folder"):
        time.sleep(2.5)
        monkeypatch.setattr(locks, "STALE", 1.5)
        with pytest.raises(LockHeld):
            locks.S3Lock(store, "run.lock", "folder")._take_over_if_stale()
    monkeypatch.setattr(locks, "HEARTBEAT", 60.0)
    monkeypatch.setattr(locks, "STALE", 300.0)
    with exclusive(store, "run.lock", "folder"):
        time.sleep(2.5)
        monkeypatch.setattr(locks, "STALE", 1.5)
        taker = locks.S3Lock(store, "run.lock", "folder")
        taker._take_over_if_stale()
        assert taker.etag is not None

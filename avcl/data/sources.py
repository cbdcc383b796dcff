"""Where shards come from: local paths and dataset folders, brace patterns, http(s)://, s3://, pipe:. Torch-free.

A source spec is one string: a dataset folder or prefix (its shards and sample counts come from dataset.json),
a shard URL or brace pattern (`ks-train-{000000..000099}.tar`), or a `pipe:COMMAND` writing a tar to stdout.
A trailing `@WEIGHT` mixes several sources in training (`data/ks100@0.7 s3://b/vgg@0.3`).

Sample counts come from dataset.json (the dataset's own or the one beside the shards), never from counting a
stream: training needs them before the first sample to fix the steps per epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import IO

import braceexpand

DATASET_JSON = "dataset.json"
RETRIES = 4
READ_BUFFER = 1 << 20  # tar parsing asks for 512-byte headers and small members: read the source in 1 MiB chunks


@dataclasses.dataclass
class Source:
    spec: str
    urls: list[str]
    shard_samples: list[int | None]  # per shard, from dataset.json; None where unknown
    weight: float = 1.0

    @property
    def num_samples(self) -> int | None:
        return None if None in self.shard_samples else sum(self.shard_samples)


class SourceError(ValueError):
    """A source spec that names nothing readable; the message names the spec and what to do."""


@functools.lru_cache(maxsize=None)
def _s3_client_for(pid: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))


def s3_client():
    """One boto3 S3 client per process (clients are not fork-safe), from the standard AWS environment."""
    return _s3_client_for(os.getpid())


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://"):].partition("/")
    return bucket, key


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path, http(s) URL, s3://bucket/key or pipe:COMMAND.

    Opening is retried with backoff (network and object-store hiccups); a missing object raises at once.
    Network streams are read ahead by a thread (`_ReadAhead`).
    """
    if url.startswith("pipe:"):
        return _PipeStream(url[len("pipe:"):])
    if url.startswith(("http://", "https://")):
        response = _with_retries(lambda: urllib.request.urlopen(url, timeout=60), url)
        return io.BufferedReader(_ReadAhead(response, url), READ_BUFFER)
    if url.startswith("s3://"):
        bucket, key = split_s3(url)
        body = _with_retries(lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"], url)
        return io.BufferedReader(_ReadAhead(body, url), READ_BUFFER)
    return open(url[len("file://"):] if url.startswith("file://") else url, "rb", buffering=READ_BUFFER)


def _is_missing(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (403, 404, 410)
    return type(exc).__name__ in ("NoSuchKey", "NoSuchBucket") or "NoSuchKey" in str(exc)


def _with_retries(attempt, url: str):
    for k in range(RETRIES):
        try:
            return attempt()
        except Exception as exc:
            if _is_missing(exc) or k == RETRIES - 1:
                raise OSError(f"cannot open {url}: {exc}") from exc
            time.sleep(0.5 * 2 ** k)


class _ReadAhead(io.RawIOBase):
    """A network stream read by a thread up to `depth` chunks (of READ_BUFFER) ahead of its reader, so the
    transfer overlaps the decoding instead of stalling it (socket reads release the GIL). With the next shard
    opened ahead too (`avcl.data.stream`), S3 read 0.83-0.91 of local disk, against 0.74-0.79 without either
    (BENCHMARKS.md). A read error surfaces at the read that reaches it."""

    def __init__(self, raw: IO[bytes], url: str, depth: int = 8):
        self.raw, self.url = raw, url
        self.chunks: queue.Queue = queue.Queue(depth)
        self.pending = memoryview(b"")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._fill, name=f"read-ahead {url}", daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        try:
            while not self.stopped.is_set():
                chunk = self.raw.read(READ_BUFFER)
                self.chunks.put(chunk)
                if not chunk:
                    return
        except Exception as exc:  # handed to the reader
            self.chunks.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending:
            item = self.chunks.get()
            if isinstance(item, Exception) or not item:
                self.chunks.put(item)  # the end, or the error, stays for every later read
                if item:
                    raise OSError(f"cannot read {self.url}: {item}") from item
                return 0
            self.pending = memoryview(item)
        got = min(len(buffer), len(self.pending))
        buffer[:got] = self.pending[:got]
        self.pending = self.pending[got:]
        return got

    def close(self) -> None:
        if not self.closed:
            self.stopped.set()
            while self.thread.is_alive():  # take chunks until the filler, free to put again, sees the stop
                try:
                    self.chunks.get(timeout=0.05)
                except queue.Empty:
                    pass
            self.raw.close()
        super().close()


class _PipeStream:
    """stdout of a shell command; closing it waits for the command and reports a failure."""

    def __init__(self, command: str):
        self.command = command
        self.process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)
        self.stdout = self.process.stdout

    def read(self, *args):
        return self.stdout.read(*args)

    def close(self):
        self.stdout.close()
        code = self.process.wait()
        if code not in (0, -13, 141):  # SIGPIPE when the reader stops early is fine
            raise OSError(f"pipe:{self.command} exited with {code}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_json(url: str) -> dict | None:
    """A JSON document at `url`, or None when there is none."""
    try:
        with open_url(url) as f:
            return json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if isinstance(exc.__cause__, Exception) and _is_missing(exc.__cause__):
            return None
        raise


def dataset_info(url: str) -> dict | None:
    """dataset.json of a dataset folder or prefix; None for shards, pipe: commands and folders without one."""
    if url.startswith("pipe:") or url.endswith(".tar"):
        return None
    return read_json(url.rstrip("/") + "/" + DATASET_JSON)


def shard_stamps(url: str, names: list[str]) -> dict[str, list | None]:
    """What identifies each shard's content without reading it: [size, modification time] of a local file,
    [size, ETag] of an S3 object (one listing for the prefix), [length, ETag or Last-Modified] over HTTP;
    None for a shard that is not there. A rebuilt or replaced shard gets another stamp."""
    url = url.rstrip("/")
    if url.startswith("s3://"):
        bucket, prefix = split_s3(url + "/")
        listed = {}
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            listed.update({item["Key"][len(prefix):]: [item["Size"], item["ETag"]] for item in page.get("Contents", [])})
        return {name: listed.get(name) for name in names}
    if url.startswith(("http://", "https://")):
        return {name: _http_stamp(f"{url}/{name}") for name in names}
    root = url[len("file://"):] if url.startswith("file://") else url
    stamps = {}
    for name in names:
        try:
            stat = os.stat(os.path.join(root, name))
            stamps[name] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamps[name] = None
    return stamps


def _http_stamp(url: str) -> list | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as response:
            headers = response.headers
            return [headers.get("Content-Length"), headers.get("ETag") or headers.get("Last-Modified")]
    except urllib.error.HTTPError as exc:
        if _is_missing(exc):
            return None
        raise


def shard_names(info: dict) -> list[str]:
    """Every shard dataset.json lists, over all splits."""
    return [shard["name"] for s in info.get("splits", {}).values() for shard in s.get("shards", [])]


def parse_spec(spec: str) -> tuple[str, float]:
    """'url@0.3' -> ('url', 0.3); a trailing '@' part that is not a number belongs to the URL."""
    head, sep, tail = spec.rpartition("@")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def resolve(spec: str, split: str = "train") -> Source:
    """The shards and sample counts one spec names (see the module docstring)."""
    url, weight = parse_spec(spec.strip())
    if url.startswith("pipe:"):
        return Source(spec, [url], [None], weight)
    if not url.endswith(".tar"):
        info = dataset_info(url)
        if info is None:
            raise SourceError(f"{url}: neither a .tar shard pattern nor a dataset folder with {DATASET_JSON}; "
                              "pass a dataset folder built by `avtools build-dataset` or shard URLs ending in .tar")
        return _dataset_split(url.rstrip("/"), info, split, spec, weight)
    urls = list(braceexpand.braceexpand(url))
    parent = url.rsplit("/", 1)[0] if "/" in url else "."
    info = read_json(parent + "/" + DATASET_JSON)
    counts = _shard_counts(info)
    return Source(spec, urls, [counts.get(u.rsplit("/", 1)[-1]) for u in urls], weight)


def resolve_all(specs: list[str] | str, split: str = "train") -> list[Source]:
    """Several specs (a list, or one string separated by spaces) resolved; each must name at least one shard."""
    items = specs.split() if isinstance(specs, str) else [s for item in specs for s in item.split()]
    if not items:
        raise SourceError("no data source given: pass a dataset folder, shard URLs or a pipe: command")
    return [resolve(item, split) for item in items]


def _shard_counts(info: dict | None) -> dict[str, int]:
    if not info:
        return {}
    return {shard["name"]: shard["samples"] for s in info["splits"].values() for shard in s["shards"]}


def _dataset_split(url: str, info: dict, split: str, spec: str, weight: float) -> Source:
    splits = info.get("splits", {})
    if split not in splits or not splits[split]["shards"]:
        have = ", ".join(f"{name} ({len(s['shards'])} shards)" for name, s in splits.items()) or "none"
        raise SourceError(f"{url}: no shards for split '{split}' in {DATASET_JSON}; splits: {have}")
    shards = splits[split]["shards"]
    return Source(spec, [f"{url}/{s['name']}" for s in shards], [s["samples"] for s in shards], weight)

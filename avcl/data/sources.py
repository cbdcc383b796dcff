"""Where shards come from: local paths and dataset folders, brace patterns, http(s)://, s3://, pipe:. Torch-free.

A source is one string: a dataset folder or prefix (its shards and sample counts come from dataset.json),
a shard URL or brace pattern (`ks-train-{000000..000099}.tar`), or a `pipe:COMMAND` writing a tar to stdout.
A trailing `@WEIGHT` mixes several sources in training (`--data data/ks100@0.7 --data s3://b/vgg@0.3`).

Sample counts come from dataset.json (the dataset's own or the one beside the shards), never from counting a
stream: training needs them before the first sample to fix the steps per epoch.
"""
from __future__ import annotations

import dataclasses
import io
import queue
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

import braceexpand

from avcl.data import schema
from avcl.data.schema import DATASET_JSON, DatasetInfo
from avcl.errors import UserError
from avcl.storage import is_remote, location_folder, location_name, open_store, retry
from avcl.urls import redact

RETRIES = 4
READ_BUFFER = 1 << 20  # tar parsing asks for 512-byte headers and small members: read the source in 1 MiB chunks


@dataclasses.dataclass
class Source:
    given: str  # the source as the user wrote it
    urls: list[str]
    shard_samples: list[int | None]  # per shard, from dataset.json; None where unknown
    weight: float = 1.0

    @property
    def num_samples(self) -> int | None:
        return None if None in self.shard_samples else sum(self.shard_samples)


class SourceError(UserError):
    """A source that names nothing readable; the message names it and what to do."""


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path, http(s) URL, s3://bucket/key or pipe:COMMAND.

    A missing file or object raises FileNotFoundError at once; an HTTP open is retried with backoff on
    transient failures (S3 requests are retried by botocore); storage refusals are StorageErrors. Network
    streams are read ahead by a thread (`_ReadAhead`).
    """
    if url.startswith("pipe:"):
        return _PipeStream(url[len("pipe:"):])
    if url.startswith(("http://", "https://")) and urllib.parse.urlsplit(url).password is not None:
        raise SourceError(f"{redact(url)}: user:password in an http(s) data URL is not supported (it would be "
                          "printed and stored); serve the shards without it, use a signed URL, or s3:// with the "
                          "AWS_* variables")
    if url.startswith(("http://", "https://")):
        return io.BufferedReader(_ReadAhead(_open_http(url), url), READ_BUFFER)
    url = url[len("file://"):] if url.startswith("file://") else url
    store = open_store(location_folder(url), "source", create=False)
    name = location_name(url)
    if is_remote(url):
        return io.BufferedReader(_ReadAhead(store.open(name), url), READ_BUFFER)
    return store.open(name, buffering=READ_BUFFER)


def _open_http(url: str):
    try:
        return retry(lambda: urllib.request.urlopen(url, timeout=60), RETRIES, 0.5, _transient_http)
    except urllib.error.HTTPError as exc:
        if exc.code in MISSING_HTTP:
            raise FileNotFoundError(f"{redact(url)}: HTTP {exc.code}") from None
        raise OSError(f"cannot open {redact(url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OSError(f"cannot open {redact(url)}: {getattr(exc, 'reason', exc)}") from None


MISSING_HTTP = (403, 404, 410)  # 403: what S3-style servers answer for a missing key without list rights


def _transient_http(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError))


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
                    raise OSError(f"cannot read {redact(self.url)}: {item}") from item
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


def read_dataset_info(url: str) -> DatasetInfo | None:
    """The dataset.json at `url`, or None when there is none; a SourceError naming the file when it is not one."""
    try:
        with open_url(url) as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # unreachable server, refused connection, HTTP errors other than "not found"
        raise SourceError(f"{exc}; check the address and that the server is up") from None
    try:
        return DatasetInfo.from_json(text)
    except schema.MetadataError as exc:
        raise SourceError(f"{redact(url)}: {exc}; rebuild the dataset or restore the file") from None


def dataset_info(url: str) -> DatasetInfo | None:
    """dataset.json of a dataset folder or prefix; None for shards, pipe: commands and folders without one."""
    if url.startswith("pipe:") or is_shard(url):
        return None
    return read_dataset_info(url.rstrip("/") + "/" + DATASET_JSON)


def shard_stamps(url: str, names: list[str]) -> dict[str, list | None]:
    """What identifies each shard's content without reading it: [size, modification time] of a local file,
    [size, ETag] of an S3 object (one listing for the prefix), [length, ETag or Last-Modified] over HTTP;
    None for a shard that is not there. A rebuilt or replaced shard gets another stamp."""
    url = url.rstrip("/")
    if url.startswith(("http://", "https://")):
        return {name: _http_stamp(f"{url}/{name}") for name in names}
    return open_store(url, "source", create=False).stamps(names)


def _http_stamp(url: str) -> list | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as response:
            headers = response.headers
            return [headers.get("Content-Length"), headers.get("ETag") or headers.get("Last-Modified")]
    except urllib.error.HTTPError as exc:
        if exc.code in MISSING_HTTP:
            return None
        raise OSError(f"cannot read {redact(url)}: HTTP {exc.code} {exc.reason}") from None


def is_shard(url: str) -> bool:
    """Whether `url` names .tar shards (a signed URL's query, `...tar?X-Amz-Signature=...`, included)."""
    return urllib.parse.urlsplit(url).path.endswith(".tar") if "://" in url else url.endswith(".tar")


def parse_weight(source: str) -> tuple[str, float]:
    """'url@0.3' -> ('url', 0.3); a trailing '@' part that is not a number belongs to the URL."""
    head, sep, tail = source.rpartition("@")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return source, 1.0


def resolve(source: str, split: str = "train") -> Source:
    """The shards and sample counts one source names (see the module docstring)."""
    url, weight = parse_weight(source.strip())
    if url.startswith("pipe:"):
        return Source(source, [url], [None], weight)
    if not is_shard(url):
        info = dataset_info(url)
        if info is None:
            raise SourceError(f"{redact(url)}: neither a .tar shard pattern nor a dataset folder with {DATASET_JSON}; "
                              "pass a dataset folder built by `avtools build-dataset` or shard URLs ending in .tar")
        return _dataset_split(url.rstrip("/"), info, split, source, weight)
    urls = list(braceexpand.braceexpand(url))
    unsigned = url.split("?", 1)[0] if "://" in url else url  # dataset.json is read without a shard's signature
    parent = unsigned.rsplit("/", 1)[0] if "/" in unsigned else "."
    info = read_dataset_info(parent + "/" + DATASET_JSON)
    counts = info.shard_samples() if info else {}
    return Source(source, urls, [counts.get(shard_name(u)) for u in urls], weight)


def shard_name(url: str) -> str:
    """train-000003.tar of any shard URL (a signed URL's query left out)."""
    return (url.split("?", 1)[0] if "://" in url else url).rsplit("/", 1)[-1]


def resolve_all(sources: list[str] | str, split: str = "train") -> list[Source]:
    """Several sources resolved, one per item (never split on spaces: `pipe:COMMAND ARGS` is one source); each
    must name at least one shard."""
    items = [sources] if isinstance(sources, str) else [item for item in sources if item.strip()]
    if not items:
        raise SourceError("no data source given: pass a dataset folder, shard URLs or a pipe: command")
    return [resolve(item, split) for item in items]


def _dataset_split(url: str, info: DatasetInfo, split: str, source: str, weight: float) -> Source:
    if split not in info.splits or not info.splits[split].shards:
        have = ", ".join(f"{name} ({len(s.shards)} shards)" for name, s in info.splits.items()) or "none"
        raise SourceError(f"{url}: no shards for split '{split}' in {DATASET_JSON}; splits: {have}")
    shards = info.splits[split].shards
    return Source(source, [f"{url}/{s.name}" for s in shards], [s.samples for s in shards], weight)

"""Where files go and come from: a local folder or `s3://bucket/prefix` on any S3-compatible endpoint. Torch-free.

One seam for the builder (shards, ledger, dataset.json, card) and the engine (run folders, results):
`open_store(url)` picks the implementation from the URL's scheme, and refuses any other scheme. Writes are
all-or-nothing: a local file appears under its final name by rename (with the mode the umask gives, like any
file a program creates), an S3 object by a completed upload. Every name is checked to stay inside the store's
root (`contained`): names are built from annotation fields, which come from the internet.

Failures of the storage itself (disk full, read-only file system, no such bucket, no credentials, endpoint
unreachable) become one-line `StorageError`s naming the location and what to check. S3 requests are retried by
botocore alone (standard mode); `retry` is the one helper for everything else that is worth retrying. The S3
endpoint and credentials come from the standard AWS environment variables.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import hashlib
import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Protocol

from avcl.errors import UserError
from avcl.machine import running

AWS_VARIABLES = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS endpoint)"


class StorageError(UserError):
    """The storage refused: the message names the location, the cause and what to check."""


def cache_dir() -> Path:
    """avtools' cache: $AVTOOLS_CACHE, else ~/.cache/avtools."""
    return Path(os.environ.get("AVTOOLS_CACHE") or Path.home() / ".cache" / "avtools")


def retry(attempt: Callable, retries: int, wait: float, transient: Callable[[BaseException], bool]):
    """`attempt()`, retried while it raises a `transient` exception, waiting `wait` x 2^i (plus up to 10%)."""
    for i in range(retries + 1):
        try:
            return attempt()
        except Exception as exc:
            if not transient(exc) or i == retries:
                raise
            time.sleep(wait * (2 ** i) * (1 + 0.1 * random.random()))
    raise AssertionError("unreachable")


# ---- local files ---------------------------------------------------------------------------------------------

def umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """A binary file to write that appears at `path` whole (flushed to disk, renamed) or not at all, with the
    mode a plain `open(path, "wb")` would give (temporary files are created 0600)."""
    path = Path(path)
    with local_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with local_errors(path):
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


# errno -> what to do about it
_LOCAL_HINTS = {errno.ENOSPC: "free some space or choose another location",
                errno.EDQUOT: "free some space or choose another location",
                errno.EFBIG: "the file system or a ulimit caps file sizes; choose another location",
                errno.EROFS: "the file system is read-only; choose a writable location",
                errno.EACCES: "check the permissions or choose another location",
                errno.EPERM: "check the permissions or choose another location",
                errno.ENOTDIR: "a part of the path is a file, not a folder",
                errno.EISDIR: "the path is a folder; give a file name"}


FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def os_cause(exc: BaseException, errnos=tuple(_LOCAL_HINTS)) -> OSError | None:
    """The OSError with one of `errnos` that `exc` is or was raised from (torch's checkpoint writer and other
    libraries wrap a failed write in their own exception)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in errnos:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def storage_failure(exc: BaseException, path: str | os.PathLike | None = None) -> StorageError | None:
    """`exc` as the one-line StorageError when a full, read-only or size-capped file system caused it (naming
    `path`, else the file the system named, if any); None for any other failure."""
    cause = os_cause(exc, FULL_OR_READ_ONLY if path is None else tuple(_LOCAL_HINTS))
    if cause is None:
        return None
    where = f" {path or cause.filename}" if path or cause.filename else ""
    return StorageError(f"cannot write{where}: {os.strerror(cause.errno)}; {_LOCAL_HINTS[cause.errno]}")


@contextlib.contextmanager
def local_errors(path: Path):
    """Failures of the file system (full, read-only, no permission...) as StorageErrors naming `path`, also
    when a library wrapped the OSError in an exception of its own."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        error = storage_failure(exc, path)
        if error is None:
            raise
        raise error from None


def contained(name: str) -> str:
    """`name` if it is a relative path that stays below the root; StorageError otherwise."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise StorageError(f"{name!r} would be written outside the output folder: refused")
    return name


class Store(Protocol):
    """What the builder writes through and the engine reads through; names are relative to the store's root."""

    url: str

    def list(self, prefix: str = "") -> list[str]: ...
    def open(self, name: str) -> IO[bytes]: ...
    def get_bytes(self, name: str) -> bytes: ...
    def put_bytes(self, name: str, data: bytes) -> None: ...
    def put_file(self, local: str, name: str) -> None: ...
    def put_if_changed(self, name: str, data: bytes) -> bool: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...
    def stamps(self, names: list[str]) -> dict[str, list | None]: ...
    def sweep(self, older_than: float) -> list[str]: ...
    def local_path(self, name: str) -> str: ...


class LocalStore:
    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"{self.root} is a file, not a folder: give a folder (it is created if missing)")
        if create:
            with local_errors(self.root):
                self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def path(self, name: str) -> Path:
        return self.root / contained(name)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def sweep(self, older_than: float) -> list[str]:
        """Delete temporary files (`.NAME.*.tmp`) older than `older_than` seconds: what a process killed
        mid-write leaves. Younger ones may belong to a partition being written right now."""
        now, swept = time.time(), []
        for path in self.root.rglob(".*"):
            if path.is_file() and ".tmp" in path.name and now - path.stat().st_mtime > older_than:
                path.unlink(missing_ok=True)
                swept.append(path.relative_to(self.root).as_posix())
        return swept

    def put_file(self, local: str, name: str) -> None:
        """Move `local` into the store as `name` (a rename on one file system, else a copy then a rename)."""
        target = self.path(name)
        with local_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(local, 0o666 & ~umask())
            try:
                os.replace(local, target)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        with atomic_file(target) as f, open(local, "rb") as source:
            shutil.copyfileobj(source, f)
        os.unlink(local)

    def put_bytes(self, name: str, data: bytes) -> None:
        write_atomic(self.path(name), data)

    def put_if_changed(self, name: str, data: bytes) -> bool:
        """Write unless the store already holds exactly `data` (a rerun with nothing new writes nothing, so
        it also succeeds on read-only storage); returns whether it wrote."""
        if self.exists(name) and self.get_bytes(name) == data:
            return False
        self.put_bytes(name, data)
        return True

    def open(self, name: str, buffering: int = -1) -> IO[bytes]:
        return open(self.path(name), "rb", buffering=buffering)

    def get_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def stamps(self, names: list[str]) -> dict[str, list | None]:
        """[size, modification time] per file (None when missing): what identifies its content unread."""
        stamps = {}
        for name in names:
            try:
                stat = self.path(name).stat()
                stamps[name] = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                stamps[name] = None
        return stamps

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def delete(self, name: str) -> None:
        with local_errors(self.path(name)):
            self.path(name).unlink(missing_ok=True)

    def local_path(self, name: str) -> str:
        return str(self.path(name))


# ---- S3 ------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _s3_client_for(pid: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        config=Config(retries={"mode": "standard"}, connect_timeout=10, read_timeout=60))  # AWS_MAX_ATTEMPTS: 3


def s3_client():
    """One boto3 S3 client per process (clients are not fork-safe), from the standard AWS environment."""
    return _s3_client_for(os.getpid())


def split_s3(url: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{url} names no bucket: use s3://BUCKET/PREFIX")
    return bucket, key


MISSING_CODES = ("NoSuchKey", "404", "NotFound")


def s3_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


@contextlib.contextmanager
def s3_errors(url: str):
    """botocore's failures that no retry mends as StorageErrors naming the bucket or the AWS_* variables.
    A missing object (NoSuchKey) passes through as FileNotFoundError."""
    from botocore import exceptions as aws

    try:
        yield
    except aws.NoCredentialsError:
        raise StorageError(f"{url}: no S3 credentials; set {AWS_VARIABLES}") from None
    except (aws.EndpointConnectionError, aws.ConnectTimeoutError) as exc:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        raise StorageError(f"{url}: cannot reach the S3 endpoint {endpoint} ({exc}); check AWS_ENDPOINT_URL "
                           "and the network") from None
    except aws.ClientError as exc:
        code = s3_code(exc)
        bucket = split_s3(url)[0]
        if code in MISSING_CODES:
            raise FileNotFoundError(f"{url}: no such object") from None
        if code == "NoSuchBucket":
            raise StorageError(f"{url}: no bucket {bucket!r} at this endpoint; create it or check the URL") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            raise StorageError(f"{url}: access denied ({code}); check {AWS_VARIABLES} and the bucket's "
                               "permissions") from None
        raise StorageError(f"{url}: S3 error {code}: {exc}") from None


class S3Store:
    def __init__(self, url: str, create: bool = True):  # a prefix needs no creating
        self.bucket, prefix = split_s3(url)
        self.url, self.prefix = url.rstrip("/"), prefix.strip("/")
        self.client = s3_client()

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{contained(name)}" if self.prefix else contained(name)

    def _url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def sweep(self, older_than: float) -> list[str]:
        return []  # an S3 object appears whole or not at all: nothing to sweep

    def _objects(self, prefix: str = "") -> dict[str, dict]:
        """Every object under `prefix`, by name, with its listing entry (Size, ETag, ...)."""
        paginator = self.client.get_paginator("list_objects_v2")
        skip = len(self.prefix) + 1 if self.prefix else 0
        listed = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        objects = {}
        with s3_errors(self.url):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=listed):
                objects.update({obj["Key"][skip:]: obj for obj in page.get("Contents", ())})
        return objects

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._objects(prefix))

    def upload(self, local: str | os.PathLike, name: str) -> None:
        with s3_errors(self._url(name)):
            self.client.upload_file(str(local), self.bucket, self._key(name))

    def download(self, name: str, local: str | os.PathLike) -> None:
        with s3_errors(self._url(name)), atomic_file(local) as f:
            self.client.download_fileobj(self.bucket, self._key(name), f)

    def put_file(self, local: str, name: str) -> None:
        self.upload(local, name)
        os.unlink(local)

    def put_bytes(self, name: str, data: bytes) -> None:
        with s3_errors(self._url(name)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    put_if_changed = LocalStore.put_if_changed

    def open(self, name: str) -> IO[bytes]:
        with s3_errors(self._url(name)):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]

    def get_bytes(self, name: str) -> bytes:
        with self.open(name) as body:
            return body.read()

    def stamps(self, names: list[str]) -> dict[str, list | None]:
        """[size, ETag] per object (None when missing), from one listing of the prefix."""
        listed = self._objects()
        return {name: [listed[name]["Size"], listed[name]["ETag"]] if name in listed else None for name in names}

    def exists(self, name: str) -> bool:
        try:
            with s3_errors(self._url(name)):
                self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except FileNotFoundError:
            return False

    def delete(self, name: str) -> None:
        with s3_errors(self._url(name)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def local_path(self, name: str) -> str:
        return self._url(name)


# ---- choosing one --------------------------------------------------------------------------------------------

SCHEMES = {"s3": S3Store, "file": LocalStore, "": LocalStore}


def scheme(url: str) -> str:
    head, sep, _ = str(url).partition("://")
    return head.lower() if sep and "/" not in head else ""


def open_store(url: str | os.PathLike, what: str = "--out", create: bool = True) -> Store:
    """The store at `url`: a local folder (created if missing, unless not `create`) or s3://bucket/prefix;
    other schemes refused."""
    url = str(url)
    kind = scheme(url)
    if kind not in SCHEMES:
        raise StorageError(f"{what} {url}: {kind}:// is not a writable location; use a local folder or "
                           "s3://bucket/prefix")
    return SCHEMES[kind](url[len("file://"):] if kind == "file" else url, create=create)


def is_remote(url: str | os.PathLike) -> bool:
    return scheme(str(url)) not in ("", "file")


def location_folder(url: str) -> str:
    """The folder part of a file location (local path or URL)."""
    if is_remote(url):
        return url.rsplit("/", 1)[0]
    return str(Path(url).parent)


def location_name(url: str) -> str:
    return url.rsplit("/", 1)[-1] if is_remote(url) else Path(url).name


def remove_orphans(folders, pid_of: Callable[[Path], str]) -> None:
    """Remove the folders whose owning process (`pid_of(folder)`, a pid of this host) has ended: what runs
    killed with SIGKILL leave behind."""
    for folder in folders:
        pid = pid_of(folder)
        if pid.isdigit() and not running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def private_scratch(url: str) -> Path:
    """A fresh local folder mirroring a remote location for this process alone (host and pid in its name,
    removed at exit); the mirrors that ended processes of this host left are removed first."""
    base, host = cache_dir() / "scratch", socket.gethostname()
    remove_orphans(base.glob(f"*.{host}.*"), lambda folder: folder.name.rsplit(".", 1)[-1])
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    with local_errors(base):
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{PurePosixPath(url.rstrip('/')).name}-{digest}-",
                                       suffix=f".{host}.{os.getpid()}", dir=base))
    atexit.register(shutil.rmtree, folder, True)
    return folder


class RunFolder:
    """A folder of results (a training run, an export, an evaluation's results and figures): local, or on S3
    through a local scratch mirror. Code writes `path(name)` as local files; `push` uploads them when the folder
    is remote (a no-op when local), `pull` downloads what a resume or a reader needs."""

    def __init__(self, url: str | os.PathLike, what: str = "--out", create: bool = True):
        self.url = str(url).rstrip("/") or "."
        self.remote = is_remote(self.url)
        self.local = Path(self.url)
        if self.remote:  # a fresh mirror of this process's own: what it holds is pulled from the remote folder
            self.store = open_store(self.url, what)
            self.local = private_scratch(self.url)
        elif self.local.exists() and not self.local.is_dir():
            raise StorageError(f"{what} {self.url} is a file, not a folder")
        elif not create and not self.local.is_dir():
            raise StorageError(f"{what} {self.url}: no such folder")
        if self.remote or create:
            with local_errors(self.local):
                self.local.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.local / contained(name)

    def url_of(self, name: str) -> str:
        return f"{self.url}/{name}" if self.remote else str(self.path(name))

    def names(self) -> list[str]:
        if self.remote:
            return self.store.list()
        return sorted(p.relative_to(self.local).as_posix() for p in self.local.rglob("*") if p.is_file())

    def push(self, *names: str) -> None:
        """Upload these local files (every file below a folder name) to the remote folder."""
        if not self.remote:
            return
        for name in names:
            path = self.path(name)
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
            for file in files:
                self.store.upload(file, file.relative_to(self.local).as_posix())

    def push_all(self) -> None:
        """Upload every local file (a fresh mirror holds only what this process wrote)."""
        self.push(*(p.relative_to(self.local).as_posix() for p in self.local.iterdir()))

    def pull(self, *names: str) -> list[str]:
        """Download these files from the remote folder (those it has); returns the names fetched."""
        if not self.remote:
            return [name for name in names if self.path(name).is_file()]
        present = set(self.store.list())
        for name in names:
            if name in present:
                self.store.download(name, self.path(name))
        return [name for name in names if name in present]

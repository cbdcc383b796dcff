"""One writer per folder: a build partition or a training run holds an exclusive lock in its output.

A local lock is `flock` on a file in the folder: the kernel releases it when its process ends, however it ends,
so a local lock is never stale; the file names its holder (host, pid, command, since) for the refusal. An S3
lock is an object created by a conditional put (If-None-Match: *) that one writer alone can win. Its holder
rewrites it every HEARTBEAT seconds (If-Match its own ETag); a lock not rewritten for STALE seconds (by the
server's clock), or held by a process of this host that has ended, is taken over, again conditionally, so
by one taker only. An endpoint without conditional writes (some older S3-compatible servers) cannot lock:
the writer is told so once and goes on unlocked.
"""
from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from avcl.progress import say
from avcl.machine import running
from avcl.storage import LocalStore, RunFolder, S3Store, StorageError, local_errors, s3_code, s3_errors, umask
from avcl.urls import redact_text

HEARTBEAT = 60.0  # seconds between an S3 lock's rewrites
STALE = 300.0  # seconds without a rewrite after which an S3 lock's holder counts as gone
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # a folder this process cannot write needs no lock
TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class LockHeld(StorageError):
    """Another process writes this folder: the message names it."""


def holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command_line(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def command_line() -> str:
    """This process's command as typed (`avtools train ...`, also when run as `python -m avtools`), redacted."""
    program = Path(sys.argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name
    return redact_text(" ".join([name, *sys.argv[1:]]))[:300]


def refusal(what: str, record: dict | None) -> LockHeld:
    if not record:
        return LockHeld(f"{what} is being written by another process (just starting): wait for it to end, or "
                        "write elsewhere")
    return LockHeld(f"{what} is being written by pid {record.get('pid')} on {record.get('host')} since "
                    f"{record.get('since')} ({record.get('command')}): wait for it to end or stop it, or write "
                    "elsewhere")


@contextlib.contextmanager
def exclusive(store, name: str, what: str):
    """Hold the lock `name` in `store` (a LocalStore or an S3Store) for the block; LockHeld when another
    process holds it. `what` names the folder in the refusal ("run folder runs/a")."""
    lock = LocalLock(store.path(name), what) if isinstance(store, LocalStore) else S3Lock(store, name, what)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def exclusive_folder(folder: RunFolder, name: str, what: str):
    """`exclusive` on a run folder: the lock lies in the folder itself (the remote one when on S3)."""
    return exclusive(folder.store if folder.remote else LocalStore(folder.local), name, what)


class LocalLock:
    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fd = path, what, None

    def acquire(self) -> None:
        while self.fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
            except OSError as exc:
                if exc.errno in UNWRITABLE:  # nothing this process does here can conflict: its writes fail too
                    return
                with local_errors(self.path):
                    raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                record = _parsed(os.pread(fd, 4096, 0))
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise refusal(self.what, record) from None
                say(f"warning: {self.path}: this file system cannot lock ({os.strerror(exc.errno)}); make sure "
                    "one process alone writes here")
                return
            if self._still_there(fd):
                self.fd = fd
            else:  # a releasing holder unlinked the file between our open and flock: lock the new one
                os.close(fd)
        with local_errors(self.path):
            data = json.dumps(holder()).encode()
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def _still_there(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before the unlock, so a waiting opener sees a fresh file
            os.close(self.fd)
            self.fd = None


class S3Lock:
    def __init__(self, store: S3Store, name: str, what: str):
        self.store, self.name, self.what = store, name, what
        self.key, self.url = store._key(name), store._url(name)
        self.etag: str | None = None
        self.record = holder()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def acquire(self) -> None:
        try:
            self.etag = self._put(IfNoneMatch="*")
        except _Unsupported:
            return
        except _Taken:
            self._take_over_if_stale()
        self.thread = threading.Thread(target=self._heartbeat, name="avtools-lock", daemon=True)
        self.thread.start()

    def _take_over_if_stale(self) -> None:
        record, etag, age = self._read()
        if etag is None:  # released meanwhile
            try:
                self.etag = self._put(IfNoneMatch="*")
                return
            except _Taken:
                record, etag, age = self._read()
        if not _gone(record, age):
            raise refusal(self.what, record)
        try:
            self.etag = self._put(IfMatch=etag)
        except _Taken:  # another process took it over first
            raise refusal(self.what, self._read()[0]) from None
        say(f"took over {self.url} from pid {record.get('pid')} on {record.get('host')} (gone)")

    def _put(self, **condition) -> str:
        from botocore.exceptions import ClientError

        with s3_errors(self.url):
            try:
                reply = self.store.client.put_object(Bucket=self.store.bucket, Key=self.key,
                                                     Body=json.dumps(self.record).encode(), **condition)
            except ClientError as exc:
                if s3_code(exc) in TAKEN:
                    raise _Taken from None
                if s3_code(exc) in ("AccessDenied", "403") and "IfNoneMatch" in condition:
                    raise _Unsupported from None  # read-only credentials: nothing this process does can conflict
                if s3_code(exc) in ("NotImplemented", "501"):
                    say(f"warning: {self.url}: this S3 endpoint has no conditional writes, so the folder cannot "
                        "be locked; make sure one process alone writes here")
                    raise _Unsupported from None
                raise
        return reply["ETag"]

    def _read(self) -> tuple[dict | None, str | None, float]:
        """The lock's record, ETag and age in seconds (both times from the server); (None, None, 0) if gone."""
        try:
            with s3_errors(self.url):
                reply = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key)
                body = reply["Body"].read()
        except FileNotFoundError:
            return None, None, 0.0
        now = email.utils.parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"])
        return _parsed(body), reply["ETag"], (now - reply["LastModified"]).total_seconds()

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except _Taken:
                say(f"warning: {self.url} was taken over by another process (this one looked gone): stop one "
                    "of them")
                return
            except Exception:  # an outage: try again at the next beat
                continue

    def release(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.etag is not None:
            with contextlib.suppress(Exception):  # a lock that cannot be deleted goes stale on its own
                self.store.client.delete_object(Bucket=self.store.bucket, Key=self.key, IfMatch=self.etag)
            self.etag = None


class _Taken(Exception):
    pass


class _Unsupported(Exception):
    pass


def _parsed(data: bytes) -> dict | None:
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _gone(record: dict | None, age: float) -> bool:
    """Whether an S3 lock's holder is gone: silent for STALE seconds, or a process of this host that ended."""
    if age > STALE:
        return True
    if record is None:  # not a lock avtools wrote
        return age > HEARTBEAT
    pid = str(record.get("pid", ""))
    return record.get("host") == socket.gethostname() and pid.isdigit() and not running(int(pid))

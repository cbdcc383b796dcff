"""Where a build's outputs go: a local folder, or an `s3://bucket/prefix` on any S3-compatible endpoint.

Writes are all-or-nothing: a local file appears under its final name by rename, an S3 object by a completed
upload. Every name is checked to stay inside the store's root (`contained`): names are built from annotation
fields, which come from the internet. The S3 endpoint and credentials come from the standard AWS environment
variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ...).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from avcl.data.sources import s3_client



def contained(name: str) -> str:
    """`name` if it is a relative path that stays below the root; ValueError otherwise."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise ValueError(f"{name!r} would be written outside the output folder: refused")
    return name


class LocalStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
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
        """Delete temporary files (`.tmp-*`, `.NAME.tmpPID`) older than `older_than` seconds: what a process killed
        mid-write leaves. Younger ones may belong to a partition being written right now."""
        now, swept = time.time(), []
        for path in self.root.rglob(".*"):
            if path.is_file() and ".tmp" in path.name and now - path.stat().st_mtime > older_than:
                path.unlink(missing_ok=True)
                swept.append(path.relative_to(self.root).as_posix())
        return swept

    def put_file(self, local: str, name: str) -> None:
        """Move `local` into the store as `name` (atomic on one file system)."""
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local, target)
        except OSError:  # another file system: copy beside the target, then rename
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
            os.unlink(local)

    def put_bytes(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._parent(name), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.put_file(tmp, name)

    def get_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def local_path(self, name: str) -> str:
        return str(self.path(name))

    def _parent(self, name: str) -> Path:
        parent = self.path(name).parent
        parent.mkdir(parents=True, exist_ok=True)
        return parent


class S3Store:
    def __init__(self, url: str):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{url} names no bucket")
        self.url, self.bucket, self.prefix = url.rstrip("/"), bucket, prefix.strip("/")
        self.client = s3_client()

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{contained(name)}" if self.prefix else contained(name)

    def sweep(self, older_than: float) -> list[str]:
        return []  # an S3 object appears whole or not at all: nothing to sweep

    def list(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        skip = len(self.prefix) + 1 if self.prefix else 0
        names = []
        listed = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=listed):
            names.extend(obj["Key"][skip:] for obj in page.get("Contents", ()))
        return sorted(names)

    def put_file(self, local: str, name: str) -> None:
        self.client.upload_file(local, self.bucket, self._key(name))
        os.unlink(local)

    def put_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def get_bytes(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except ClientError:
            return False

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def local_path(self, name: str) -> str:
        return f"{self.url}/{name}"


def open_store(url: str | os.PathLike):
    url = str(url)
    return S3Store(url) if url.startswith("s3://") else LocalStore(url)

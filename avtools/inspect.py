"""`avtools inspect`: describe a dataset (its dataset.json) or one shard, from a folder, http(s) or s3://."""
from __future__ import annotations

import collections
import json
import tarfile
import urllib.error
import urllib.request
from typing import IO, Iterator

from avcl.data import schema
from avtools.store import s3_client


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream for a local path, an http(s) URL or an s3://bucket/key."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=60)
    if url.startswith("s3://"):
        bucket, _, key = url[5:].partition("/")
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    return open(url, "rb")


def iter_samples(stream: IO[bytes]) -> Iterator[dict]:
    """Samples of a shard as {"__key__": key, ext: bytes}, grouped like WebDataset groups them."""
    current: dict | None = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = schema.split_member(member.name)
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            current[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current


def read_dataset_json(url: str) -> dict | None:
    """dataset.json of a dataset folder/prefix, or None if `url` is not one."""
    if url.endswith(".tar"):
        return None
    try:
        with open_url(url.rstrip("/") + "/dataset.json") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    except Exception as exc:  # botocore's NoSuchKey arrives as a generated ClientError subclass
        if type(exc).__name__ in ("NoSuchKey", "ClientError"):
            return None
        raise


def describe(url: str) -> dict:
    """A dataset's counts and classes plus one sample's metadata, or a shard's counts and first sample."""
    info = read_dataset_json(url)
    if info is not None:
        first = next((s["shards"][0]["name"] for s in info["splits"].values() if s["shards"]), None)
        sample = first_sample(url.rstrip("/") + "/" + first) if first else None
        return {"kind": "dataset", "url": url, "name": info["name"], "complete": info["complete"],
                "counts": info["counts"], "failures": info["failures"],
                "splits": {name: {"available": s["available"], "total": s["total"], "shards": len(s["shards"])}
                           for name, s in info["splits"].items()},
                "classes": sorted({c for s in info["splits"].values() for c in s["classes"]}),
                "sample": sample}
    return describe_shard(url)


def describe_shard(url: str) -> dict:
    labels: collections.Counter[str] = collections.Counter()
    first, n = None, 0
    with open_url(url) as stream:
        for sample in iter_samples(stream):
            meta = schema.decode_json(sample[schema.JSON_EXT])
            labels[meta.get("label") or ""] += 1
            n += 1
            first = first or _sample_summary(sample, meta)
    return {"kind": "shard", "url": url, "samples": n, "classes": dict(sorted(labels.items())), "sample": first}


def first_sample(url: str) -> dict | None:
    with open_url(url) as stream:
        for sample in iter_samples(stream):
            return _sample_summary(sample, schema.decode_json(sample[schema.JSON_EXT]))
    return None


def _sample_summary(sample: dict, meta: dict) -> dict:
    return {"key": sample["__key__"], "members": sorted(k for k in sample if k != "__key__"), "json": meta}

"""`avtools inspect`: describe a dataset (its dataset.json) or one shard, from a folder, http(s) or s3://."""
from __future__ import annotations

import collections
import contextlib
import tarfile
from typing import IO, Iterator

from avcl.data import schema
from avcl.data.sources import SourceError, dataset_info, open_url


@contextlib.contextmanager
def reading(url: str):
    """A shard that cannot be read (missing, not a tar, a sample without readable metadata) as a SourceError."""
    try:
        yield
    except FileNotFoundError:
        raise SourceError(f"{url}: no such file or object (a dataset folder holds dataset.json)") from None
    except (OSError, tarfile.TarError, schema.MetadataError) as exc:
        raise SourceError(f"{url}: cannot read it as a WebDataset shard ({exc})") from None


def iter_samples(stream: IO[bytes], url: str = "") -> Iterator[dict]:
    """Samples of a shard as {"__key__": key, ext: bytes}, read and grouped by WebDataset's own code."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    for sample in group_by_keys(tar_file_expander([{"stream": stream, "url": url}])):
        yield {key: value for key, value in sample.items() if key == "__key__" or not key.startswith("__")}


def describe(url: str) -> dict:
    """A dataset's counts and classes plus one sample's metadata, or a shard's counts and first sample."""
    info = dataset_info(url)
    if info is not None:
        first = next((s.shards[0].name for s in info.splits.values() if s.shards), None)
        sample = first_sample(url.rstrip("/") + "/" + first) if first else None
        return {"kind": "dataset", "url": url, "name": info.name, "complete": info.complete,
                "counts": info.counts, "failures": info.failures,
                "splits": {name: {"available": s.available, "total": s.total, "shards": len(s.shards)}
                           for name, s in info.splits.items()},
                "classes": info.classes(), "class_list": info.class_list,
                **({"folds": info.folds} if info.folds else {}),
                "sample": sample}
    if "{" in url:
        return describe_shards(url)
    return describe_shard(url)


def describe_shards(pattern: str) -> dict:
    """A brace pattern of shards: their summed counts and classes, and the first sample."""
    import braceexpand

    parts = [describe_shard(u) for u in braceexpand.braceexpand(pattern)]
    classes: collections.Counter[str] = collections.Counter()
    for part in parts:
        classes.update(part["classes"])
    return {"kind": "shards", "url": pattern, "shards": len(parts), "samples": sum(p["samples"] for p in parts),
            "classes": dict(sorted(classes.items())), "sample": next((p["sample"] for p in parts if p["sample"]), None)}


def describe_shard(url: str) -> dict:
    labels: collections.Counter[str] = collections.Counter()
    first, n, without_json = None, 0, []
    with reading(url), open_url(url) as stream:
        for sample in iter_samples(stream):
            if schema.JSON_EXT not in sample:  # counted and named, as the loader skips it
                without_json.append(sample["__key__"])
                continue
            meta = schema.decode_json(sample[schema.JSON_EXT])
            labels[meta.get("label") or ""] += 1
            n += 1
            first = first or _sample_summary(sample, meta)
    described = {"kind": "shard", "url": url, "samples": n, "classes": dict(sorted(labels.items())), "sample": first}
    if without_json:
        described["without_json"] = {"count": len(without_json), "keys": without_json[:5]}
    return described


def first_raw_sample(url: str) -> dict:
    """The first sample (raw bytes) of a dataset folder, shard pattern, shard or pipe: source."""
    from avcl.data.sources import resolve

    info = dataset_info(url)
    split = next((name for name, s in info.splits.items() if s.shards), "train") if info else "train"
    for shard in resolve(url, split).urls:
        sample = first_in_shard(shard)
        if sample is not None:
            return sample
    raise SourceError(f"{url}: no samples")


def first_in_shard(url: str) -> dict | None:
    with reading(url), open_url(url) as stream:
        return next(iter_samples(stream), None)


def first_sample(url: str) -> dict | None:
    sample = first_in_shard(url)
    if sample is None or schema.JSON_EXT not in sample:
        return None
    with reading(url):
        return _sample_summary(sample, schema.decode_json(sample[schema.JSON_EXT]))


def _sample_summary(sample: dict, meta: dict) -> dict:
    return {"key": sample["__key__"], "members": sorted(k for k in sample if k != "__key__"), "json": meta}

"""Evaluation datasets: which shard splits hold the videos, and which are train and test in each official fold.

UCF101 and HMDB51 store every video once (shard split = its role in the fold the dataset was built with); the
json field `folds` gives its role in official splits 1-3, so one feature extraction serves all three folds.
ESC-50's five folds are its shard splits `fold1`..`fold5` (test on one, train on the other four). Every other
dataset (Kinetics-Sounds, VGG-Sound, folder) has one fold: train on `train`, test on `test` (else `val`).
Every dataset of manifests/datasets.toml is one, described by its `eval` table there.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import avtools_manifests
from avcl.data.schema import DatasetInfo
from avcl.data.views import FOLD_ROLES, fold_codes
from avcl.errors import UserError
from avcl.registry import Registry

DATASETS = Registry("evaluation dataset", package="avcl.eval")


class EvalDataError(UserError):
    """The data does not fit the requested dataset or fold; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class EvalDataset:
    name: str
    kind: str = "single"  # official-splits | folds | single
    folds: tuple[str, ...] = ("1",)  # fold names, "1".."3" | "1".."5" | ("1",)
    default_folds: tuple[str, ...] = ("1",)  # what `--folds` means when not given
    modalities: tuple[str, ...] = ("video", "audio", "fused")  # what the protocols evaluate by default
    finetune_epochs: int = 10  # AVID/SEVERE: 16 epochs with milestones 6, 10, 14 (UCF101); 10 with 3, 6, 8 (HMDB51)
    finetune_milestones: tuple[int, ...] = (3, 6, 8)
    class_list_version: str = ""  # the class list the data must have been built with (KS100 v1 and v2 differ)
    protocol: str = "linear"  # what `avtools eval` runs when --protocol is not given

    def test_split(self, splits: list[str]) -> str:
        for name in ("test", "val"):
            if name in splits:
                return name
        raise EvalDataError(f"{self.name}: no test or val split in the dataset (have {', '.join(splits)})")

    def role(self, split: str, codes: np.ndarray, fold: str, splits: list[str]) -> str | None:
        """'train', 'test' or None for one sample (its shard split and `folds` codes) in `fold`."""
        if self.kind == "official-splits":
            code = int(codes[int(fold) - 1])
            return FOLD_ROLES[code] if code in (0, 1) else None
        if self.kind == "folds":
            return "test" if split == f"fold{fold}" else "train"
        if split == "train":
            return "train"
        return "test" if split == self.test_split(splits) else None

    def splits_holding(self, fold: str, role: str, splits: list[str]) -> list[str]:
        """The shard splits where samples of `role` in `fold` can be."""
        if self.kind == "official-splits":
            return list(splits)
        return [s for s in splits if self.role(s, np.full(3, -1), fold, splits) == role]

    def selector(self, fold: str, role: str, splits: list[str]):
        """A predicate on sample json: is the sample `role` in `fold`? (for streams that select samples)."""
        return lambda meta: self.role(meta.get("split", ""), fold_codes(meta), fold, splits) == role

    def resolve_folds(self, requested: str | None) -> tuple[str, ...]:
        if requested in (None, ""):
            return self.default_folds
        if requested == "all":
            return self.folds
        chosen = tuple(part.strip() for part in requested.split(","))
        bad = [f for f in chosen if f not in self.folds]
        if bad:
            raise EvalDataError(f"{self.name} has official splits (--folds) {', '.join(self.folds)} (or 'all'), not {', '.join(bad)}")
        return chosen

    def coverage(self, info: DatasetInfo, fold: str, role: str) -> tuple[int, int]:
        """(expected, available): how many samples are `role` in `fold` by the official lists, and how many the
        shards hold, from dataset.json (never by reading the shards)."""
        if self.kind == "official-splits":
            counts = info.folds.get(fold, {}).get(role, {"expected": 0, "available": 0})
            if not isinstance(counts, dict):
                raise EvalDataError(f"dataset.json has no expected/available counts per official split: rerun the "
                                    "same `avtools build-dataset` command once (finished shards are kept) to add them")
            return counts["expected"], counts["available"]
        entries = [split for name, split in info.splits.items()
                   if self.role(name, np.full(3, -1), fold, list(info.splits)) == role]
        return sum(s.total for s in entries), sum(s.available for s in entries)


def from_definition(name: str, definition: dict) -> EvalDataset:
    """A dataset of manifests/datasets.toml as an evaluation dataset: its `eval` table over the defaults of a
    one-fold audio-visual dataset, and its class list's version."""
    table = {key: tuple(value) if isinstance(value, list) else value for key, value in definition.get("eval", {}).items()}
    return EvalDataset(name, class_list_version=definition.get("version", ""), **table)


for _name, _definition in avtools_manifests.datasets().items():
    DATASETS.register(_name)(from_definition(_name, _definition))

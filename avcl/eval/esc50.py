"""`--protocol esc50`: ESC-50 sound classification with a frozen audio encoder, CrissCross's protocol (§6).

Each 5-s recording gives 100 augmented 2-s training crops (random position, volume jitter, SpecAugment masks;
the published time warp is not applied) and 10 evenly spaced test crops; the feature is the conv5 map
max-pooled to 3x3 (4608-d for ResNet-18), L2-normalised, then standardised (CrissCross: BatchNorm). A linear
SVM per official fold, C from {1e-5 ... 1} chosen on recordings held out of the training folds; test decision
values averaged over the crops. Reports each fold and the mean of the 5 folds. Jenni et al.'s reconstruction
is `window_s = 1 | 2` with `feature = "gap"`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from avcl.eval import classify
from avcl.eval.engine import Engine, register_protocol
from avcl.eval.features import FeatureSpec


@dataclasses.dataclass
class ESC50Recipe:
    window_s: float = 2.0
    classifier: str = "svm"  # svm | logreg
    c_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    holdout: float = 0.1
    train_crops: int = 100
    test_crops: int = 10
    feature: str = "conv5"  # conv5 | gap
    standardize: bool = True
    max_iter: int = 1000
    seed: int = 0


@register_protocol("esc50", ESC50Recipe, "CrissCross ESC-50: frozen audio encoder, linear SVM per official fold")
def run(engine: Engine, recipe: ESC50Recipe, folds, modalities) -> list:
    common = dict(modality="audio", layer=recipe.feature, audio_seconds=recipe.window_s, keep_clips=True)
    train = engine.features(FeatureSpec(clips=recipe.train_crops, augment_seed=recipe.seed, **common))
    test = engine.features(FeatureSpec(clips=recipe.test_crops, **common))
    rows = []
    for fold in folds:
        train_rows, _ = engine.fold_indices(train, fold)
        _, test_rows = engine.fold_indices(test, fold)
        crops = train.features[train_rows]  # [N, crops, D]
        x = crops.reshape(-1, crops.shape[-1])
        y = np.repeat(train.labels[train_rows], crops.shape[1])
        groups = np.repeat(train_rows, crops.shape[1])
        fitted = classify.fit(x, y, recipe.classifier, recipe.c_grid, recipe.holdout, recipe.standardize,
                              recipe.max_iter, recipe.seed, groups=groups)
        tests = test.features[test_rows]
        scores = fitted.scores(tests.reshape(-1, tests.shape[-1]), engine.num_classes)
        scores = scores.reshape(len(test_rows), tests.shape[1], -1).mean(1)
        metrics = {"accuracy": 100 * classify.topk_accuracy(scores, test.labels[test_rows], 1)}
        rows.append(engine.row(fold, "esc50", "audio", metrics, recipe, c=fitted.c, train=len(train_rows),
                               test=len(test_rows)))
    return rows

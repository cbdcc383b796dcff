"""Linear classifiers on frozen features (scikit-learn's LinearSVC and L-BFGS logistic regression; liblinear
itself for TCGL's protocol), with the regularisation C chosen on a held-out part of train, then refitted on all
of train.

`svm-tcgl` is TCGL's call run by liblinear itself (the official library's pip package, `liblinear-official`):
`train(y, x, "-s 2 -c C")`, L2-regularised L2-loss SVC solved in the primal, one-vs-rest, liblinear's defaults
otherwise (no bias term). scikit-learn's LinearSVC wraps a modified liblinear whose stopping rule differs:
at the same settings its predictions agreed with liblinear's on only 64-90 % of test rows.

The hold-out is drawn per group (a recording whose crops are separate training rows is one group), so no
recording is on both sides.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from avcl.errors import ConfigError

CLASSIFIERS = ("logreg", "svm", "svm-tcgl")


@dataclasses.dataclass
class Fitted:
    model: object
    scaler: object | None
    c: float
    holdout_accuracy: dict[float, float]

    def scores(self, x: np.ndarray, num_classes: int) -> np.ndarray:
        """[N, num_classes] decision values; classes absent from train score -inf."""
        if self.scaler is not None:
            x = self.scaler.transform(x)
        raw = self.model.decision_function(x)
        classes = self.model.classes_
        if raw.ndim == 1:  # scikit-learn, two classes: one column, positive means classes_[1]
            raw = np.stack([-raw, raw], axis=1)
        out = np.full((len(x), num_classes), -np.inf)
        out[:, classes] = raw
        return out


class Liblinear:
    """liblinear's own `-s 2` (L2-regularised L2-loss SVC, primal), no bias, with scikit-learn's fit /
    decision_function / predict / classes_ surface."""

    def __init__(self, c: float):
        self.c = c

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Liblinear":
        train, _ = liblinear_calls()
        self.model = train(y.astype(np.float64), np.ascontiguousarray(x, np.float64), f"-s 2 -c {self.c:g} -q")
        self.classes_ = np.asarray(self.model.get_labels(), dtype=np.int64)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """[N, classes] liblinear's decision values, in `classes_` order (two classes: one value, for the first)."""
        _, predict = liblinear_calls()
        _, _, values = predict([], np.ascontiguousarray(x, np.float64), self.model, "-q")
        values = np.asarray(values, np.float64).reshape(len(x), -1)
        return np.concatenate([values, -values], axis=1) if len(self.classes_) == 2 else values

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(x).argmax(1)]


def liblinear_calls():
    try:
        from liblinear.liblinearutil import predict, train
    except ImportError:
        raise ConfigError("classifier svm-tcgl (linear-svm-tcgl) runs liblinear itself: pip install "
                          "liblinear-official (install.sh does)") from None
    return train, predict


def library(kind: str) -> str:
    """The library and version that fits `kind`, for the result rows."""
    from importlib.metadata import version

    name = "liblinear-official" if kind == "svm-tcgl" else "scikit-learn"
    return f"{name} {version(name)}"


def make_classifier(kind: str, c: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if kind == "logreg":
        return LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    if kind == "svm":
        return LinearSVC(C=c, max_iter=max_iter, random_state=seed)
    if kind == "svm-tcgl":
        return Liblinear(c)
    raise ConfigError(f"classifier must be one of {CLASSIFIERS}, not {kind!r}")


def holdout_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) row indices with `fraction` of the groups held out (at least one group each side)."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_out = min(max(1, int(round(fraction * len(unique)))), len(unique) - 1)
    held = set(rng.permutation(unique)[:n_out].tolist())
    mask = np.array([g in held for g in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def fit(x: np.ndarray, y: np.ndarray, kind: str, c_grid, *, holdout: float = 0.1, standardize: bool = True,
        max_iter: int = 1000, seed: int = 0, groups: np.ndarray | None = None) -> Fitted:
    """The classifier with the C of `c_grid` that scores best on the held-out part, refitted on all rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x) if standardize else None
    xs = scaler.transform(x) if scaler is not None else x
    groups = np.arange(len(y)) if groups is None else groups
    c_grid = [float(c) for c in c_grid]
    accuracy = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(c_grid) > 1 and len(np.unique(groups)) > 1:
            fit_rows, held = holdout_split(groups, holdout, seed)
            for c in c_grid:
                model = make_classifier(kind, c, max_iter, seed).fit(xs[fit_rows], y[fit_rows])
                accuracy[c] = float((model.predict(xs[held]) == y[held]).mean())
        best = max(c_grid, key=lambda c: (accuracy.get(c, 0.0), -c))  # ties: the stronger regularisation
        model = make_classifier(kind, best, max_iter, seed).fit(xs, y)
    return Fitted(model, scaler, best, accuracy)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest scores (ties broken by lower class index)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())

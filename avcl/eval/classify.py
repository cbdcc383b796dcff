"""Linear classifiers on frozen features (scikit-learn: liblinear SVM, L-BFGS logistic regression), with the
regularisation C chosen on a held-out part of train, then refitted on all of train.

`svm-tcgl` is exactly TCGL's liblinear call, `-s 2 -c C` with no bias term: L2-regularised L2-loss SVC solved in
the primal, one-vs-rest, liblinear's default tolerance for that solver (0.01), no intercept.

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
        if raw.ndim == 1:  # two classes: one column, positive means classes_[1]
            raw = np.stack([-raw, raw], axis=1)
        out = np.full((len(x), num_classes), -np.inf)
        out[:, classes] = raw
        return out


def make_classifier(kind: str, c: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if kind == "logreg":
        return LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    if kind == "svm":
        return LinearSVC(C=c, max_iter=max_iter, random_state=seed)
    if kind == "svm-tcgl":
        return LinearSVC(C=c, loss="squared_hinge", penalty="l2", dual=False, fit_intercept=False, tol=0.01,
                         max_iter=max_iter, random_state=seed)
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

"""Which samples a run trains, validates and tests on: views of a dataset and the label-split policy.

Every downstream recipe draws its labelled data the same way: a class subset, a class-balanced share of
the labels (label efficiency) or a few-shot episode, optionally k-fold cross-validation on the
training split, a stratified validation hold-out (never the test split), caps for quick runs. Each
draw is deterministic in its seed and a share is a subset of every larger share. `SplitPolicy` holds
those choices as plain values; `SplitPolicy.apply` is called once per run and returns `LabelSplits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LabelSplits",
    "LabelView",
    "SplitPolicy",
    "Subset",
    "balanced_fraction",
    "cap_per_class",
    "cv_fold",
    "few_shot_episode",
    "stratified_holdout",
]


# ----------------------------------------------------------------------------- views
class Subset:
    """Index view of a dataset (keeps `set_epoch` and the sample dict protocol)."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.base[int(self.indices[i])]
        s["index"] = int(i)
        return s

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def labels(self) -> np.ndarray:
        return np.asarray(self.base.labels())[self.indices]


class LabelView(Subset):
    """Shapes of a dataset with labels re-numbered through `lut` (a class subset or an episode)."""

    def __init__(self, base: Any, indices: np.ndarray, lut: np.ndarray) -> None:
        super().__init__(base, indices)
        self.lut = np.asarray(lut, dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = super().__getitem__(i)
        s["label"] = int(self.lut[int(s["label"])])
        return s

    def labels(self) -> np.ndarray:
        return self.lut[super().labels()]


# ----------------------------------------------------------------------------- draws
def cap_per_class(idx: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """The first `per_class` indices of each class (all when None): quick runs and smoke tests."""
    if not per_class:
        return idx
    keep = np.concatenate([idx[labels[idx] == c][:per_class] for c in np.unique(labels[idx])])
    return np.sort(keep)


def balanced_fraction(labels: np.ndarray, idx: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-balanced share of `idx`: round(fraction * n_c) shapes of each class (at least one),
    drawn by a permutation seeded by (seed, class), so a share is a subset of every larger share."""
    if not 0 < fraction <= 1:
        raise ValueError(f"data.label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.sort(idx)
    keep = []
    for c in np.unique(labels[idx]):
        cls = np.sort(idx[labels[idx] == c])
        k = max(1, int(round(fraction * len(cls))))
        keep.append(cls[np.random.default_rng([seed, int(c), 97]).permutation(len(cls))[:k]])
    return np.sort(np.concatenate(keep))


def stratified_holdout(
    labels: np.ndarray, idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): a seeded `fraction` of each class held out (one at least, when the class has two)."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for c in np.unique(labels[idx]):
        cls = np.sort(idx[labels[idx] == c])
        perm = np.random.default_rng([seed, int(c), 31]).permutation(cls)
        k = min(max(1, int(round(fraction * len(cls)))), len(cls) - 1)
        val.append(perm[:k])
        train.append(perm[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def cv_fold(
    labels: np.ndarray, idx: np.ndarray, folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) of stratified k-fold cross-validation: each class's shapes dealt round-robin
    into `folds` folds in a seeded order, so every fold holds about 1/k of every class."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"data.cv_folds must be >= 2 and data.cv_fold in [0, {folds}), got {folds}, {fold}")
    held = []
    for c in np.unique(labels[idx]):
        perm = np.random.default_rng([seed, int(c), 47]).permutation(np.sort(idx[labels[idx] == c]))
        held.append(perm[fold::folds])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(idx, out), out


def few_shot_episode(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    ways: int,
    shots: int,
    queries: int,
    episode: int,
    seed: int = 0,
    classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class ids, support indices into train, query indices into test) of one N-way K-shot episode.

    Deterministic in (seed, episode): `ways` classes drawn from `classes` (default: every training
    class), `shots` training shapes and `queries` test shapes of each, both class-balanced.
    """
    pool = np.unique(train_labels) if classes is None else np.asarray(classes)
    if not 2 <= ways <= len(pool):
        raise ValueError(f"few_shot.ways must be in [2, {len(pool)}], got {ways}")
    if shots < 1 or queries < 1:
        raise ValueError(f"few_shot.shots and few_shot.queries must be >= 1, got {shots}, {queries}")
    rng = np.random.default_rng([seed, episode, 5])
    chosen = np.sort(rng.choice(pool, size=ways, replace=False))
    support, query = [], []
    for c in chosen:
        tr, te = np.flatnonzero(train_labels == c), np.flatnonzero(test_labels == c)
        if len(tr) < shots or len(te) < queries:
            raise ValueError(
                f"few-shot episode {episode}: class {int(c)} has {len(tr)} training / {len(te)} test shapes, "
                f"fewer than shots={shots} / queries={queries}"
            )
        support.append(np.sort(rng.choice(tr, size=shots, replace=False)))
        query.append(np.sort(rng.choice(te, size=queries, replace=False)))
    return chosen, np.concatenate(support), np.concatenate(query)


# ----------------------------------------------------------------------------- the policy
@dataclass
class LabelSplits:
    """Indices a run uses. `train` and `val` index the training split; `test` indexes the training
    split when `test_from_train` (cross-validation), else the test split. `lut` maps dataset labels to
    the run's labels (-1: a class not used)."""

    classes: list[str]
    lut: np.ndarray
    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray
    test_from_train: bool
    description: str


@dataclass
class SplitPolicy:
    """The label-split choices of a run, as plain values (see the module docstring)."""

    classes: list[str] = field(default_factory=list)  # only these classes (labels re-numbered)
    label_fraction: float = 1.0
    label_seed: int = 0
    ways: int = 0  # few-shot episode: 0 = off
    shots: int = 10
    queries: int = 20
    episode: int = 0
    episode_seed: int = 0
    cv_folds: int = 0
    cv_fold: int = 0
    val_fraction: float = 0.0
    train_per_class: int | None = None
    test_per_class: int | None = None

    def apply(
        self, y_train: np.ndarray, y_test: np.ndarray, classes: list[str], dataset: str = ""
    ) -> LabelSplits:
        """The run's splits from the training and test labels of a dataset with `classes`."""
        rows = np.arange(len(classes))
        if self.classes:
            unknown = [c for c in self.classes if c not in classes]
            if unknown:
                raise ValueError(f"data.classes: {unknown} are not classes of {dataset} ({classes[:8]}...)")
            rows = np.array([classes.index(c) for c in self.classes])
        train_idx = np.flatnonzero(np.isin(y_train, rows))
        test_idx = np.flatnonzero(np.isin(y_test, rows))
        if self.ways:
            rows, train_idx, test_idx = few_shot_episode(
                y_train, y_test, self.ways, self.shots, self.queries, self.episode, self.episode_seed,
                classes=rows,
            )  # fmt: skip
        else:
            train_idx = balanced_fraction(y_train, train_idx, self.label_fraction, self.label_seed)
        from_train = False
        if self.cv_folds:
            if self.ways:
                raise ValueError("data.cv_folds and data.few_shot are exclusive")
            train_idx, test_idx = cv_fold(y_train, train_idx, self.cv_folds, self.cv_fold, self.label_seed)
            y_test, from_train = y_train, True
        val_idx = None
        if self.val_fraction:
            train_idx, val_idx = stratified_holdout(y_train, train_idx, self.val_fraction, self.label_seed)
        train_idx = cap_per_class(train_idx, y_train, self.train_per_class)
        test_idx = cap_per_class(test_idx, y_test, self.test_per_class)
        lut = np.full(len(classes), -1, dtype=np.int64)
        lut[rows] = np.arange(len(rows))
        what = (
            f"{self.ways}-way {self.shots}-shot episode {self.episode}"
            if self.ways
            else f"{self.label_fraction:.0%} of labels"
        )
        return LabelSplits([classes[r] for r in rows], lut, train_idx, val_idx, test_idx, from_train, what)

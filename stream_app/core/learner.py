"""Prequential learning: score with the stored p, update metrics, then learn.

The order matters: each label is first used to *evaluate* the prediction made at scoring
time (before the outcome was known), and only then to train. That is the delayed-label
progressive validation of river.evaluate, done in event time.
"""

from __future__ import annotations

import math

from river import drift, metrics

from schemas.outputs import ModelSnapshot
from stream_app.core.labels import Label
from stream_app.core.model import ColdStartPrior, OnlineModel

_EPS = 1e-15


def log_loss(y: int, p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return -math.log(p) if y else -math.log(1.0 - p)


class Learner:
    """Owns the model; one per deployment (the training topic has one partition).

    Champion/challenger: on every label, before learning, the model's own prediction and the
    cold-start prior's are scored on the same example (rolling AUC over ``rolling_window``).
    The model only takes over scoring (``model.ready``) once it has ``min_labels_ready``
    labels *and* ranks at least as well as the prior; it hands back if it falls behind.

    Judging the latest snapshot instead (2 us a label against River's 15 us) was tried: on
    the demo data it handed over at a worse moment (prequential AUC 0.847 against 0.851, a
    dip to 0.73 against recency's 0.81 after the hand-over), for about 1% of the run time.
    """

    def __init__(
        self, model: OnlineModel, snapshot_every: int = 500, rolling_window: int = 2000
    ) -> None:
        self.model = model
        self.snapshot_every = snapshot_every
        self.rolling_auc = metrics.RollingROCAUC(window_size=rolling_window)
        self.challenger_auc = metrics.RollingROCAUC(window_size=rolling_window)
        self.prior_auc = metrics.RollingROCAUC(window_size=rolling_window)
        self.prior = ColdStartPrior(model.features)
        self.detector = drift.ADWIN()
        self.n = 0
        self.positives = 0
        self.loss_sum = 0.0
        self.drifts = 0
        self._since_snapshot = 0

    def learn(self, label: Label) -> ModelSnapshot | None:
        """Evaluate then learn one example; returns a new snapshot (version + 1) every
        ``snapshot_every`` labels, else None."""
        y = label.label
        loss = log_loss(y, label.p)
        self.n += 1
        self.positives += y
        self.loss_sum += loss
        self.rolling_auc.update(bool(y), label.p)
        judging = self.n > self.model.min_labels_ready // 2  # no use judging an empty model
        if judging:
            vec = label.vector
            if vec is None:
                vec = [label.features[name] for name in self.model.features]
            self.challenger_auc.update(bool(y), self.model.predict_proba_one(label.features))
            self.prior_auc.update(bool(y), self.prior.score(vec))
        self.detector.update(loss)
        if self.detector.drift_detected:
            self.drifts += 1
        if label.train:
            self.model.learn_one(label.features, y)
        self._since_snapshot += 1
        if self._since_snapshot < self.snapshot_every:
            return None
        self._since_snapshot = 0
        # Judged here, not per label: scorers only change with a snapshot, and a rolling AUC
        # costs about 8 microseconds to read.
        if judging:
            self.model.beats_prior = self.challenger_auc.get() >= self.prior_auc.get()
        return self.model.snapshot(
            version=self.model.version + 1, metrics=self._metrics() if judging else {}
        )

    def _metrics(self) -> dict[str, float]:
        return {
            "rolling_auc": float(self.rolling_auc.get()),
            "challenger_auc": float(self.challenger_auc.get()),
            "prior_auc": float(self.prior_auc.get()),
        }

    def summary(self) -> dict[str, float]:
        return {
            "labels": float(self.n),
            "positives": float(self.positives),
            "logloss": self.loss_sum / self.n if self.n else math.nan,
            "rolling_auc": float(self.rolling_auc.get()) if self.n else math.nan,
            "challenger_auc": float(self.challenger_auc.get()) if self.n else math.nan,
            "prior_auc": float(self.prior_auc.get()) if self.n else math.nan,
            "drifts": float(self.drifts),
        }


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN if one class."""
    n = len(labels)
    pos = sum(labels)
    neg = n - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = sorted(range(n), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < n:
        j = i
        s = scores[order[i]]
        while j + 1 < n and scores[order[j + 1]] == s:
            j += 1
        avg_rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            if labels[order[k]]:
                rank_sum += avg_rank
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)

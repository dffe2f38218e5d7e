"""Why does the online learner trail a batch LR on the same features? (issue #19)

A replay harness: the engine runs once over a file (``evaluate`` with every resolved label
kept, in the order the learner saw them); then each *variant* of the learner re-learns that
same training stream, and is judged twice on the same footing as the engine:

- ``export``: the audience export's AUC at a cutoff TS (``--cutoff``), as in
  bench/baselines.py: every customer who bought before TS, scored at TS with the variant's
  last snapshot learned from labels released before TS (silence guard and hand-over
  included), against "no qualifying activity in (TS, TS + H]";
- ``prequential``: every label scored by the variant's snapshot in use at the label's
  scoring time (snapshots every 500 labels, at the release time of the label that completed
  them), the cold-start prior before the hand-over, as the engine does.

Only the learner changes; the examples, their times and features are the engine's. A
variant that feeds the learner differently (how many examples of one silence, their
weights) or starts it differently (a batch warm start) is a change to the training stream
or the initial snapshot, never to the engine. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.baselines import (
    DAY,
    churned,
    engine_vectors,
    fit_logistic,
    fit_pnbd,
    load,
    pnbd_expected,
    pnbd_p_alive,
    rfm_summary,
)
from stream_app.core.labels import Label
from stream_app.core.learner import Learner, roc_auc
from stream_app.core.model import ColdStartPrior, LinearScorer, OnlineModel, Scorer
from stream_app.offline.evaluate import EvaluateOptions, evaluate, parse_time
from stream_app.settings import load_settings


@dataclass
class Variant:
    """One way of learning the engine's training stream."""

    name: str
    optimizer: Callable[[], Any] | None = None  # None: the engine's SGD(learning_rate)
    max_per_silence: float = 2  # examples of one silence learned from (the engine's 2)
    learn_k: frozenset[int] | None = None  # instead: learn exactly these k of a silence
    weight: Callable[[int], float] = lambda k: 1.0  # weight of the k-th (1-based) of a silence
    scaler_warmup: int = 0  # examples that only fit the scaler before the model learns them
    warm_start: int = 0  # first labels fitted in batch as the initial snapshot
    refit_window: int = 0  # >0: at each snapshot, refit in batch on the last N examples
    refit_l2: float = 1e-3
    extra: dict[str, Any] = field(default_factory=dict)


def spell_index(labels: Sequence[Label]) -> list[int]:
    """k of each label: its rank among the snapshots of the user's silence it was taken in
    (1 for the first since the last activity), recovered from its features."""
    seen: dict[tuple[str, int], int] = {}
    order = sorted(range(len(labels)), key=lambda i: labels[i].scored_at)
    ks = [0] * len(labels)
    for i in order:
        lab = labels[i]
        last = round(lab.scored_at - lab.features["days_since_last_event"] * DAY)
        key = (lab.user_id, last)
        seen[key] = seen.get(key, 0) + 1
        ks[i] = seen[key]
    return ks


class Harness:
    def __init__(self, labels: list[Label], names: list[str], schema: str, horizon: float):
        self.labels = labels
        self.names = names
        self.schema = schema
        self.horizon = horizon
        self.k = spell_index(labels)
        self.release = [lab.scored_at + horizon for lab in labels]

    def run(self, v: Variant, until: float = math.inf) -> tuple[list[float], list[Scorer]]:
        """Learn the stream (labels released before ``until``); returns the snapshot times
        and the scorer each one put in use."""
        model = OnlineModel(self.names, self.schema)
        if v.optimizer is not None:
            make = v.optimizer

            def fresh() -> Any:
                from river import compose, linear_model, preprocessing

                return compose.Pipeline(
                    preprocessing.StandardScaler(),
                    linear_model.LogisticRegression(optimizer=make(), l2=model.l2),
                )

            model._fresh = fresh  # type: ignore[method-assign]
            model.pipeline = fresh()
        learner = Learner(model, example_dedup=0)
        prior = ColdStartPrior(self.names)
        times: list[float] = [-math.inf]
        scorers: list[Scorer] = [prior]
        start = 0
        if v.warm_start:
            start = self._warm_start(model, v.warm_start)
            snap = learner.snapshot()
            times.append(self.release[start - 1])
            scorers.append(LinearScorer(snap) if snap.ready else prior)
        buffer: list[tuple[dict[str, float], int, float]] = []
        scaler: Any = model.pipeline.steps["StandardScaler"]
        lr: Any = model.pipeline.steps["LogisticRegression"]
        weight = [1.0]

        window: deque[tuple[list[float], int]] = deque(maxlen=max(1, v.refit_window))

        def learn_one(x: Any, y: int) -> None:
            """The model step of Learner.learn, with a weight and the scaler warm-up."""
            model.n_labels += 1
            if v.refit_window:
                window.append(([x[n] for n in self.names], y))
                return
            x = dict(x)
            w = weight[0]
            scaler.learn_one(x)
            if model.n_labels > v.scaler_warmup:
                lr.learn_one(scaler.transform_one(x), bool(y), w=w)
                return
            buffer.append((x, y, w))
            if model.n_labels == v.scaler_warmup:  # the scaler has settled: learn them now
                for bx, by, bw in buffer:
                    lr.learn_one(scaler.transform_one(bx), bool(by), w=bw)
                buffer.clear()

        model.learn_one = learn_one  # type: ignore[method-assign]
        for i in range(start, len(self.labels)):
            if self.release[i] >= until:
                break
            k = self.k[i]
            weight[0] = v.weight(k)
            train = k in v.learn_k if v.learn_k is not None else k <= v.max_per_silence
            if v.refit_window and learner.since_snapshot == learner.snapshot_every - 1:
                self._refit(model, window, v.refit_l2)
            snap = learner.learn(_with_train(self.labels[i], train))
            if snap is not None:
                times.append(self.release[i])
                scorers.append(LinearScorer(snap) if snap.ready else prior)
        return times, scorers

    def _refit(self, model: OnlineModel, window: deque[tuple[list[float], int]], l2: float) -> None:
        """Newton's LR on the window, loaded into the pipeline (scaler and weights)."""
        ys = [y for _, y in window]
        if len(set(ys)) < 2:
            return
        x = np.array([r for r, _ in window])
        self._load_fit(model, fit_logistic(x, np.array(ys, dtype=float), l2=l2))

    def _load_fit(self, model: OnlineModel, fit: np.ndarray) -> None:
        d = len(self.names)
        w, mean, sd = fit[: d + 1], fit[d + 1 : 2 * d + 1], fit[2 * d + 1 :]
        scaler: Any = model.pipeline.steps["StandardScaler"]
        lr: Any = model.pipeline.steps["LogisticRegression"]
        for j, name in enumerate(self.names):
            scaler.counts[name] = model.n_labels
            scaler.means[name] = float(mean[j])
            scaler.vars[name] = float((sd[j] - 1e-12) ** 2)
            lr._weights[name] = float(w[j + 1]) if scaler.vars[name] > 0 else 0.0
        lr.intercept = float(w[0])

    def _warm_start(self, model: OnlineModel, n: int) -> int:
        """Batch-fit the first ``n`` learnable labels (Newton, the baselines' LR) into the
        pipeline: scaler from their mean and variance, weights from the fit."""
        idx = [i for i in range(n) if self.k[i] <= 2]
        x = np.array([[self.labels[i].features[f] for f in self.names] for i in idx])
        y = np.array([self.labels[i].label for i in idx], dtype=float)
        fit = fit_logistic(x, y, l2=1e-3)
        d = len(self.names)
        w, mean, sd = fit[: d + 1], fit[d + 1 : 2 * d + 1], fit[2 * d + 1 :]
        scaler: Any = model.pipeline.steps["StandardScaler"]
        lr: Any = model.pipeline.steps["LogisticRegression"]
        for j, name in enumerate(self.names):
            scaler.counts[name] = len(idx)
            scaler.means[name] = float(mean[j])
            scaler.vars[name] = float((sd[j] - 1e-12) ** 2)
            if scaler.vars[name] > 0:
                lr._weights[name] = float(w[j + 1])
        lr.intercept = float(w[0])
        model.n_labels = len(idx)
        model.beats_prior = True  # a batch fit on history is trusted at start-up
        return n


PNBD_FEATURES = ["pnbd_log_expected", "pnbd_logit_alive"]


def pnbd_columns(params: np.ndarray, vecs: np.ndarray, names: list[str], t: float) -> np.ndarray:
    """Pareto/NBD log E[purchases in the next t days] and logit P(alive) from the three
    numbers the engine already keeps per user (purchases, first and last purchase time):
    the streaming BTYD score of issue #19, read off a purchases-only feature vector."""
    n = np.expm1(vecs[:, names.index("log_purchases_total")])
    big_t = np.maximum(vecs[:, names.index("tenure_days")], 1e-3)
    tx = np.clip(big_t - vecs[:, names.index("days_since_last_purchase")], 0.0, big_t)
    x = np.maximum(np.round(n) - 1.0, 0.0)
    alive = np.clip(pnbd_p_alive(params, x, tx, big_t), 1e-9, 1 - 1e-9)
    expected = pnbd_expected(params, x, tx, big_t, t)
    return np.column_stack([np.log(1e-3 + expected), np.log(alive / (1 - alive))])


def with_pnbd(labels: list[Label], names: list[str], params: np.ndarray, t: float) -> list[Label]:
    from dataclasses import replace

    vecs = np.array([[lab.features[n] for n in names] for lab in labels])
    cols = pnbd_columns(params, vecs, names, t)
    return [
        replace(lab, features={**lab.features, **dict(zip(PNBD_FEATURES, c, strict=True))},
                vector=None)
        for lab, c in zip(labels, cols.tolist(), strict=True)
    ]  # fmt: skip


def _with_train(lab: Label, train: bool) -> Label:
    from dataclasses import replace

    return replace(lab, train=train)


def prequential(h: Harness, times: list[float], scorers: list[Scorer]) -> dict[str, float]:
    ys, ps, learned = [], [], []
    for lab in h.labels:
        j = bisect.bisect_right(times, lab.scored_at) - 1
        scorer = scorers[j]
        vec = [lab.features[n] for n in h.names]
        ys.append(lab.label)
        ps.append(scorer.score(vec))
        learned.append(scorer.version > 0 or isinstance(scorer, LinearScorer))
    idx = [i for i, v in enumerate(learned) if v]
    return {
        "auc": round(roc_auc(ys, ps), 6),
        "auc_learned": round(roc_auc([ys[i] for i in idx], [ps[i] for i in idx]), 6),
        "labels_learned": len(idx),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--cutoff", help="RFC 3339 time of the audience export")
    parser.add_argument("--horizon-days", type=float, default=30.0)
    parser.add_argument("--purchases-only", action="store_true")
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    horizon = args.horizon_days * DAY
    at = parse_time(args.cutoff) if args.cutoff else None
    settings = load_settings(
        horizon=horizon, label_activity="purchase" if args.purchases_only else "session"
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine_file = args.file
        if args.purchases_only:
            engine_file = Path(tmp) / "purchases.jsonl"
            with engine_file.open("wb") as fh:
                customers = load(args.file, True, fh)
        else:
            customers = load(args.file, False)
        scores_out = Path(tmp) / "scores.jsonl"
        run = evaluate(
            engine_file,
            settings,
            EvaluateOptions(keep_labels=True, scores_at=at, scores_out=scores_out if at else None),
        )
        vecs = engine_vectors(engine_file, [at])[0] if at else {}
        engine_export = (
            {r["user_id"]: r["p"] for r in map(json.loads, scores_out.read_text().splitlines())}
            if at
            else {}
        )
    from stream_app.core.config import EngineConfig
    from stream_app.core.features import feature_names, schema_hash

    names = feature_names(EngineConfig().half_lives)
    h = Harness(run.resolved, names, schema_hash(names), horizon)
    ids: list[str] = []
    labels: list[int] = []
    if at is not None:
        ids = sorted(u for u, c in customers.items() if rfm_summary(c, at) is not None)
        labels = [churned(customers[u], at, at + horizon) for u in ids]
    out: dict[str, Any] = {
        "file": str(args.file),
        "engine": {
            "prequential_auc": run.summary["auc"],
            "auc_learned": run.summary["auc_learned"],
            "export_auc": round(roc_auc(labels, [engine_export[u] for u in ids]), 4)
            if at
            else None,
        },
    }
    print(json.dumps(out), flush=True)
    from river import optim

    variants = [
        Variant("engine (SGD 0.005, 2 per silence)"),
        Variant("adam 0.001", optimizer=lambda: optim.Adam(0.001)),
        Variant("adagrad 0.02", optimizer=lambda: optim.AdaGrad(0.02)),
        Variant(
            "sgd 0.05 inverse scaling",
            optimizer=lambda: optim.SGD(optim.schedulers.InverseScaling(0.05, 0.5)),
        ),
        Variant("sgd 0.02", optimizer=lambda: optim.SGD(0.02)),
        Variant("adam 0.005", optimizer=lambda: optim.Adam(0.005)),
        Variant("adagrad 0.1", optimizer=lambda: optim.AdaGrad(0.1)),
        Variant("batch refit every snapshot, last 5000", refit_window=5000),
        Variant("batch refit every snapshot, last 20000", refit_window=20000),
        Variant("batch refit every snapshot, last 50000", refit_window=50000),
        Variant("scaler warm-up 500", scaler_warmup=500),
        Variant("scaler warm-up 2000", scaler_warmup=2000),
        Variant("every example of a silence", max_per_silence=math.inf),
        Variant("every example, weight 1/k", max_per_silence=math.inf, weight=lambda k: 1.0 / k),
        Variant("one per silence", max_per_silence=1),
        Variant("silence k 1+2+4", learn_k=frozenset({1, 2, 4})),
        Variant("silence k 1+3", learn_k=frozenset({1, 3})),
        Variant("silence k 1+2+4+8", learn_k=frozenset({1, 2, 4, 8})),
        Variant("warm start: batch fit of the first 2000 labels", warm_start=2000),
        Variant("warm start: batch fit of the first 5000 labels", warm_start=5000),
    ]
    wanted = set(filter(None, args.variants.split(",")))
    for v in variants:
        if wanted and v.name not in wanted:
            continue
        row: dict[str, Any] = {"variant": v.name}
        times, scorers = h.run(v)
        row.update(prequential(h, times, scorers))
        if at is not None:
            times, scorers = h.run(v, until=at)
            scorer = scorers[-1]
            p = [scorer.score(vecs[u]) for u in ids]
            row["export_auc"] = round(roc_auc(labels, p), 4)
        print(json.dumps(row), flush=True)
    if at is not None and args.purchases_only and (not wanted or "pnbd" in wanted):
        # Population parameters from the state at TS (no label used), as a periodic refit
        # shipped in the snapshot would have them.
        now = np.array([vecs[u] for u in ids])
        summ = np.array([rfm_summary(customers[u], at) for u in ids], dtype=float)
        params = fit_pnbd(summ[:, 0], summ[:, 1], summ[:, 2])
        names2 = names + PNBD_FEATURES
        h2 = Harness(with_pnbd(h.labels, names, params, horizon / DAY), names2, "pnbd", horizon)
        ext = np.hstack([now, pnbd_columns(params, now, names, horizon / DAY)])
        for v in (Variant("pnbd"),):
            times, scorers = h2.run(v)
            row = {"variant": "+ Pareto/NBD features", **prequential(h2, times, scorers)}
            times, scorers = h2.run(v, until=at)
            row["export_auc"] = round(
                roc_auc(labels, [scorers[-1].score(r) for r in ext.tolist()]), 4
            )
            print(json.dumps(row), flush=True)
    if at is not None:
        # The batch diagnostic: Newton's LR on exactly the examples the engine learned
        # before TS (and on all of them), applied to the export vectors, guard included.
        learned = [i for i, r in enumerate(h.release) if r < at and h.k[i] <= 2]
        for name, idx in (
            ("batch LR on the engine's learned examples", learned),
            ("batch LR on every example", [i for i, r in enumerate(h.release) if r < at]),
        ):
            x = np.array([[h.labels[i].features[f] for f in names] for i in idx])
            y = np.array([h.labels[i].label for i in idx], dtype=float)
            fit = fit_logistic(x, y, l2=1e-3)
            now = np.array([vecs[u] for u in ids])
            d = len(names)
            w, mean, sd = fit[: d + 1], fit[d + 1 : 2 * d + 1], fit[2 * d + 1 :]
            z = (now - mean) / sd
            raw = 1.0 / (1.0 + np.exp(-(w[0] + z @ w[1:])))
            prior = ColdStartPrior(names)
            silence = names.index("days_since_last_event")
            limit = mean[silence] + 2 * (sd[silence] - 1e-12)
            guarded = [
                max(p, prior.score(v)) if v[silence] > limit else p
                for p, v in zip(raw.tolist(), now.tolist(), strict=True)
            ]
            print(
                json.dumps(
                    {
                        "variant": name,
                        "examples": len(idx),
                        "export_auc": round(roc_auc(labels, guarded), 4),
                        "export_auc_no_guard": round(roc_auc(labels, raw.tolist()), 4),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make baselines`: the engine's audience export against the classical churn baselines.

At a cutoff time TS every method scores every customer who bought before TS, using only data
before TS; a customer churned (label 1) if they have no qualifying activity in (TS, TS + H]
(any event, or with ``--purchases-only`` a purchase). AUC of each score against that label:

- ``engine``: ``stream-app evaluate --scores-at TS`` (the online model as learned up to TS);
- ``recency``: days since the last qualifying activity;
- ``bgnbd_alive`` / ``bgnbd_expected``: the BG/NBD model (Fader, Hardie & Lee 2005) fitted by
  maximum likelihood on the purchases before TS: 1 - P(alive), and minus the expected number
  of purchases in the next H;
- ``rfm_logistic``: a logistic regression on recency, frequency, monetary value and tenure,
  trained in batch on the window before (features at TS - H, labels in (TS - H, TS]), then
  applied at TS;
- ``pnbd_expected``: minus the Pareto/NBD model's expected purchases in the next H
  (Schmittlein, Morrison & Colombo 1987), fitted by maximum likelihood like BG/NBD;
- ``engine_features_logistic``: the same batch logistic regression as ``rfm_logistic``
  (training window, labels, penalty) on every feature of the engine's own feature space:
  what the online learner could reach if it learned like a batch fit (issue #19);
- ``rfm_gbm``: gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the
  same features and the same training window: the batch model that can learn interactions
  and thresholds the linear one cannot.

Every AUC comes with a 95% bootstrap interval (``auc_95ci``, customers resampled) and the
engine's difference to each baseline with a paired one (``engine_minus_baseline_95ci``).

``--purchases-only`` drops every other event first (the engine sees the same purchases-only
file), which is what a public purchase log looks like. Writes one JSON line and, with
``--out``, bench/results/baselines*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from scipy import optimize, special, stats

from stream_app.core.config import EngineConfig
from stream_app.core.features import FeatureSpace, UserState, event_hash
from stream_app.core.learner import roc_auc
from stream_app.ingest import Decoder
from stream_app.jsonl import iter_lines
from stream_app.offline.evaluate import EvaluateOptions, evaluate, parse_time
from stream_app.settings import load_settings

DAY = 86400.0


@dataclass
class Customer:
    events: list[float] = field(default_factory=list)  # qualifying-activity times
    purchases: list[tuple[float, float]] = field(default_factory=list)  # (ts, revenue)


def load(
    path: Path, purchases_only: bool, purchase_lines: IO[bytes] | None = None
) -> dict[str, Customer]:
    """Customers' activity from a file, decoded once; ``purchase_lines`` also receives every
    valid purchase line as it is (the engine's input for a purchases-only comparison)."""
    decoder = Decoder(1 << 20, math.inf, lambda: 0.0)
    customers: dict[str, Customer] = defaultdict(Customer)
    seen: set[str] = set()
    for _, raw in iter_lines(path):
        d = decoder.decode(raw)
        e = d.event
        if e is None:
            continue
        if purchase_lines is not None and e.event_type == "purchase":
            purchase_lines.write(raw + b"\n")
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        c = customers[e.user_id]
        if e.event_type == "purchase":
            c.purchases.append((d.ts, float(e.revenue or 0.0)))
            c.events.append(d.ts)
        elif not purchases_only:
            c.events.append(d.ts)
    return customers


# --- BG/NBD ---------------------------------------------------------------------------
def rfm_summary(c: Customer, at: float) -> tuple[int, float, float] | None:
    """(x repeat purchases, t_x, T) in days for purchases before ``at``; None if none."""
    times = sorted(ts for ts, _ in c.purchases if ts < at)
    if not times:
        return None
    first = times[0]
    # Purchases on the same day count once, as in the model's usual calibration.
    days = sorted({math.floor((t - first) / DAY) for t in times})
    return len(days) - 1, float(days[-1]), (at - first) / DAY


def bgnbd_loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> float:
    r, alpha, a, b = np.exp(params)
    common = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
    )
    term1 = -(r + x) * np.log(alpha + big_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-12))
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
        )
    extra = np.where(x > 0, np.logaddexp(0.0, log_ratio), 0.0)
    return float(-(common + term1 + extra).sum())


def fit_bgnbd(x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (r, alpha, a, b)."""
    best = None
    for start in ([0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, -1.0, 1.0]):
        res = optimize.minimize(
            bgnbd_loglik, np.array(start), args=(x, tx, big_t), method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-8},
        )  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return np.exp(best.x)


def _dead_odds(params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """P(dropped out) / P(alive) given the history; 0 without a repeat purchase."""
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        odds = (a / np.maximum(b + x - 1, 1e-12)) * ((alpha + big_t) / (alpha + tx)) ** (r + x)
    return np.where(x > 0, odds, 0.0)


def bgnbd_p_alive(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + _dead_odds(params, x, tx, big_t)))


def bgnbd_expected(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, t: float
) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10)."""
    r, alpha, a, b = params
    z = t / (alpha + big_t + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    head = (a + b + x - 1) / (a - 1)
    body = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp
    return np.asarray(head * body / (1.0 + _dead_odds(params, x, tx, big_t)))


# --- Pareto/NBD -----------------------------------------------------------------------
def _pnbd_log_a0(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """log A0 of Fader & Hardie's note on the Pareto/NBD likelihood (2005, eq. 19-20), in
    logs so that (alpha + T)^(r + s + x) cannot overflow; -inf when t_x = T (A0 = 0)."""
    r, alpha, s, beta = params
    rsx = r + s + x
    if alpha >= beta:
        a2, z_tx, z_t, base_tx, base_t = (
            s + 1,
            alpha - beta,
            alpha - beta,
            alpha + tx,
            alpha + big_t,
        )
    else:
        a2, z_tx, z_t, base_tx, base_t = r + x, beta - alpha, beta - alpha, beta + tx, beta + big_t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l_tx = np.log(special.hyp2f1(rsx, a2, rsx + 1, z_tx / base_tx)) - rsx * np.log(base_tx)
        l_t = np.log(special.hyp2f1(rsx, a2, rsx + 1, z_t / base_t)) - rsx * np.log(base_t)
        return np.asarray(l_tx + np.log1p(-np.exp(np.minimum(l_t - l_tx, 0.0))))


def pnbd_loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> float:
    """Minus the Pareto/NBD log-likelihood (Schmittlein, Morrison & Colombo 1987), log
    parameters (r, alpha, s, beta)."""
    r, alpha, s, beta = p = np.exp(params)
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    gone = -(r + x) * np.log(alpha + big_t) - s * np.log(beta + big_t)
    alive = np.log(s / (r + s + x)) + _pnbd_log_a0(p, x, tx, big_t)
    ll = head + np.logaddexp(gone, alive)
    return float(-ll.sum()) if np.all(np.isfinite(ll)) else math.inf


def fit_pnbd(x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (r, alpha, s, beta), as lifetimes' ParetoNBDFitter (no penalty).
    Written here rather than installed: lifetimes 0.11.3 needs pandas and autograd and
    predates numpy 2 (the project pins numpy 2)."""
    best = None
    for start in ([0.0, 2.0, 0.0, 2.0], [-1.0, 3.0, -1.0, 4.0]):
        # Bounded (each parameter in [e^-5, e^7]): with little dropout in the data the
        # likelihood has a flat ridge towards s, beta -> infinity (no dropout, NBD), where
        # the hypergeometric function gets slow; an unbounded search walked it for minutes
        # on the generated purchases.
        res = optimize.minimize(
            pnbd_loglik, np.array(start), args=(x, tx, big_t), method="Nelder-Mead",
            bounds=[(-5.0, 7.0)] * 4, options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-8},
        )  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return np.exp(best.x)


def pnbd_p_alive(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """P(still alive | x, t_x, T) (Fader & Hardie's note, eq. 23)."""
    r, alpha, s, beta = params
    log_odds = (
        np.log(s / (r + s + x))
        + (r + x) * np.log(alpha + big_t)
        + s * np.log(beta + big_t)
        + _pnbd_log_a0(params, x, tx, big_t)
    )
    return np.asarray(1.0 / (1.0 + np.exp(log_odds)))


def pnbd_expected(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, t: float
) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (Schmittlein et al. 1987; lifetimes'
    conditional_expected_number_of_purchases_up_to_time)."""
    r, alpha, s, beta = params
    rate = (r + x) * (beta + big_t) / ((alpha + big_t) * (s - 1))
    return np.asarray(
        rate * (1.0 - ((beta + big_t) / (beta + big_t + t)) ** (s - 1))
        * pnbd_p_alive(params, x, tx, big_t)
    )  # fmt: skip


# --- RFM logistic regression ----------------------------------------------------------
def rfm_features(c: Customer, at: float) -> list[float] | None:
    bought = [(ts, rev) for ts, rev in c.purchases if ts < at]
    if not bought:
        return None
    last_event = max(ts for ts in c.events if ts < at)
    first = min(ts for ts, _ in bought)
    return [
        math.log1p((at - last_event) / DAY),
        math.log1p((at - max(ts for ts, _ in bought)) / DAY),
        math.log1p(len(bought)),
        math.log1p(sum(rev for _, rev in bought) / len(bought)),
        math.log1p((at - first) / DAY),
    ]


def fit_logistic(features: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Newton's method on the L2-penalised log loss (intercept unpenalised)."""
    mean, sd = features.mean(axis=0), features.std(axis=0) + 1e-12
    z = np.hstack([np.ones((len(features), 1)), (features - mean) / sd])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        grad = z.T @ (p - y) / len(y) + penalty * w
        hess = (z.T * (p * (1 - p))) @ z / len(y) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return np.concatenate([w, mean, sd])


def predict_logistic(model: np.ndarray, features: np.ndarray) -> np.ndarray:
    k = features.shape[1]
    w, mean, sd = model[: k + 1], model[k + 1 : 2 * k + 1], model[2 * k + 1 :]
    z = np.hstack([np.ones((len(features), 1)), (features - mean) / sd])
    return np.asarray(1.0 / (1.0 + np.exp(-z @ w)))


def engine_vectors(path: Path, times: list[float]) -> list[dict[str, list[float]]]:
    """The engine's own feature vector (default feature space) of every user seen before
    each of ``times``, as of that time: what the online model sees, for a batch model.
    One pass over a file in time order, applying each event once (duplicates skipped)."""
    config = EngineConfig()
    space = FeatureSpace(config.half_lives, config.session_gap, config.dedup_capacity)
    decoder = Decoder(1 << 20, math.inf, lambda: 0.0)
    states: dict[str, UserState] = {}
    out: list[dict[str, list[float]]] = []
    pending = sorted(times)

    def take(at: float) -> None:
        out.append({u: st.vector(at, space) for u, st in states.items()})

    for _, raw in iter_lines(path):
        d = decoder.decode(raw)
        e = d.event
        if e is None:
            continue
        while pending and d.ts >= pending[0]:
            take(pending.pop(0))
        st = states.get(e.user_id)
        if st is None:
            st = states[e.user_id] = space.new_state(e.user_id)
        h = event_hash(e.event_id)
        if not st.seen(h):
            st.apply(e, d.ts, h, space)
    while pending:
        take(pending.pop(0))
    return [out[sorted(times).index(t)] for t in times]


def fit_predict_gbm(train: np.ndarray, y: np.ndarray, now: np.ndarray) -> np.ndarray:
    """Boosted trees with early stopping on a fifth of the training window (never on the
    customers being scored), so the comparison needs no hand tuning."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    gbm = HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=500, max_leaf_nodes=15, min_samples_leaf=20,
        early_stopping=True, validation_fraction=0.2, n_iter_no_change=20, random_state=0,
    )  # fmt: skip
    gbm.fit(train, y)
    return np.asarray(gbm.predict_proba(now)[:, 1])


def in_sample_ceiling(features: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """Out-of-fold AUC of the RFM regression fitted to the scored customers' *own* labels
    (shuffled k-fold). Not a method, since it sees the answers: a reference for how much
    ranking these features hold for these customers at all."""
    order = np.random.default_rng(0).permutation(len(y))
    oof = np.empty(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        oof[test] = predict_logistic(fit_logistic(features[train], y[train]), features[test])
    return fast_auc(y, oof)


# --- the comparison -------------------------------------------------------------------
def churned(c: Customer, start: float, end: float) -> int:
    return 0 if any(start < ts <= end for ts in c.events) else 1


def engine_scores(path: Path, at: float, horizon: float, purchases_only: bool) -> dict[str, float]:
    settings = load_settings(
        horizon=horizon, label_activity="purchase" if purchases_only else "session"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.jsonl"
        evaluate(path, settings, EvaluateOptions(scores_at=at, scores_out=out))
        return {row["user_id"]: row["p"] for row in map(json.loads, out.read_text().splitlines())}


def compare(path: Path, at: float, horizon: float, purchases_only: bool) -> dict[str, Any]:
    if purchases_only:  # the engine sees exactly the purchases the baselines see
        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
            customers = load(path, purchases_only, fh)
            engine_file = Path(fh.name)
    else:
        customers = load(path, purchases_only)
        engine_file = path
    try:
        engine = engine_scores(engine_file, at, horizon, purchases_only)
        vec_train, vec_now = engine_vectors(engine_file, [at - horizon, at])
    finally:
        if engine_file != path:
            engine_file.unlink()

    ids = sorted(u for u, c in customers.items() if rfm_summary(c, at) is not None)
    labels = [churned(customers[u], at, at + horizon) for u in ids]
    summ = np.array([rfm_summary(customers[u], at) for u in ids], dtype=float)
    x, tx, big_t = summ[:, 0], summ[:, 1], summ[:, 2]
    params = fit_bgnbd(x, tx, big_t)
    pnbd = fit_pnbd(x, tx, big_t)

    train_at = at - horizon
    train_ids = [u for u in ids if rfm_summary(customers[u], train_at) is not None]
    train = np.array([rfm_features(customers[u], train_at) for u in train_ids])
    train_y = np.array([churned(customers[u], train_at, at) for u in train_ids], dtype=float)
    now = np.array([rfm_features(customers[u], at) for u in ids])
    rfm_now = predict_logistic(fit_logistic(train, train_y), now)
    # The same training window and labels, on the engine's own features.
    eng_train = np.array([vec_train[u] for u in train_ids])
    eng_now = np.array([vec_now[u] for u in ids])
    engine_lr = predict_logistic(fit_logistic(eng_train, train_y), eng_now)

    recency = [at - max(ts for ts in customers[u].events if ts < at) for u in ids]
    scores: dict[str, list[float]] = {
        "engine": [engine.get(u, math.nan) for u in ids],
        "recency": recency,
        "bgnbd_alive": list(1.0 - bgnbd_p_alive(params, x, tx, big_t)),
        "bgnbd_expected": list(-bgnbd_expected(params, x, tx, big_t, horizon / DAY)),
        "pnbd_expected": list(-pnbd_expected(pnbd, x, tx, big_t, horizon / DAY)),
        "rfm_logistic": list(rfm_now),
        "engine_features_logistic": list(engine_lr),
        "rfm_gbm": list(fit_predict_gbm(train, train_y, now)),
    }
    missing = sum(math.isnan(v) for v in scores["engine"])
    return {
        "file": str(path),
        "purchases_only": purchases_only,
        "cutoff": at,
        "horizon_days": horizon / DAY,
        "customers": len(ids),
        "churned": sum(labels),
        "rfm_training_customers": len(train_ids),
        "engine_missing": missing,
        "bgnbd_params": dict(zip(("r", "alpha", "a", "b"), params.round(4).tolist(), strict=True)),
        "pnbd_params": dict(zip(("r", "alpha", "s", "beta"), pnbd.round(4).tolist(), strict=True)),
        "auc": {name: round(roc_auc(labels, vals), 4) for name, vals in scores.items()},
        "auc_95ci": bootstrap_intervals(labels, scores),
        "engine_minus_baseline_95ci": paired_bootstrap(labels, scores) if not missing else {},
        "in_sample_ceiling_rfm_logistic": round(in_sample_ceiling(now, np.asarray(labels)), 4),
        "in_sample_ceiling_engine_features": round(
            in_sample_ceiling(eng_now, np.asarray(labels)), 4
        ),
    }


def fast_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by average ranks (ties count half), vectorised for the bootstrap."""
    pos = labels.sum()
    neg = len(labels) - pos
    ranks = stats.rankdata(scores)
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bootstrap_intervals(
    labels: list[int], scores: dict[str, list[float]], rounds: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95% interval of each score's own AUC over customers resampled with replacement."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    cols = {k: np.asarray(v) for k, v in scores.items() if not np.isnan(v).any()}
    aucs: dict[str, list[float]] = {k: [] for k in cols}
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        for k, v in cols.items():
            aucs[k].append(fast_auc(y[i], v[i]))
    return {k: np.percentile(v, [2.5, 97.5]).round(4).tolist() for k, v in aucs.items()}


def paired_bootstrap(
    labels: list[int], scores: dict[str, list[float]], rounds: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95% interval of AUC(engine) - AUC(baseline) over customers resampled with
    replacement (the same resample for both scores): how much of a gap is noise."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    cols = {k: np.asarray(v) for k, v in scores.items()}
    diffs: dict[str, list[float]] = {k: [] for k in cols if k != "engine"}
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        yi = y[i]
        engine = fast_auc(yi, cols["engine"][i])
        for k in diffs:
            diffs[k].append(engine - fast_auc(yi, cols[k][i]))
    return {k: np.percentile(v, [2.5, 97.5]).round(4).tolist() for k, v in diffs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--cutoff", required=True, help="RFC 3339 time TS")
    parser.add_argument("--horizon-days", type=float, default=30.0)
    parser.add_argument("--purchases-only", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the result to this JSON file")
    args = parser.parse_args()
    result = compare(
        args.file, parse_time(args.cutoff), args.horizon_days * DAY, args.purchases_only
    )
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The classical baselines of bench/baselines.py are what they claim to be: BG/NBD recovers
the parameters of data drawn from BG/NBD, and the batch logistic regression recovers known
weights. (A wrong baseline would make the engine look better than it is.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.baselines import (
    bgnbd_expected,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_logistic,
    fit_pnbd,
    pnbd_expected,
    pnbd_loglik,
    pnbd_p_alive,
    predict_logistic,
)

TRUE = (0.243, 4.414, 0.793, 2.426)  # r, alpha, a, b fitted to CDNOW by Fader et al. (2005)


def simulate(n: int, big_t: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD's story: purchase rate ~ Gamma(r, alpha), after each repeat purchase the
    customer drops out with probability p ~ Beta(a, b)."""
    rng = np.random.default_rng(seed)
    r, alpha, a, b = TRUE
    xs, txs = [], []
    for lam, p in zip(rng.gamma(r, 1.0 / alpha, n), rng.beta(a, b, n), strict=True):
        t = tx = 0.0
        x = 0
        while True:
            t += rng.exponential(1.0 / lam)
            if t > big_t:
                break
            x, tx = x + 1, t
            if rng.random() < p:
                break
        xs.append(x)
        txs.append(tx)
    return np.array(xs, float), np.array(txs), np.full(n, big_t)


def test_bgnbd_fit_recovers_the_generating_parameters() -> None:
    x, tx, big_t = simulate(20000, 39.0, seed=2)
    fitted = fit_bgnbd(x, tx, big_t)
    for got, want in zip(fitted, TRUE, strict=True):
        assert got == pytest.approx(want, rel=0.15)


def test_bgnbd_alive_and_expected_purchases_behave() -> None:
    params = np.array(TRUE)
    x = np.array([0.0, 2.0, 2.0, 10.0])
    tx = np.array([0.0, 30.0, 5.0, 38.0])
    big_t = np.full(4, 39.0)
    alive = bgnbd_p_alive(params, x, tx, big_t)
    assert alive[0] == 1.0  # no repeat purchase: cannot have dropped out yet
    assert alive[1] > alive[2]  # same frequency, more recent: more likely alive
    expected = bgnbd_expected(params, x, tx, big_t, 39.0)
    assert np.all(expected >= 0) and expected[3] > expected[1] > expected[2]
    # With t -> 0 nobody is expected to buy.
    assert np.allclose(bgnbd_expected(params, x, tx, big_t, 1e-9), 0.0, atol=1e-8)


def test_batch_logistic_regression_recovers_weights() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(20000, 2)) * [1.0, 3.0] + [5.0, -1.0]
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 + 1.5 * z[:, 0] - 1.0 * z[:, 1])))).astype(float)
    model = fit_logistic(features, y, l2=0.0)
    assert model[:3] == pytest.approx([0.5, 1.5, -1.0], abs=0.08)
    p = predict_logistic(model, features)
    assert math.isclose(p.mean(), y.mean(), abs_tol=0.01)


PNBD_TRUE = (0.55, 10.58, 0.61, 11.67)  # r, alpha, s, beta fitted to CDNOW (weeks), 2005 note


def simulate_pnbd(n: int, big_t: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pareto/NBD's story: purchase rate ~ Gamma(r, alpha) while alive, lifetime ~
    Exponential(mu) with mu ~ Gamma(s, beta)."""
    rng = np.random.default_rng(seed)
    r, alpha, s, beta = PNBD_TRUE
    lam = rng.gamma(r, 1.0 / alpha, n)
    end = np.minimum(rng.exponential(1.0 / rng.gamma(s, 1.0 / beta, n)), big_t)
    xs, txs = [], []
    for rate, stop in zip(lam, end, strict=True):
        t = tx = 0.0
        x = 0
        while (t := t + rng.exponential(1.0 / rate)) <= stop:
            x, tx = x + 1, t
        xs.append(x)
        txs.append(tx)
    return np.array(xs, float), np.array(txs), np.full(n, big_t)


def test_pnbd_fit_recovers_the_generating_parameters() -> None:
    x, tx, big_t = simulate_pnbd(10000, 39.0, seed=3)
    fitted = fit_pnbd(x, tx, big_t)
    for got, want in zip(fitted, PNBD_TRUE, strict=True):
        assert got == pytest.approx(want, rel=0.1)


def test_pnbd_likelihood_and_p_alive_match_a_monte_carlo_integral() -> None:
    """The closed form (both branches of A0: alpha >= beta and alpha < beta) against the
    individual-level likelihood averaged over draws of (lambda, mu)."""
    rng = np.random.default_rng(0)
    for params in (PNBD_TRUE, (0.55, 20.0, 0.61, 5.0)):
        r, alpha, s, beta = params
        lam = rng.gamma(r, 1.0 / alpha, 1_000_000)
        mu = rng.gamma(s, 1.0 / beta, 1_000_000)
        for x, tx, big_t in ((2, 30.0, 39.0), (0, 0.0, 39.0), (5, 10.0, 39.0)):
            alive = lam**x * np.exp(-(lam + mu) * big_t)
            gone = (
                lam**x * mu / (lam + mu) * (np.exp(-(lam + mu) * tx) - np.exp(-(lam + mu) * big_t))
            )
            args = (np.array([float(x)]), np.array([tx]), np.array([big_t]))
            loglik = -pnbd_loglik(np.log(np.array(params)), *args)
            assert loglik == pytest.approx(math.log((alive + gone).mean()), abs=0.01)
            p_alive = pnbd_p_alive(np.array(params), *args)[0]
            assert p_alive == pytest.approx(alive.mean() / (alive + gone).mean(), abs=0.005)


def test_pnbd_expected_purchases_behave() -> None:
    params = np.array(PNBD_TRUE)
    x = np.array([0.0, 2.0, 2.0, 10.0])
    tx = np.array([0.0, 30.0, 5.0, 38.0])
    expected = pnbd_expected(params, x, tx, np.full(4, 39.0), 39.0)
    assert np.all(expected >= 0) and expected[3] > expected[1] > expected[2]


def test_engine_features_anchor_sees_the_engines_own_vectors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The batch anchor on the engine's features must read exactly what the engine computes
    for a user at the cutoff (the audience export's vector), or it would compare the
    learner with a model on other data."""
    from datetime import UTC, datetime

    from bench.baselines import engine_vectors
    from stream_app.core.config import EngineConfig
    from stream_app.core.engine import Engine
    from stream_app.ingest import Decoder
    from stream_app.jsonl import iter_lines
    from stream_app.offline.generate import Generator

    path = tmp_path / "events.jsonl"
    with path.open("w") as fh:
        Generator(300, 20, 5, datetime(2026, 1, 5, tzinfo=UTC), duplicates=0.05).run(fh)
    at = datetime(2026, 1, 15, 12, tzinfo=UTC).timestamp()  # mid-day: events around it
    (got,) = engine_vectors(path, [at])
    engine = Engine(EngineConfig())
    store: dict = {}  # type: ignore[type-arg]
    clock = engine.new_clock()
    decoder = Decoder(1 << 20, math.inf, lambda: 0.0)
    for _, raw in iter_lines(path):
        d = decoder.decode(raw)
        if d.event is not None and d.ts < at:
            engine.process(store, clock, d.event, d.ts)
    assert set(got) == set(store) and len(got) > 100
    for uid, state in store.items():
        assert got[uid] == state.vector(at, engine.space), uid

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

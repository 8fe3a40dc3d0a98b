"""A training step, forward + backward, of lastlayer against PyTorch eager (issue 29): MLP
784-1024-1024-10 at batch 128 and CNN c32-c64 on 28x28 at batch 64 (the `lastlayer train`
CNN: (Conv 3x3, ReLU, MaxPool 2x2) x 2, Dense 1600-128, ReLU, Dense 128-10), at 1 and 2
threads. Each side runs in a process of its own (bench/step_worker.py, started with
sys.executable), so that two thread pools never share a process and spin against each
other.

Correctness first: both sides get the same float64 weights and batch and must agree on the
loss and every gradient (relative 1e-9). Then float32 steps: each side's median of 40 steps
after 5 warm-up steps, the two sides alternating process by process, REPEATS times; the
median of those medians, the ratio lastlayer / PyTorch, and the load averages at the end
of the row's runs (the machine's other work takes cores from the second thread).
Skipped where torch is not installed (``pip install torch``)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPORT

WORKER = Path(__file__).with_name("step_worker.py")
REPEATS = 3
MODELS = {"mlp": (128, [(1024, 784), (1024, 1024), (10, 1024)]),
          "cnn": (64, [(32, 1, 3, 3), (64, 32, 3, 3), (128, 1600), (10, 128)])}


def _inputs(model: str, path: Path) -> None:
    """The weights (He-normal, small biases) and batch both sides start from."""
    rng = np.random.default_rng(0)
    batch, shapes = MODELS[model]
    data = {"layers": len(shapes), "labels": rng.integers(0, 10, batch)}
    data["x"] = rng.standard_normal((batch, 784) if model == "mlp" else (batch, 1, 28, 28))
    for i, shape in enumerate(shapes):
        fan_in = int(np.prod(shape[1:]))
        data[f"W{i}"] = rng.standard_normal(shape) * np.sqrt(2 / fan_in)
        data[f"b{i}"] = 0.01 * rng.standard_normal(shape[0])
    np.savez(path, **data)


def _run(side: str, model: str, threads: int, mode: str, src: Path, dst: Path) -> dict:
    subprocess.run([sys.executable, str(WORKER), side, model, str(threads), mode, str(src),
                    str(dst)], check=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})
    with np.load(dst) as f:
        return dict(f)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_step_against_pytorch(benchmark, tmp_path, model, threads):
    pytest.importorskip("torch")
    src = tmp_path / "inputs.npz"
    _inputs(model, src)

    # correctness first: float64, the same weights and batch
    ours = _run("lastlayer", model, threads, "check", src, tmp_path / "ours.npz")
    theirs = _run("torch", model, threads, "check", src, tmp_path / "theirs.npz")
    assert float(ours["loss"]) == pytest.approx(float(theirs["loss"]), rel=1e-12)
    for name in theirs:
        if name != "loss":
            scale = np.abs(theirs[name]).max()
            assert np.abs(ours[name] - theirs[name]).max() <= 1e-9 * scale, name

    medians = {"lastlayer": [], "torch": []}
    loads = []

    def measure():
        for _ in range(REPEATS):  # the two sides alternate, process by process
            for side in medians:
                out = _run(side, model, threads, "time", src, tmp_path / f"{side}.npz")
                medians[side].append(float(np.median(out["times"])))
                loads.append(float(out["load"][0]))

    benchmark.pedantic(measure, rounds=1, iterations=1)  # the steps are timed in the workers
    ms = {side: 1e3 * statistics.median(v) for side, v in medians.items()}
    ratio = ms["lastlayer"] / ms["torch"]
    benchmark.extra_info.update({"lastlayer_ms": ms["lastlayer"], "torch_ms": ms["torch"],
                                 "ratio": ratio, "load": loads})
    name = ("MLP 784-1024-1024-10 b128" if model == "mlp" else "CNN c32-c64 28x28 b64")
    REPORT.append(f"step {name} float32, {threads} thread(s): lastlayer {ms['lastlayer']:.2f} ms, "
                  f"PyTorch {ms['torch']:.2f} ms, ratio {ratio:.2f} (medians of {REPEATS} "
                  f"alternating runs; per run lastlayer "
                  f"{', '.join(f'{1e3 * t:.1f}' for t in medians['lastlayer'])}, PyTorch "
                  f"{', '.join(f'{1e3 * t:.1f}' for t in medians['torch'])}; load "
                  f"{min(loads):.2f}-{max(loads):.2f})")

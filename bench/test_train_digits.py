"""`lastlayer train --data digits --hidden 128,128 --epochs 30 --seed 0`: wall time of the
whole run (data, training, evaluation) against its 60 s budget, after checking its
accuracy. Also reports the throughput in training samples per second."""

from __future__ import annotations

from lastlayer.models.cli.train import TrainConfig, run

from .conftest import REPORT


def test_train_digits_run(benchmark):
    cfg = TrainConfig(data="digits", hidden=(128, 128), seed=0)
    result = benchmark.pedantic(lambda: run(cfg, epochs=30, quiet=True), rounds=3, iterations=1)
    assert result.final["test"]["accuracy"] >= 0.95
    t = benchmark.stats.stats.median
    samples = 30 * len(result.data.x_train)
    benchmark.extra_info.update({"seconds": t, "budget_seconds": 60, "samples_per_second": samples / t})
    REPORT.append(f"train digits MLP 64-128-128-10, 30 epochs: {t:.2f} s (budget 60 s, "
                  f"{t / 60:.3f} of it), {samples / t:,.0f} training samples/s, test accuracy "
                  f"{result.final['test']['accuracy']:.4f}")

"""Hadamard head forward + backward (float32, batch 256): the FWHT path against the dense
+-1 product, across (d_in, C) around the cost model's crossover, with the path the cost
model ("auto") picks. Both paths are checked to agree before timing; the report shows where
the faster path switches (medians of 21 interleaved rounds) and whether the cost model
agrees."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lastlayer.engine import HadamardHead

from .conftest import REPORT, interleaved_times

BATCH = 256
# around the cost model's crossover C N = 3 n (lastlayer.engine.layers.fixed_heads.AUTO_DENSE_FACTOR)
SHAPES = [(64, 2), (64, 10), (1024, 2), (1024, 4), (1024, 16), (4096, 8), (16384, 2), (16384, 8),
          (2048, 1000), (8192, 1000)]


@pytest.mark.parametrize("d_in, c", SHAPES, ids=[f"d{d}-C{c}" for d, c in SHAPES])
def test_hadamard_head_paths(benchmark, d_in, c):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, d_in)).astype(np.float32)
    dy = rng.standard_normal((BATCH, c)).astype(np.float32)
    heads = {m: HadamardHead(d_in, c, method=m) for m in ("fwht", "dense")}
    params = heads["fwht"].init(rng, np.float32)

    def step(head):
        y, cache = head.forward(params, x, train=True)
        return y, head.backward(params, cache, dy)

    (y_f, (dx_f, _)), (y_d, (dx_d, _)) = step(heads["fwht"]), step(heads["dense"])
    np.testing.assert_allclose(y_f, y_d, rtol=1e-4, atol=1e-5 * np.abs(y_d).max())
    np.testing.assert_allclose(dx_f, dx_d, rtol=1e-4, atol=1e-5 * np.abs(dx_d).max())

    t = interleaved_times({m: (lambda h=h: step(h)) for m, h in heads.items()}, rounds=21)
    benchmark.pedantic(lambda: step(heads["fwht"]), rounds=10, warmup_rounds=1)
    faster = min(t, key=lambda m: t[m]["median"])
    auto = HadamardHead(d_in, c).resolved_method
    benchmark.extra_info.update({"fwht_ms": 1e3 * t["fwht"]["median"],
                                 "dense_ms": 1e3 * t["dense"]["median"], "auto_picks": auto,
                                 "faster": faster})
    REPORT.append(f"HadamardHead d_in={d_in:5d} C={c:5d} fwd+bwd batch {BATCH}: fwht "
                  f"{1e3 * t['fwht']['median']:7.2f} ms, dense {1e3 * t['dense']['median']:7.2f} ms "
                  f"-> {faster} faster; cost model picks {auto}"
                  + ("" if auto == faster else "  (cost model disagrees)")
                  + f" [load {os.getloadavg()[0]:.1f}]")

"""Named, counter-based random streams: every random draw of lastlayer comes from one.

    rng = stream(seed, "dropout", t)      # the dropout masks of iteration t

A stream is a NumPy ``Generator`` keyed by (seed, the stream's salt, counters...): the
same key always gives the same numbers, different names or counters give independent
numbers (NumPy's ``SeedSequence`` hashes the whole key), and a stream never depends on how
many numbers were drawn before. That is what makes a run reproducible from its seed alone
and a resumed run bit-identical to one that never stopped: the random state at iteration t
*is* (seed, t).

Every stream is listed in ``STREAMS`` with the salt that keys it and what it is for, so a
misspelt name is an error rather than a silent new stream, and no module types a literal
salt. The salts are fixed forever: changing one changes every number drawn from it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "stream"]

# name -> (salt, what it draws). Add new streams at the end, with a salt not used above.
STREAMS: dict[str, tuple[int, str]] = {
    "init": (0x1417, "a network's initial parameters (lastlayer.engine.training.init_train_state)"),
    "dropout": (0xD409, "dropout masks of iteration t (lastlayer.engine.training.train)"),
    "epoch": (0xBA7C, "the sample order of epoch e (lastlayer.engine.training.data.epoch_permutation)"),
    "split": (0xDA7A, "train/test splits of the embedded datasets (lastlayer.engine.training.data)"),
    "simreg": (0x5111, "the post-training paper's simulated regression data"),
    "toy": (0x70F, "the Gaussian toy classification data"),
    "layca-toy": (0x7011, "the Layca paper's 10-digits-per-class training subset"),
    "lanczos": (0x1A7C, "the starting vector of Lanczos iterations (lastlayer.engine.solvers.exact.eigen)"),
    "pof-search": (0x50F1, "PoF's line-search mini-batch B of iteration t, attempt a"),
    "pof-gamma": (0x50F2, "PoF's expansion factor gamma of iteration t"),
    "pof-data": (0x50F3, "PoF's generated toy data (teacher network, inputs, labels)"),
    "probe": (0x50F4, "mini-batches and random inputs drawn to measure a model (PoF, ENTAME)"),
    "entame-head": (0xE47A, "ENTAME's new classifier heads (lastlayer.models.papers.entame)"),
    "mnist-order": (0x3157, "the fixed order of mnist's train and test rows (lastlayer.engine.training.data)"),
    "etf": (0xE7F0, "the orthonormal P of a SimplexETFHead with method='orthogonal' (lastlayer.engine.layers)"),
    "laplace-mc": (0x1A91, "Monte Carlo draws of a last-layer Laplace predictive (lastlayer.engine.solvers)"),
    "laplace-folds": (0x1A92, "the K folds of a Laplace prior precision chosen by CV (lastlayer.engine.solvers)"),
    "beyond-data": (0xB0D0, "generated features and labels of the NC / ETF / LA / CAL ledger rows"),
    "compare": (0xC0A7, "lastlayer compare: its heads, orders and probes beyond those of the papers"),
}


def stream(seed: int, name: str, *counters: int) -> np.random.Generator:
    """The generator of stream ``name`` for ``seed`` and ``counters`` (e.g. an iteration).

    seed, counters : non-negative integers. name : a key of ``STREAMS``.
    """
    if name not in STREAMS:
        raise ValueError(f"name: expected a stream of lastlayer.engine.streams.STREAMS "
                         f"({', '.join(STREAMS)}), got {name!r}")
    key = [seed, STREAMS[name][0], *counters]
    for label, value in zip(("seed",) + ("counter",) * len(counters), (seed, *counters)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label}: expected an integer >= 0, got {value!r}")
    return np.random.default_rng([int(k) for k in key])

"""The Monte Carlo Laplace predictive against laplace-torch's, in the same run, correctness
first (issue 29, item 3).

One last-layer posterior, "full" structure, fitted by both on the same features and the same
exact softmax MAP (N = 2000, d = 64, C = 10, tau = 2 N lam): their logit covariances must
agree (laplace-torch's GGN is the exact CE Hessian of a linear head), and their predictives
with S draws must agree within Monte Carlo error (different draws: laplace-torch samples
with torch's generator, lastlayer from stream(seed, "laplace-mc", row)). Then M = 1000 new
rows, S = 100 and 1000 draws, one thread each side (torch.set_num_threads(1), one BLAS
thread), interleaved best of 5; the ratio to laplace-torch and the load are reported.
Skipped, with the reason in the report, where laplace-torch is not installed
(``pip install torch laplace-torch``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from lastlayer import LastLayerLaplace, fit_softmax_regression
from lastlayer.engine.streams import stream

from .conftest import REPORT, interleaved_times

N, D, C, M, LAM = 2000, 64, 10, 1000, 1e-3


def problem():
    rng = stream(0, "beyond-data")
    x = rng.standard_normal((N, D))
    y = (x @ rng.standard_normal((D, C))).argmax(axis=1)
    return x, y, rng.standard_normal((M, D))


@pytest.mark.parametrize("draws", [100, 1000])
def test_mc_predictive_against_laplace_torch(benchmark, draws):
    torch = pytest.importorskip("torch")
    laplace = pytest.importorskip("laplace")
    load = os.getloadavg()[0]
    x, y, xs = problem()
    sol = fit_softmax_regression(x, y, LAM, n_classes=C)
    tau = 2 * N * LAM
    ours = LastLayerLaplace(sol.W, sol.b, x, y, loss="ce", structure="full", tau_w=tau, tau_b=tau)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(D, C)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(sol.W))
        model[1].bias.copy_(torch.from_numpy(sol.b))
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    theirs = laplace.Laplace(model, "classification", subset_of_weights="last_layer",
                             hessian_structure="full", prior_precision=tau)
    theirs.fit(torch.utils.data.DataLoader(data, batch_size=500))
    xt = torch.from_numpy(xs)

    # ---- correctness first -----------------------------------------------------------------
    z, cov = ours.logit_moments(xs)
    with torch.no_grad():
        mean_t, cov_t = theirs._glm_predictive_distribution(xt)[:2]
    assert np.abs(mean_t.numpy() - z).max() <= 1e-10 * np.abs(z).max()
    cov_err = float(np.abs(cov_t.numpy() - cov).max() / np.abs(cov).max())
    assert cov_err < 1e-6, cov_err  # both the exact posterior (laplace-torch's in float64)

    def run_ours():
        return ours.predict_proba(xs, method="mc", draws=draws, seed=0)

    def run_theirs():
        with torch.no_grad():
            return theirs(xt, pred_type="glm", link_approx="mc", n_samples=draws).numpy()

    with threadpool_limits(1):
        p, q = run_ours(), run_theirs()
        # two independent S-draw means of each probability: their difference has standard
        # deviation <= sqrt(2 / (4 S)); 6 of them over M C = 10 000 entries is never reached
        assert np.abs(p - q).max() < 6 * np.sqrt(0.5 / draws)
        assert np.abs(p.sum(axis=1) - 1).max() < 1e-12
        times = interleaved_times({"lastlayer": run_ours, "laplace-torch": run_theirs},
                                  rounds=5, warmup=1)
        benchmark.pedantic(run_ours, rounds=1, iterations=1)
    a, b = times["lastlayer"]["min"], times["laplace-torch"]["min"]
    REPORT.append(f"laplace MC predictive, full, N={N} d={D} C={C}, M={M} rows x S={draws} draws, "
                  f"1 thread: lastlayer {a * 1e3:.0f} ms, laplace-torch {b * 1e3:.0f} ms, "
                  f"ratio {a / b:.2f}x (best of 5; logit covariances agree to {cov_err:.1e}) "
                  f"[load {load:.1f} before, {os.getloadavg()[0]:.1f} after]")

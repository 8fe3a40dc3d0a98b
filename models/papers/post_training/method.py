"""Post-training (Moreau & Audiffren 2017): retrain only the last layer of a trained network.

Procedure (their Section 2):

1. regular training gives the feature map Phi_{L-1} (all layers but the last) and W_L;
2. the features of the training set are computed **once**, in inference mode (dropout
   off, batch normalisation on running statistics: their Remark 1);
3. only the last layer is trained on them, minimising their eq. 4 with the mean
   convention of docs/claims.md,  J(W) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2
   (the bias, if any, is not penalised) -- either by any engine optimizer for T steps, or
   exactly: ridge regression for the squared loss with an identity output (their eqs. 7-8)
   and the Newton optimum of multinomial logistic regression for softmax cross-entropy.

The last layer must be a ``Dense`` layer (the network's output, before the loss).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lastlayer.engine import Dense, Network, optim
from lastlayer.engine.solvers import fit_softmax_regression, ridge
from lastlayer.engine.training import Dataset, TrainState, train

__all__ = ["features", "feature_dataset", "post_train", "optimal_last_layer", "head_mask"]


def _check_last_layer(net: Network) -> Dense:
    last = net[-1]
    if not isinstance(last, Dense):
        raise ValueError(f"net: post-training needs a Dense last layer, got {last}")
    return last


def features(net: Network, params: list, net_state: list, x: np.ndarray,
             batch_size: int = 4096) -> np.ndarray:
    """Phi_{L-1}(x): the output of every layer but the last, in inference mode (no dropout,
    running statistics), computed in chunks. Shape (N, d_in of the last layer)."""
    body, body_params, body_state = net[:-1], params[:-1], net_state[:-1]
    chunks = [body.forward(body_params, x[i:i + batch_size], train=False, state=body_state)[0]
              for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks) if chunks else np.empty((0, _check_last_layer(net).d_in))


def feature_dataset(net: Network, params: list, net_state: list, data: Dataset) -> Dataset:
    """``data`` with its inputs replaced by their features Phi_{L-1}(x)."""
    _check_last_layer(net)
    return Dataset(f"{data.name}-features", features(net, params, net_state, data.x_train),
                   data.y_train, features(net, params, net_state, data.x_test), data.y_test,
                   data.task, data.n_classes, f"last-layer features of {data.name}",
                   data.target_scale)


def head_mask(layer: Dense) -> list[dict]:
    """The L2 term's mask for the last layer: its kernel W, not its bias."""
    return [{"W": True, "b": False} if layer.bias else {"W": True}]


def post_train(net: Network, params: list, net_state: list, data: Dataset, *, lam: float,
               steps: int, base: optim.GradientTransformation, batch_size: int = 64,
               seed: int = 0, mode: str = "stream", phi: Dataset | None = None,
               monitor: Callable[[int, list], dict] | None = None,
               monitor_every: int = 1) -> tuple[list, dict]:
    """Train the last layer alone for ``steps`` updates of ``base`` on the features, with
    the L2 term lam ||W||^2 added to its gradient. Returns (all parameters with the new last
    layer, the history of the head's training; see ``lastlayer.engine.training.train``).

    ``phi``: the features (``feature_dataset``), if already computed: they are computed once
    either way, never per step. ``monitor(t, head_params)`` is passed to the training loop
    (e.g. the distance to the closed form, claim M4).
    """
    last = _check_last_layer(net)
    phi = phi if phi is not None else feature_dataset(net, params, net_state, data)
    head = net[-1:]
    opt = optim.chain(optim.add_weight_decay(lam, head_mask(last)), base)
    ts = TrainState(params[-1:], net_state[-1:], opt.init(params[-1:]), seed)
    ts = train(head, opt, phi, ts, iterations=steps, batch_size=batch_size, mode=mode,
               quiet=True, eval_every=steps, eval_train=False, monitor=monitor,
               monitor_every=monitor_every)
    return params[:-1] + ts.params, ts.history


def optimal_last_layer(net: Network, params: list, net_state: list, data: Dataset, *,
                       lam: float, phi: Dataset | None = None, tol: float = 1e-12) -> list:
    """All parameters with the last layer replaced by the exact minimiser of J: ridge
    (squared loss, identity output; their eq. 8 with N lam) for regression, the Newton
    optimum of softmax cross-entropy for classification."""
    last = _check_last_layer(net)
    phi = phi if phi is not None else feature_dataset(net, params, net_state, data)
    if data.task == "regression":
        sol = ridge(phi.x_train, phi.y_train, lam, fit_bias=last.bias)
        W, b = sol.W, sol.b
    else:
        sol = fit_softmax_regression(phi.x_train, phi.y_train, lam, fit_bias=last.bias,
                                     n_classes=last.d_out, tol=tol)
        W, b = sol.W, sol.b
    head = {"W": W.astype(params[-1]["W"].dtype)}
    if last.bias:
        head["b"] = b.astype(params[-1]["b"].dtype)
    return params[:-1] + [head]

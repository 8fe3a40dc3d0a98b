"""Exercise softmax-ce: the softmax cross-entropy loss and its gradient, stable for logits
of any size.

For logits Z (N, C) and integer labels y (N,) with values in [0, C):

    p_i = softmax(z_i),  p_ic = exp(z_ic) / sum_k exp(z_ik)
    loss = (1/N) sum_i -log p_{i, y_i}                  (the mean over the N rows)
    dloss/dz_ic = (p_ic - [c == y_i]) / N

Return ``(loss, dlogits)``: loss a Python float, dlogits of the shape and dtype of the
logits. The logits are never modified.

Logits of size 1000 overflow exp (exp(710) is inf in float64): the checker runs NumPy with
overflow as an error. Softmax does not change when a constant is subtracted from a row, so
subtract each row's maximum first; and compute log p as z - max - log(sum exp(z - max))
rather than log(softmax), which is -inf where a probability underflows to 0.

Compare engine/losses.py (``softmax_cross_entropy``, the engine's own, which also takes
probability targets) once you are done, not before: the checker compares with it.

Check your work with

    lastlayer exercise check softmax-ce softmax_ce.py

which compares the loss with the engine's, the gradient with central differences of your
loss (``lastlayer.engine.gradcheck.check_loss``), and both again on logits of size 1000.
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """logits (N, C) float, labels (N,) int in [0, C) -> (mean loss, dlogits (N, C))."""
    raise NotImplementedError("the mean loss and its gradient")

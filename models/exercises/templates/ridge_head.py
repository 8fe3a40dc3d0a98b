"""Exercise ridge-head: the exact last layer for the squared loss, in closed form.

Given features Phi (N, d) and targets Y (N, C), find the last layer W (C, d) that minimises

    J(W) = (1/N) ||Phi W^T - Y||_F^2 + lam ||W||_F^2          (lam >= 0)

the objective J of lastlayer (docs/claims.md): the loss is the *mean* over the N rows,
the penalty is not divided by N. J is a convex quadratic, so its minimiser is where the
gradient vanishes:

    dJ/dW = (2/N) (Phi W^T - Y)^T Phi + 2 lam W = 0

Solve that linear system for W and return W of shape (C, d), float64 for float64 inputs.
Do not use lastlayer.engine.solvers.exact.ridge (the checker compares with it); NumPy is enough.

Hints: multiply the condition by N / 2 and collect the terms in W^T: a d x d symmetric
positive definite system with C right-hand sides. ``np.linalg.solve`` solves it (never form
an inverse). Keep track of the N: a penalty put on the diagonal without it solves the
problem of another lam. The checker also tries d > N (fewer rows than features): your
system stays solvable there when lam > 0, and for lam = 0 it tries only d < N.

Check your work with

    lastlayer exercise check ridge-head ridge_head.py

which measures the gradient dJ/dW at your W (it must vanish) and compares W with
``lastlayer.engine.solvers.exact.ridge``; when W is the minimiser for another lam, it says which.
"""

from __future__ import annotations

import numpy as np


def fit(Phi: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """Phi (N, d), Y (N, C), lam >= 0 -> W (C, d), the minimiser of J (module docstring)."""
    raise NotImplementedError("solve dJ/dW = 0 for W (C, d)")

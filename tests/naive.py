"""Slow, obviously-correct references written straight from the definitions, with plain
Python loops over every index. Tests compare the engine's vectorised code with these."""

from __future__ import annotations

import numpy as np


def conv2d(x, W, b, stride, padding):
    """y[n, o, p, q] = b[o] + sum_{c, i, j} x_pad[n, c, s_h p + i, s_w q + j] W[o, c, i, j]."""
    n, c, h, w = x.shape
    c_out, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c_out, ho, wo))
    for i_n in range(n):
        for o in range(c_out):
            for p in range(ho):
                for q in range(wo):
                    acc = 0.0 if b is None else b[o]
                    for ci in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                acc += xp[i_n, ci, sh * p + i, sw * q + j] * W[o, ci, i, j]
                    y[i_n, o, p, q] = acc
    return y


def maxpool2d(x, pool, stride):
    """y[n, c, p, q] = max over the window starting at (s_h p, s_w q); also returns, for
    each output, the (row, col) of the first maximum in row-major window order."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = pool, stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, ho, wo))
    where = np.zeros((n, c, ho, wo, 2), dtype=int)
    for i_n in range(n):
        for ci in range(c):
            for p in range(ho):
                for q in range(wo):
                    best, pos = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            v = x[i_n, ci, sh * p + i, sw * q + j]
                            if v > best:
                                best, pos = v, (sh * p + i, sw * q + j)
                    y[i_n, ci, p, q] = best
                    where[i_n, ci, p, q] = pos
    return y, where


def softmax_cross_entropy(logits, labels):
    """Per-sample -log softmax(z)[y], summed with math.fsum-style care in float64 loops."""
    losses = []
    for z, y in zip(logits, labels):
        m = max(z)
        lse = m + np.log(sum(np.exp(v - m) for v in z))
        losses.append(lse - z[y])
    return sum(losses) / len(losses)

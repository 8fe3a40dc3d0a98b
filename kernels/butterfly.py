"""The fused Walsh-Hadamard butterflies, written once as plain Python and compiled for
both targets: ``numba.njit`` in ``fwht_cpu`` and ``numba.cuda.jit(device=True)`` in
``fwht_cuda`` (and run as Python by the CUDA simulator).

Given 2^r values a_j = x[p + j h] at stride h, ``bf8`` (r = 3) and ``bf4`` (r = 2) apply
the butterfly levels h, 2h, 4h (resp. h, 2h) in registers and return the values to store
back at x[p + j h], j = 0, 1, ... in order. Level h pairs (0, 1), (2, 3), ...; level 2h
pairs (0, 2), (1, 3), ...; level 4h pairs (j, j + 4).
"""


def bf8(a0, a1, a2, a3, a4, a5, a6, a7):
    b0 = a0 + a1  # level h
    b1 = a0 - a1
    b2 = a2 + a3
    b3 = a2 - a3
    b4 = a4 + a5
    b5 = a4 - a5
    b6 = a6 + a7
    b7 = a6 - a7
    c0 = b0 + b2  # level 2h
    c2 = b0 - b2
    c1 = b1 + b3
    c3 = b1 - b3
    c4 = b4 + b6
    c6 = b4 - b6
    c5 = b5 + b7
    c7 = b5 - b7
    return c0 + c4, c1 + c5, c2 + c6, c3 + c7, c0 - c4, c1 - c5, c2 - c6, c3 - c7  # level 4h


def bf4(a0, a1, a2, a3):
    b0 = a0 + a1  # level h
    b1 = a0 - a1
    b2 = a2 + a3
    b3 = a2 - a3
    return b0 + b2, b1 + b3, b0 - b2, b1 - b3  # level 2h

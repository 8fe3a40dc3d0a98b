"""The checkers of the layer exercises: leaky-relu and conv1d.

Each is a list of ``Check``: the layer protocol (a frozen dataclass derived from ``Layer``),
the shape contract (``output_shape``), forward against a closed form or a direct sum
written here, and backward through the engine's own gradient check
(``lastlayer.engine.gradcheck.check_layer``, tolerance ``LAYER_TOL``), one line per tensor, with a
hint computed from the right gradient when the wrong one is simply related to it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lastlayer.engine.gradcheck import relative_error
from lastlayer.engine.gradcheck.cases import LAYER_TOL, away_from_zero
from lastlayer.engine.layers.base import Layer

from .checking import (Check, Failed, Learner, checked_forward, hinted, layer_gradients, ok,
                       relation, within, worst)

FORWARD_TOL = 1e-12  # a forward pass is a few roundings from its closed form


def is_layer_class(learner: Learner, name: str, frozen: bool = False):
    """The learner's class ``name``, if it is derived from Layer (and, with ``frozen``, a
    frozen dataclass: only the protocol's own check asks, so that the others still run)."""
    cls = learner.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise Failed(f"{name} must be a class derived from lastlayer.engine.layers.base.Layer")
    if frozen and (not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen):
        raise Failed(f"{name} must be a frozen dataclass, @dataclass(frozen=True): a layer "
                     f"holds hyper-parameters only (docs/design.md, Protocol 1)")
    return cls


def output_shapes(learner: Learner, layer, name: str, shape, expected) -> None:
    got = learner.call(f"{name}.output_shape", layer.output_shape, shape)
    if not isinstance(got, tuple) or got != expected:
        raise Failed(f"{layer}: output_shape({shape}) returned {got!r}; expected {expected}")


def refuses(learner: Learner, layer, name: str, shape, why: str) -> None:
    try:
        got = layer.output_shape(shape)
    except ValueError:
        return
    except Exception as exc:  # noqa: BLE001 - reported as the learner's error
        raise Failed(learner.describe(f"{name}.output_shape{(shape,)}", exc)
                     + f"; expected a ValueError ({why})") from None
    raise Failed(f"{layer}: output_shape({shape}) returned {got!r}; an input {why} must raise "
                 f"a ValueError (self.shape_error)")


# ---- leaky-relu ---------------------------------------------------------------------------
LEAKY_CASES = [(0.01, (4, 6)), (0.2, (1, 2, 3, 3)), (0.5, (3, 5))]  # slope, x shape


def _leaky(learner: Learner, slope: float):
    cls = is_layer_class(learner, "LeakyReLU")
    return learner.call(f"LeakyReLU(slope={slope})", cls, slope=slope)


def _leaky_protocol(learner: Learner):
    is_layer_class(learner, "LeakyReLU", frozen=True)
    layer = _leaky(learner, 0.2)
    if getattr(layer, "slope", None) != 0.2:
        raise Failed(f"LeakyReLU(slope=0.2).slope is {getattr(layer, 'slope', None)!r}; keep "
                     f"the slope as the dataclass field 'slope'")
    params = learner.call("LeakyReLU.init", layer.init, np.random.default_rng(0), np.float64)
    shapes = learner.call("LeakyReLU.param_shapes", layer.param_shapes)
    if params != {} or shapes != {}:
        raise Failed(f"LeakyReLU has no parameters: init and param_shapes must return {{}}, got "
                     f"{sorted(params) if isinstance(params, dict) else params!r}")
    return ok("a frozen dataclass derived from Layer, with the field slope and no parameters")


def _leaky_shapes(learner: Learner):
    layer = _leaky(learner, 0.2)
    for shape in ((4, 6), (1, 3, 5, 5), (7,)):
        output_shapes(learner, layer, "LeakyReLU", shape, shape)
    refuses(learner, layer, "LeakyReLU", (), "without the batch dimension, ()")
    return ok("(4, 6), (1, 3, 5, 5) and (7,) kept; () refused with a ValueError")


def _leaky_forward(learner: Learner):
    errors, hints = [], {}
    rng = np.random.default_rng(0)
    for slope, shape in LEAKY_CASES:
        layer = _leaky(learner, slope)
        x = rng.standard_normal(shape)
        y, _ = checked_forward(learner, layer, "LeakyReLU", {}, x, shape, train=False)
        want = np.where(x > 0, x, slope * x)
        where = f"slope {slope}, x {shape}"
        errors.append((relative_error(y, want), where))
        pos, neg = x > 0, x <= 0
        if np.allclose(y[pos], want[pos], rtol=1e-12, atol=0):
            hints[where] = "right where x > 0, wrong where x < 0 (there y = slope x)"
        elif np.allclose(y[neg], want[neg], rtol=1e-12, atol=0):
            hints[where] = "right where x < 0, wrong where x > 0 (there y = x)"
        x32 = x.astype(np.float32)
        checked_forward(learner, layer, "LeakyReLU", {}, x32, shape, train=False)
    error, where = worst(errors)
    return within(error, FORWARD_TOL, hint=hinted(where, hints.get(where)),
                  note="max(x, slope x) for slopes 0.01, 0.2, 0.5; float32 stays float32")


def _leaky_backward(learner: Learner):
    errors, hints = [], {}
    rng = np.random.default_rng(2)
    for slope, shape in LEAKY_CASES:
        layer = _leaky(learner, slope)
        x = away_from_zero(rng, shape)
        g = layer_gradients(learner, layer, "LeakyReLU", {}, x, shape)
        where = f"slope {slope}, x {shape}"
        errors.append((g.errors["x"], where))
        want = np.where(x > 0, 1.0, slope) * g.dy
        pos = x > 0
        if np.allclose(g.dx[pos], want[pos], rtol=1e-12, atol=0):
            hints[where] = (f"right where x > 0, wrong where x < 0 (there dx = slope dy = "
                            f"{slope} dy)")
        elif np.allclose(g.dx[~pos], want[~pos], rtol=1e-12, atol=0):
            hints[where] = "right where x < 0, wrong where x > 0 (there dx = dy)"
        else:
            hints[where] = relation(g.dx, want)
    error, where = worst(errors)
    return within(error, LAYER_TOL, hint=hinted(where, hints.get(where)),
                  note="central differences (check_layer), 3 slopes and shapes")


LEAKY_RELU = [
    Check("LeakyReLU is a layer", _leaky_protocol),
    Check("output_shape", _leaky_shapes),
    Check("forward", _leaky_forward),
    Check("backward: gradient of x", _leaky_backward),
]


# ---- conv1d -------------------------------------------------------------------------------
# (c_in, c_out, kernel_size, stride, padding), x shape: strides 1-3, padding 0-2, a kernel
# of 1, a tail that fills no window (L = 10, k 4, s 3, p 2), one output position
CONV_CASES = [
    ((2, 3, 3, 1, 0), (2, 2, 7)),
    ((2, 3, 3, 2, 1), (1, 2, 8)),
    ((1, 2, 4, 3, 2), (3, 1, 10)),
    ((3, 2, 1, 1, 0), (2, 3, 5)),
    ((2, 2, 3, 1, 1), (2, 2, 1)),
]


def out_length(length: int, k: int, s: int, p: int) -> int:
    return (length + 2 * p - k) // s + 1


def conv1d_reference(x, W, b, stride: int, padding: int):
    """y[n, o, t] = b[o] + sum_c sum_j W[o, c, j] x_pad[n, c, s t + j], one t at a time."""
    k = W.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    lout = out_length(x.shape[2], k, stride, padding)
    y = np.empty((x.shape[0], W.shape[0], lout))
    for t in range(lout):
        y[:, :, t] = b + np.einsum("ocj,ncj->no", W, xp[:, :, stride * t:stride * t + k])
    return y


def conv1d_reference_backward(x, W, dy, stride: int, padding: int):
    """dx, dW, db of conv1d_reference for the upstream gradient dy, one t at a time."""
    k, length = W.shape[2], x.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    for t in range(dy.shape[2]):
        window = slice(stride * t, stride * t + k)
        dW += np.einsum("no,ncj->ocj", dy[:, :, t], xp[:, :, window])
        dxp[:, :, window] += np.einsum("ocj,no->ncj", W, dy[:, :, t])
    return dxp[:, :, padding:padding + length], dW, dy.sum(axis=(0, 2))


def conv_name(config) -> str:
    c_in, c_out, k, s, p = config
    return f"Conv1D({c_in}, {c_out}, kernel_size={k}, stride={s}, padding={p})"


def _conv(learner: Learner, config):
    c_in, c_out, k, s, p = config
    cls = is_layer_class(learner, "Conv1D")
    return learner.call(conv_name(config), cls, c_in, c_out, kernel_size=k, stride=s, padding=p)


def _conv_params(config, seed: int) -> dict:
    c_in, c_out, k, _, _ = config
    rng = np.random.default_rng(seed)
    return {"W": rng.standard_normal((c_out, c_in, k)), "b": rng.standard_normal(c_out)}


def _conv_protocol(learner: Learner):
    config = CONV_CASES[1][0]
    is_layer_class(learner, "Conv1D", frozen=True)
    layer = _conv(learner, config)
    c_in, c_out, k, _, _ = config
    want = {"W": (c_out, c_in, k), "b": (c_out,)}
    shapes = learner.call("Conv1D.param_shapes", layer.param_shapes)
    if shapes != want:
        raise Failed(f"{layer}: param_shapes() returned {shapes!r}; expected {want}")
    params = learner.call("Conv1D.init", layer.init, np.random.default_rng(0), np.float64)
    got = {n: getattr(v, "shape", None) for n, v in params.items()} \
        if isinstance(params, dict) else params
    if got != want:
        raise Failed(f"{layer}: init returned {got!r}; expected arrays of shapes {want}")
    return ok("a frozen dataclass derived from Layer; W (c_out, c_in, k) and b (c_out,)")


def _conv_shapes(learner: Learner):
    for config, shape in CONV_CASES:
        _, c_out, k, s, p = config
        output_shapes(learner, _conv(learner, config), "Conv1D", shape,
                      (shape[0], c_out, out_length(shape[2], k, s, p)))
    layer = _conv(learner, (2, 3, 3, 1, 0))
    refuses(learner, layer, "Conv1D", (2, 3, 7), "with 3 channels for c_in = 2")
    refuses(learner, layer, "Conv1D", (2, 2, 2), "shorter than the kernel, L + 2 p < k")
    refuses(learner, layer, "Conv1D", (2, 14), "that is not (N, c_in, L)")
    return ok(f"{len(CONV_CASES)} configurations; 3 inputs that do not fit refused with a "
              f"ValueError")


def _conv_forward(learner: Learner):
    errors, hints = [], {}
    for i, (config, shape) in enumerate(CONV_CASES):
        layer = _conv(learner, config)
        params = _conv_params(config, seed=10 + i)
        x = np.random.default_rng(20 + i).standard_normal(shape)
        _, c_out, k, s, p = config
        y_shape = (shape[0], c_out, out_length(shape[2], k, s, p))
        y, _ = checked_forward(learner, layer, "Conv1D", params, x, y_shape, train=False)
        want = conv1d_reference(x, params["W"], params["b"], s, p)
        where = f"{conv_name(config)} on x {shape}"
        errors.append((relative_error(y, want), where))
        flipped = conv1d_reference(x, params["W"][:, :, ::-1], params["b"], s, p)
        if k > 1 and np.allclose(y, flipped, rtol=1e-12, atol=1e-12):
            hints[where] = ("yours flips the kernel (a true convolution); compute the "
                            "cross-correlation, as Conv2D does")
        elif np.allclose(y, want - params["b"][:, None], rtol=1e-12, atol=1e-12):
            hints[where] = "the bias b is missing"
        else:
            hints[where] = relation(y, want)
    error, where = worst(errors)
    return within(error, FORWARD_TOL, hint=hinted(where, hints.get(where)),
                  note=f"the direct sum, {len(CONV_CASES)} configurations")


def _conv_case(learner: Learner, i: int):
    """The gradient check of case i, and the right gradients for the learner's dy."""
    config, shape = CONV_CASES[i]
    layer = _conv(learner, config)
    params = _conv_params(config, seed=30 + i)
    x = np.random.default_rng(40 + i).standard_normal(shape)
    _, c_out, k, s, p = config
    y_shape = (shape[0], c_out, out_length(shape[2], k, s, p))
    g = layer_gradients(learner, layer, "Conv1D", params, x, y_shape)
    dx, dW, db = conv1d_reference_backward(x, params["W"], g.dy, s, p)
    return g, {"x": dx, "W": dW, "b": db}, f"{conv_name(config)} on x {shape}"


def _conv_backward(tensor: str):
    def run(learner: Learner):
        errors, hints = [], {}
        for i in range(len(CONV_CASES)):
            g, right, where = learner.once(("conv1d", i), lambda i=i: _conv_case(learner, i))
            errors.append((g.errors[tensor], where))
            got = g.dx if tensor == "x" else g.grads[tensor]
            hints[where] = relation(got, right[tensor], "the kernel axis" if tensor == "W"
                                    else "the last axis")
        error, where = worst(errors)
        return within(error, LAYER_TOL, hint=hinted(where, hints.get(where)),
                      note=f"central differences (check_layer), {len(CONV_CASES)} configurations")
    return run


CONV1D = [
    Check("Conv1D is a layer", _conv_protocol),
    Check("output_shape", _conv_shapes),
    Check("forward", _conv_forward),
    Check("backward: gradient of x", _conv_backward("x")),
    Check("backward: gradient of W", _conv_backward("W")),
    Check("backward: gradient of b", _conv_backward("b")),
]

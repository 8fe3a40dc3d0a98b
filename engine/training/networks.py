"""The two network families of ``lastlayer train`` and of the papers' image experiments.

    net = mlp(data, hidden=(128, 128))                  # [Flatten] Dense ReLU Dense ReLU Dense
    net = cnn(data, channels=(32, 64), hidden=(128,))   # (Conv ReLU Pool) x 2, Flatten, Dense ReLU, Dense

Both end in one ``Dense`` layer: the last layer. ``net.split(-1)`` gives the feature
extractor (whose output is the penultimate features phi) and that head, so every
network these build can be post-trained exactly (``lastlayer features``, ``head fit``).

For one-row inputs (N, C, 1, W), such as mnist1d's (N, 1, 1, 40), ``cnn`` builds 1-D
convolutions: Conv2D with (1, k) kernels and (1, 2) pooling windows, which is exactly a
Conv1D over the W axis (its gradient is Conv2D's, checked in the ledger's G-Conv rows).
"""

from __future__ import annotations

from ..layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
from ..network import Network
from .data import Dataset

__all__ = ["ACTIVATIONS", "mlp", "cnn", "conv_geometry"]

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def _dense_stack(width: int, hidden: tuple[int, ...], outputs: int, activation: str,
                 dropout: float) -> list:
    """(Dense -> activation [-> Dropout]) per hidden width, then Dense(outputs)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    layers = []
    for h in hidden:
        layers += [Dense(width, h), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(Dropout(dropout))
        width = h
    return layers + [Dense(width, outputs)]


def mlp(data: Dataset, hidden: tuple[int, ...] = (128, 128), activation: str = "relu",
        dropout: float = 0.0) -> Network:
    """[Flatten] -> (Dense -> activation [-> Dropout]) per hidden width -> Dense(outputs).
    Input (N, ...) with prod(...) = data.n_features -> output (N, data.n_outputs)."""
    layers = [Flatten()] if data.x_train.ndim > 2 else []
    return Network(layers + _dense_stack(data.n_features, tuple(hidden), data.n_outputs,
                                         activation, dropout))


def conv_geometry(input_shape: tuple[int, int, int], channels: tuple[int, ...]) -> list[dict]:
    """Per convolution block: kernel, padding, pooling window and the output (C, H, W).

    2-D inputs (H > 1): 3x3 kernels without padding, 2x2 max pooling (the issue's CNN:
    28x28 -> 26 -> 13 -> 11 -> 5). One-row inputs (H = 1): (1, 5) kernels with padding
    (0, 2), so the length is kept, and (1, 2) pooling. Raises ValueError when the input is
    too small for the number of blocks."""
    c, h, w = input_shape
    one_row = h == 1
    blocks = []
    for i, c_out in enumerate(channels):
        kernel, padding, pool = ((1, 5), (0, 2), (1, 2)) if one_row else ((3, 3), (0, 0), (2, 2))
        ho, wo = h + 2 * padding[0] - kernel[0] + 1, w + 2 * padding[1] - kernel[1] + 1
        if ho < pool[0] or wo < pool[1]:
            raise ValueError(f"channels: {len(channels)} convolution blocks need a larger input "
                             f"than {input_shape}: block {i + 1} would see {(c, h, w)}")
        h, w = ho // pool[0], wo // pool[1]
        blocks.append({"c_in": c, "c_out": int(c_out), "kernel": kernel, "padding": padding,
                       "pool": pool, "output": (int(c_out), h, w)})
        c = int(c_out)
    return blocks


def cnn(data: Dataset, channels: tuple[int, ...] = (32, 64), hidden: tuple[int, ...] = (128,),
        activation: str = "relu", dropout: float = 0.0) -> Network:
    """(Conv2D -> activation -> MaxPool2D) per channel width, Flatten, then ``mlp``'s dense
    stack. Input (N, C, H, W) -> output (N, data.n_outputs); geometry by ``conv_geometry``."""
    if data.x_train.ndim != 4:
        raise ValueError(f"arch cnn: expected image inputs (N, C, H, W), got {data.name} with "
                         f"inputs of shape {tuple(data.x_train.shape[1:])}; use an image data set "
                         f"(mnist, mnist1d, digits-images)")
    if not channels:
        raise ValueError("channels: expected at least one convolution width, got none")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    layers = []
    blocks = conv_geometry(tuple(data.x_train.shape[1:]), tuple(channels))
    for b in blocks:
        layers += [Conv2D(b["c_in"], b["c_out"], b["kernel"], padding=b["padding"]),
                   ACTIVATIONS[activation](), MaxPool2D(b["pool"])]
    c, h, w = blocks[-1]["output"]
    return Network(layers + [Flatten()] + _dense_stack(c * h * w, tuple(hidden), data.n_outputs,
                                                       activation, dropout))

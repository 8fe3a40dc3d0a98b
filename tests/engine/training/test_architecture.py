"""Architecture descriptions round-trip through JSON."""

from __future__ import annotations

import json

import pytest

from lastlayer.engine import (
    BatchNorm, Conv2D, Dense, Dropout, Flatten, GlorotUniform, L2Normalize, MaxPool2D, Network,
    ReLU, Sigmoid, Tanh, TruncatedNormal,
)
from lastlayer.engine.training.architecture import build, describe


def test_every_layer_round_trips():
    net = Network([
        Conv2D(1, 4, (3, 2), stride=2, padding=(1, 0), weight_init=TruncatedNormal(0.1)),
        BatchNorm(4, momentum=0.3), ReLU(), MaxPool2D(2, stride=1), Flatten(),
        Dense(12, 5, bias=False, weight_init=GlorotUniform()), Tanh(), Sigmoid(), Dropout(0.2),
        L2Normalize(eps=1e-6),
    ])
    again = build(json.loads(json.dumps(describe(net))))
    assert again.layers == net.layers


def test_unknown_types_are_refused():
    with pytest.raises(ValueError, match="layer 0: unknown type 'Lambda'"):
        build([{"type": "Lambda", "code": "import os"}])
    with pytest.raises(ValueError, match=r"layer 0.weight_init: unknown type 'Evil'"):
        build([{"type": "Dense", "d_in": 2, "d_out": 2, "weight_init": {"type": "Evil"}}])
    with pytest.raises(ValueError, match="cannot build Dense"):
        build([{"type": "Dense", "d_in": 2}])

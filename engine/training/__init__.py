"""Training: the loop, embedded datasets, checkpoints, atomic files, architectures as data.

* ``loop``: ``TrainState``, ``train`` (seeded mini-batches, explicit state, history as
  arrays), ``evaluate``, ``init_train_state``.
* ``steps``: how an iteration turns a mini-batch into gradients: plain back-propagation,
  SAM (and any step of a paper, e.g. PoF's), reusing the loop's batching and history.
* ``data``: the embedded datasets and counter-based mini-batching.
* ``checkpoint``: HDF5 checkpoints, written atomically and verified when read.
* ``io``: files written whole or not at all.
* ``architecture``: a network described as JSON, and built back.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASETS, Dataset, batch_indices, load
from .loop import NonFiniteLossError, TrainState, default_loss, evaluate, init_train_state, train
from .steps import Batch, GradientStep, StepResult, plain_gradient, sam_gradient

__all__ = [
    "TrainState", "NonFiniteLossError", "init_train_state", "train", "evaluate", "default_loss",
    "Dataset", "DATASETS", "load", "batch_indices",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
    "Batch", "GradientStep", "StepResult", "plain_gradient", "sam_gradient",
]

"""HDF5 checkpoints: exact round trip, atomic saves, and clear errors for bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lastlayer.engine import BatchNorm, Dense, Network, ReLU
from lastlayer.engine import optim
from lastlayer.engine.training import checkpoint
from lastlayer.engine.training.data import toy_classification
from lastlayer.engine.training import init_train_state, train


@pytest.fixture(scope="module")
def run():
    data = toy_classification(n_train=100, n_test=50, dim=4, seed=0)
    net = Network([Dense(4, 8), BatchNorm(8), ReLU(), Dense(8, 3)])
    opt = optim.adam(1e-2)
    ts = train(net, opt, data, init_train_state(net, opt, 5), iterations=12, batch_size=25,
               quiet=True)
    return net, opt, ts


def test_round_trip_is_exact(run, tmp_path):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts, {"note": "x"})
    ck = checkpoint.load_checkpoint(path, net=net, opt=opt)
    got = ck.train_state
    assert ck.config == {"note": "x"} and got.iteration == 12 and got.history == ts.history
    assert got.seed == 5  # with the iteration, the random state of the run
    for a, b in zip(got.params + got.net_state, ts.params + ts.net_state):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
    assert got.opt_state[1].count == 12 and isinstance(got.opt_state[1].count, int)
    np.testing.assert_array_equal(got.opt_state[0].nu[3]["W"], ts.opt_state[0].nu[3]["W"])
    assert checkpoint.load_checkpoint(path).net.layers == net.layers  # the file describes its network


def test_truncated_file(run, tmp_path):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable HDF5 file"):
        checkpoint.load_checkpoint(path)


def test_corrupted_bytes_fail_the_checksum(run, tmp_path):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts)
    with h5py.File(path, "r+") as f:  # change one parameter value behind the format's back
        f["params/0/W"][0, 0] += 1.0
    with pytest.raises(checkpoint.CheckpointError, match="checksum mismatch: the file is corrupt"):
        checkpoint.load_checkpoint(path)


def test_files_of_another_format(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable HDF5 file"):
        checkpoint.load_checkpoint(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(checkpoint.CheckpointError, match="not a lastlayer checkpoint"):
        checkpoint.load_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_checkpoint(tmp_path / "missing.h5")


def test_different_architecture_or_optimizer(run, tmp_path):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts)
    wider = Network([Dense(4, 16), BatchNorm(16), ReLU(), Dense(16, 3)])
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"different architecture:\n  in the file: Dense\(4 -> 8\)"):
        checkpoint.load_checkpoint(path, net=wider)
    with pytest.raises(checkpoint.CheckpointError, match="saved with a different optimizer"):
        checkpoint.load_checkpoint(path, net=net, opt=optim.momentum(0.1))


def test_an_interrupted_save_leaves_the_previous_checkpoint(run, tmp_path, monkeypatch):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts, {"version": 1})
    before = path.read_bytes()

    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing_create_dataset(self, name, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # midway through the parameters
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create_dataset)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(path, net, ts, {"version": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.h5"]  # no temporary left behind
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path).config == {"version": 1}


def test_a_checkpoint_without_checksum_is_reported_incomplete(run, tmp_path):
    net, opt, ts = run
    path = tmp_path / "ck.h5"
    checkpoint.save_checkpoint(path, net, ts)
    with h5py.File(path, "r+") as f:
        del f.attrs["checksum"]
    with pytest.raises(checkpoint.CheckpointError, match="incomplete"):
        checkpoint.load_checkpoint(path)


def test_train_save_load_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    data = toy_classification(n_train=120, n_test=30, dim=4, seed=2)
    net = Network([Dense(4, 8), BatchNorm(8), ReLU(), Dense(8, 3)])
    opt = optim.sgd_amom(0.1, weight_decay=1e-3)
    kw = dict(batch_size=32, quiet=True)
    straight = train(net, opt, data, init_train_state(net, opt, 9), iterations=40, **kw)
    first = train(net, opt, data, init_train_state(net, opt, 9), iterations=17, **kw)
    checkpoint.save_checkpoint(tmp_path / "ck.h5", net, first)
    restored = checkpoint.load_checkpoint(tmp_path / "ck.h5", net=net, opt=opt).train_state
    resumed = train(net, opt, data, restored, iterations=40, **kw)
    for a, b in zip(resumed.params + resumed.net_state, straight.params + straight.net_state):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert resumed.history == straight.history

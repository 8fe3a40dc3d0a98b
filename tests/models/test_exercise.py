"""`lastlayer exercise`: every template, untouched, fails naming NotImplementedError; a right
solution (written here: none ships in the package) passes; a solution with one deliberate
slip fails on the line of the tensor it breaks, saying by how much; `start` never
overwrites; `list` names every exercise; a usage error exits 2."""

from __future__ import annotations

import ast
import re
import sys

import pytest

import lastlayer.models.cli as cli
from lastlayer.models.exercises import EXERCISES, TEMPLATES

# ---- right solutions --------------------------------------------------------------------
LEAKY_RELU = '''
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.engine.layers.base import Layer


class LeakyReLUCache(NamedTuple):
    x: np.ndarray


@dataclass(frozen=True)
class LeakyReLU(Layer):
    slope: float = 0.01

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self.shape_error("(N, ...)", input_shape)
        return tuple(input_shape)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        return np.where(x > 0, x, self.slope * x), LeakyReLUCache(x)

    def backward(self, params, cache, dy):
        return np.where(cache.x > 0, dy, self.slope * dy), {}
'''

CONV1D = '''
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.engine.layers.base import Layer


class Conv1DCache(NamedTuple):
    x_pad: np.ndarray
    x_shape: tuple


@dataclass(frozen=True)
class Conv1D(Layer):
    c_in: int
    c_out: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0

    def param_shapes(self):
        return {"W": (self.c_out, self.c_in, self.kernel_size), "b": (self.c_out,)}

    def init(self, rng, dtype=np.float64):
        w = rng.standard_normal(self.param_shapes()["W"])
        return {"W": w.astype(dtype), "b": np.zeros(self.c_out, dtype=dtype)}

    def output_shape(self, input_shape):
        k, s, p = self.kernel_size, self.stride, self.padding
        if len(input_shape) != 3 or input_shape[1] != self.c_in or input_shape[2] + 2 * p < k:
            raise self.shape_error(f"(N, {self.c_in}, L) with L + {2 * p} >= {k}", input_shape)
        return (input_shape[0], self.c_out, (input_shape[2] + 2 * p - k) // s + 1)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        k, s, p = self.kernel_size, self.stride, self.padding
        lout = self.output_shape(x.shape)[2]
        xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
        y = np.zeros((x.shape[0], self.c_out, lout), dtype=x.dtype)
        for j in range(k):
            window = xp[:, :, j:j + s * (lout - 1) + 1:s]
            y += np.einsum("oc,ncl->nol", params["W"][:, :, j], window)
        return y + params["b"][:, None], Conv1DCache(xp, x.shape)

    def backward(self, params, cache, dy):
        k, s, p = self.kernel_size, self.stride, self.padding
        lout, length = dy.shape[2], cache.x_shape[2]
        dxp, dW = np.zeros_like(cache.x_pad), np.zeros_like(params["W"])
        for j in range(k):
            cut = slice(j, j + s * (lout - 1) + 1, s)
            dW[:, :, j] = np.einsum("nol,ncl->oc", dy, cache.x_pad[:, :, cut])
            dxp[:, :, cut] += np.einsum("oc,nol->ncl", params["W"][:, :, j], dy)
        return dxp[:, :, p:p + length], {"W": dW, "b": dy.sum(axis=(0, 2))}
'''

RIDGE_HEAD = '''
import numpy as np


def fit(Phi, Y, lam):
    n, d = Phi.shape
    a = Phi.T @ Phi + n * lam * np.eye(d)
    return np.linalg.solve(a, Phi.T @ Y).T
'''

SOFTMAX_CE = '''
import numpy as np


def softmax_cross_entropy(logits, labels):
    n = len(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    d = np.exp(logp)
    d[rows, labels] -= 1
    return float(-logp[rows, labels].sum() / n), d / n
'''

SOLUTIONS = {"leaky-relu": LEAKY_RELU, "conv1d": CONV1D, "ridge-head": RIDGE_HEAD,
             "softmax-ce": SOFTMAX_CE}

# ---- one slip each: (exercise, the right text, the slip, the FAIL line's start, words it holds)
SLIPS = [
    ("leaky-relu", "np.where(cache.x > 0, dy, self.slope * dy)", "dy.copy()",
     "FAIL  backward: gradient of x is wrong: relative error",
     ["wrong where x < 0", "slope dy"]),
    ("leaky-relu", "np.where(x > 0, x, self.slope * x)", "np.maximum(x, 0)",
     "FAIL  forward is wrong: relative error", ["wrong where x < 0"]),
    ("conv1d", '{"W": dW, "b"', '{"W": 2 * dW, "b"',
     "FAIL  backward: gradient of W is wrong: relative error", ["yours is 2 times the right one"]),
    ("conv1d", '{"W": dW, "b"', '{"W": dW[:, :, ::-1], "b"',
     "FAIL  backward: gradient of W is wrong: relative error",
     ["reversed along the kernel axis"]),
    ("conv1d", '"b": dy.sum(axis=(0, 2))', '"b": dy.mean(axis=(0, 2))',
     "FAIL  backward: gradient of b is wrong: relative error", ["times the right one"]),
    ("conv1d", "return dxp[:, :, p:p + length]", "return 0.5 * dxp[:, :, p:p + length]",
     "FAIL  backward: gradient of x is wrong: relative error", ["0.5 times the right one"]),
    ("conv1d", 'params["W"][:, :, j], window', 'params["W"][:, :, k - 1 - j], window',
     "FAIL  forward is wrong: relative error", ["flips the kernel"]),
    ("ridge-head", "n * lam * np.eye(d)", "lam * np.eye(d)",
     "FAIL  stationarity: dJ/dW = 0 at your W is wrong:", ["lam / N", "N lam on the diagonal"]),
    ("ridge-head", "n * lam * np.eye(d)", "2 * n * lam * np.eye(d)",
     "FAIL  stationarity: dJ/dW = 0 at your W is wrong:", ["for 2 lam"]),
    ("ridge-head", "np.linalg.solve(a, Phi.T @ Y).T", "np.linalg.solve(a, Phi.T @ Y)",
     "FAIL  fit returns W: fit returned ndarray of shape", ["did you return W^T"]),
    ("softmax-ce", "logits - logits.max(axis=1, keepdims=True)", "logits",
     "FAIL  large logits: softmax_cross_entropy raised FloatingPointError", ["row's maximum"]),
    ("softmax-ce", "d / n", "d",
     "FAIL  gradient is wrong: relative error", ["(a sum over the rows, not the mean?)"]),
]


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def start(name, capsys) -> str:
    """`lastlayer exercise start NAME` in the current folder; the file it wrote."""
    code, out, err = run(["exercise", "start", name], capsys)
    path = EXERCISES[name].template
    assert code == 0 and err == "" and out.startswith(f"wrote {path}: "), (out, err)
    assert f"lastlayer exercise check {name} {path}" in out
    return path


def lines_of(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_untouched_template_fails_naming_not_implemented(name, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    path = start(name, capsys)
    assert (tmp_path / path).read_text() == EXERCISES[name].template_path.read_text()
    code, out, err = run(["exercise", "check", name, path], capsys)
    assert code == 1 and err == "" and "Traceback" not in out
    fails = [line for line in lines_of(out) if line.startswith("FAIL")]
    assert fails and all("raised NotImplementedError" in line for line in fails), out
    assert re.search(rf"raised NotImplementedError: .* \({re.escape(path)}, line \d+\)", out)
    total = len(EXERCISES[name].checks)
    assert out.splitlines()[-1] == (f"{name}: {total} checks: {total - len(fails)} passed, "
                                    f"{len(fails)} failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path]  # no __pycache__ beside it


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_right_solution_passes(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(SOLUTIONS[name])
    code, out, err = run(["exercise", "check", name, "mine.py"], capsys)
    assert code == 0 and err == "", out
    lines = lines_of(out)
    assert len(lines) == len(EXERCISES[name].checks) and all(line.startswith("PASS  ")
                                                             for line in lines), out
    total = len(lines)
    assert out.splitlines()[-1] == f"{name}: {total} checks: {total} passed, 0 failed"
    assert not any(m.startswith("_lastlayer_exercise_") for m in sys.modules)


@pytest.mark.parametrize("name, right, slip, line, words", SLIPS,
                         ids=[f"{s[0]}:{s[2]}" for s in SLIPS])
def test_a_slip_fails_naming_the_tensor_and_the_error(name, right, slip, line, words, tmp_path,
                                                      monkeypatch, capsys):
    assert SOLUTIONS[name].count(right) == 1, right
    (tmp_path / "mine.py").write_text(SOLUTIONS[name].replace(right, slip))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["exercise", "check", name, "mine.py"], capsys)
    assert code == 1, out
    failing = [s for s in lines_of(out) if s.startswith(line)]
    assert len(failing) == 1, out
    assert all(w in failing[0] for w in words), failing[0]
    if "relative error" in line:
        error = float(re.search(r"relative error (\S+) \(tolerance (\S+)\)", failing[0]).group(1))
        assert error > 1e-3, failing[0]


def test_the_offending_gradient_alone_fails(tmp_path, monkeypatch, capsys):
    """dW off by a factor: the lines of x and b pass, the one of W names it, measured by
    the engine's gradient check: max|2 dW - dW| / max|2 dW| is exactly 1/2."""
    (tmp_path / "c.py").write_text(CONV1D.replace('{"W": dW, "b"', '{"W": 2 * dW, "b"'))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["exercise", "check", "conv1d", "c.py"], capsys)
    assert code == 1
    status = {s[16:].split(" is wrong")[0].split(":")[0]: s[:4]
              for s in lines_of(out) if s[6:].startswith("backward")}
    assert status == {"gradient of x": "PASS", "gradient of W": "FAIL", "gradient of b": "PASS"}
    assert ("FAIL  backward: gradient of W is wrong: relative error 5.0e-01 (tolerance 1e-07); "
            "worst for Conv1D(2, 3, kernel_size=3, stride=1, padding=0) on x (2, 2, 7); yours "
            "is 2 times the right one") in out


def test_a_ridge_solution_for_another_lam_is_named(tmp_path, monkeypatch, capsys):
    """lam where N lam belongs: the solution of lam / N (N = 40 in the worst problem)."""
    (tmp_path / "r.py").write_text(RIDGE_HEAD.replace("n * lam * np.eye(d)", "lam * np.eye(d)"))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["exercise", "check", "ridge-head", "r.py"], capsys)
    assert code == 1
    assert "worst for N 40, d 6, C 3, lam 0.1; your W minimises J for lam / N" in out
    assert "FAIL  W against lastlayer.engine.solvers.exact.ridge is wrong: relative error" in out


def test_an_error_at_import_or_a_missing_name_is_a_fail_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text("def fit(:\n")
    code, out, _ = run(["exercise", "check", "ridge-head", "bad.py"], capsys)
    assert code == 1 and lines_of(out) == ["FAIL  load bad.py: bad.py does not compile: "
                                           "invalid syntax (line 1)"]
    (tmp_path / "boom.py").write_text("import numpy\nraise RuntimeError('at import')\n")
    code, out, _ = run(["exercise", "check", "ridge-head", "boom.py"], capsys)
    assert code == 1 and lines_of(out) == ["FAIL  load boom.py: importing boom.py raised "
                                           "RuntimeError: at import (boom.py, line 2)"]
    (tmp_path / "other.py").write_text(RIDGE_HEAD)
    code, out, _ = run(["exercise", "check", "leaky-relu", "other.py"], capsys)
    assert code == 1 and "other.py defines no LeakyReLU" in out


def test_start_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaky_relu.py").write_text("my work\n")
    code, out, err = run(["exercise", "start", "leaky-relu"], capsys)
    assert code == 2 and out == ""
    assert err == ("lastlayer exercise: leaky_relu.py: the file exists and was left as it is; "
                   "move it away or give another --out FILE\n")
    assert (tmp_path / "leaky_relu.py").read_text() == "my work\n"
    code, out, err = run(["exercise", "start", "leaky-relu", "--out", "sub/x.py"], capsys)
    assert code == 2 and err.startswith("lastlayer exercise: --out sub/x.py: directory")
    code, out, _ = run(["exercise", "start", "leaky-relu", "--out", "try 2.py"], capsys)
    assert code == 0 and "lastlayer exercise check leaky-relu 'try 2.py'" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaky_relu.py", "try 2.py"]


def test_list_names_every_exercise(capsys):
    code, out, err = run(["exercise", "list"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(EXERCISES)
    for line, e in zip(lines, EXERCISES.values()):
        assert line.endswith(e.title)


def test_usage_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["exercise", "check", "lasso", "x.py"], capsys)
    assert code == 2 and out == "" and err.startswith("lastlayer exercise: unknown exercise "
                                                      "'lasso'; the exercises are leaky-relu")
    code, _, err = run(["exercise", "start", "lasso"], capsys)
    assert code == 2 and "unknown exercise 'lasso'" in err
    code, _, err = run(["exercise", "check", "conv1d", "missing.py"], capsys)
    assert code == 2 and err == "lastlayer exercise: FILE missing.py: no such file\n"
    code, _, err = run(["exercise", "check", "conv1d"], capsys)  # FILE: start's default name
    template = EXERCISES["conv1d"].template
    assert code == 2 and err == f"lastlayer exercise: FILE {template}: no such file\n"
    assert list(tmp_path.iterdir()) == []


def test_check_without_file_checks_the_copy_start_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(["exercise", "start", "leaky-relu"], capsys)[0] == 0
    (tmp_path / EXERCISES["leaky-relu"].template).write_text(SOLUTIONS["leaky-relu"])
    code, out, _ = run(["exercise", "check", "leaky-relu"], capsys)
    assert code == 0 and out.splitlines()[-1].endswith(" passed, 0 failed"), out


def test_templates_import_only_engine_and_are_never_imported():
    """lastlayer.models.cli, imported above, loads all that `lastlayer exercise` needs; the templates
    are only read (the right solutions checked above ran as private modules)."""
    files = sorted(p for p in TEMPLATES.glob("*.py") if p.name != "__init__.py")
    assert sorted(p.name for p in files) == sorted(e.template for e in EXERCISES.values())
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in {"numpy", "dataclasses", "typing", "__future__"} \
                    or name.startswith("lastlayer.engine."), f"{path.name} imports {name}"
        assert "raise NotImplementedError(" in path.read_text()
    assert not [m for m in sys.modules if m.startswith("lastlayer.models.exercises.templates.")]

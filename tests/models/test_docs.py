"""The repository carries its own documentation: every ledger ID is documented in
docs/claims.md, every reference to a doc points to a file that exists, and every code block
of README.md and docs/**/*.md runs (or, for commands too long to run here, is accepted as
written by the command line's parser)."""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import io
import re
import shlex
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

import lastlayer.models.cli as cli
from lastlayer.models.papers import all_checks

ROOT = Path(__file__).resolve().parents[2]


def _text_files():
    for folder in ("engine", "kernels", "models", "tests", "bench", "docs"):
        yield from (ROOT / folder).rglob("*.py")
        yield from (ROOT / folder).rglob("*.md")
    yield ROOT / "README.md"


def test_every_ledger_id_is_documented_in_docs_claims():
    text = (ROOT / "docs" / "claims.md").read_text()
    documented = set(re.findall(r"\*\*([A-Z][\w.-]*)[*:]", text)) | set(
        re.findall(r"^\| ([A-Z][\w.-]*) \|", text, re.M))
    missing = [c.id for c in all_checks() if c.id not in documented]
    assert not missing, f"docs/claims.md does not document {missing}"


def test_doc_references_point_to_files_in_the_repository():
    for path in _text_files():
        text = path.read_text()
        for ref in set(re.findall(r"docs/[\w.-]+\.md", text)):
            assert (ROOT / ref).exists(), f"{path.relative_to(ROOT)} refers to {ref}, which is missing"
        stale = re.findall(r"(?<![\w/])(CLAIMS|DESIGN)\.md", text)
        assert not stale, f"{path.relative_to(ROOT)} refers to {stale}, which users cannot read"


def _dead_links(path: Path) -> list[str]:
    """The relative Markdown links ``[text](target)`` of ``path`` whose file is missing
    (targets resolved from the page's folder, ``#anchor`` removed; URLs skipped)."""
    dead = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            dead.append(target)
    return dead


def test_relative_links_of_the_docs_resolve(tmp_path):
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        dead = _dead_links(path)
        assert not dead, f"{path.relative_to(ROOT)} links to missing files: {dead}"
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md#top) [web](https://example.org) [gone](02-missing.md#L1)\n")
    assert _dead_links(page) == ["02-missing.md#L1"]  # the check can fail


# ---- every code block of README.md and docs/**/*.md runs ---------------------------------------
# Blocks of one file run in order, in one namespace and one temporary folder (as a reader
# pasting them would): ```python blocks are executed (doctest-style when they hold ">>> "
# lines, checked against a following ```output block when there is one); in shell blocks
# (```bash / ```text / ```console) every command line is either run (RUN below) or, when it
# is too long to run here, parsed by lastlayer.models.cli.build_parser() with every flag checked. A
# block or command line that is neither run nor classified here fails the test.
RUN = "run"
# Every `lastlayer ...` command line of the docs, by its exact text (`.venv/bin/` prefix and
# trailing comment removed): RUN, through lastlayer.models.cli.main(argv) in the file's folder, or the
# reason (measured on 2 cores) it is only parsed.
COMMANDS = {
    "lastlayer verify": "the whole ledger, 133 rows: 32 s",
    "lastlayer verify --only G-Conv M C1": RUN,
    "lastlayer verify --only M C2": "4 s of rows that `verify --only G-Conv M C1` runs",
    "lastlayer verify --json ledger.json": "the whole ledger: 32 s",
    "lastlayer verify --json rows.json": "the whole ledger: 32 s",
    "lastlayer verify --wide": "the whole ledger: 32 s",
    "lastlayer verify --list": RUN,
    "lastlayer verify --only M2": RUN,
    "lastlayer verify --only M": "3 s of rows that `verify --only G-Conv M C1` runs",
    "lastlayer verify --only H": "9 s",
    "lastlayer verify --only C": "16 s",
    "lastlayer verify --only P": "14 s",
    "lastlayer verify --only E": RUN,
    "lastlayer verify --only G-Dense G-SoftmaxCE": RUN,
    "lastlayer exercise list": RUN,
    "lastlayer verify --only G-Network": RUN,
    "lastlayer verify --only G-Conv2D G-MaxPool2D": RUN,
    "lastlayer exercise start leaky-relu": RUN,
    "lastlayer exercise check leaky-relu leaky_relu.py": "exits 1 on purpose: the template is "
                                                         "untouched (tests/models/test_exercise.py "
                                                         "runs every outcome)",
    "lastlayer reproduce post-training --quick": "38 s (tests/models/papers run it small)",
    "lastlayer reproduce post-training --seeds 5 --out runs/pt": "the full run: minutes",
    "lastlayer reproduce fixed-classifier --quick": "longer than the 1-seed runs of "
                                                    "tests/models/papers (2-20 s)",
    "lastlayer reproduce layca --quick": "longer than the 1-seed runs of tests/models/papers "
                                         "(2-20 s)",
    "lastlayer reproduce pof --quick": "58 s (tests/models/papers run it small)",
    "lastlayer reproduce pof --seeds 10 --out runs/pof": "the full run: many minutes",
    "lastlayer reproduce entame --quick": "32 s (tests/models/papers run it small)",
    "lastlayer reproduce entame --out runs/entame": "the full run: many minutes",
    "lastlayer head fit features.h5:train/x --targets features.h5:train/y --loss squared "
    "--lam-grid 1e-8:1:20 --cv loo --bias --out ridge.h5": RUN,
    "lastlayer head fit features.h5:train/x --labels features.h5:train/labels --loss ce "
    "--lam-grid 1e-6:1e-1:8 --cv 5 --bias --out softmax.h5": "17 s (40 streamed Newton solves)",
    "lastlayer head eval softmax.h5 features.h5:train/x --labels features.h5:train/labels":
        "needs softmax.h5 of the 17 s fit above",
    "lastlayer train --data mnist --arch cnn --epochs 2 --dtype float32 --save cnn.h5": RUN,
    "lastlayer features cnn.h5 --out cnn-features.h5": RUN,
    "lastlayer head fit cnn-features.h5:train/features --labels cnn-features.h5:train/labels "
    "--loss ce --lam 1e-3 --bias --out head.h5": RUN,
    "lastlayer head eval head.h5 cnn-features.h5:test/features --labels "
    "cnn-features.h5:test/labels": RUN,
    "lastlayer train --data digits --hidden 128,128 --epochs 30 --seed 0": RUN,
    "lastlayer train --data diabetes --hidden 16 --optimizer sgd_amom --lr 0.05 "
    "--weight-decay 1e-2 --iterations 500": RUN,
    "lastlayer train --data toy --iterations 300 --save run.h5": RUN,
    "lastlayer train --resume run.h5 --iterations 600 --json run.json": RUN,
    "lastlayer train --epochs 500 --save run.h5 --save-every 1000": "10 500 iterations: 30 s",
    "lastlayer head fit cnn-features.h5:train/features --labels cnn-features.h5:train/labels "
    "--loss ce --lam 1e-3 --bias --laplace --out head-laplace.h5":
        "10 s (tests/models/test_head_laplace.py runs --laplace fit and eval on small features)",
    "lastlayer head eval head-laplace.h5 cnn-features.h5:test/features --labels "
    "cnn-features.h5:test/labels": "needs head-laplace.h5 of the 10 s fit above",
    "lastlayer verify --only NC LA CAL": "10 s of rows that tests/models/test_beyond_*.py run "
                                         "one by one",
    "lastlayer compare --quick": "80 s (tests/models/test_compare.py runs the study small)",
    "lastlayer compare --out runs/cmp": "the full study: 4.5 min on 2 workers",
    "lastlayer reproduce pof --workers 2 --out runs/pof": "the full run on 2 workers: minutes "
                                                          "(tests/models/test_tasks.py runs a "
                                                          "small study on 2 workers)",
    "lastlayer compare --scheduler tcp://10.0.0.5:8786 --out runs/cmp":
        "needs a cluster at that address (tests/models/test_tasks.py starts one)",
    "lastlayer reproduce pof --out runs/pof --resume": "the full run, resumed: minutes "
                                                      "(tests/models/test_tasks.py interrupts "
                                                      "and resumes a small study)",
}
# Shell lines that are not `lastlayer` commands, and how each is checked.
OTHERS = {
    ".venv/bin/python - <<'PY'": "run: the here-document is executed as a script, in the folder",
    ".venv/bin/python -m pytest bench": "the benchmarks (minutes; the 2 000 000-row out-of-core "
                                        "fit among them): bench/ must be a folder of pytest files",
}
# Blocks without commands or code (first line -> what they are).
LISTINGS = {
    ("docs/tutorial/exercises.md", "FAIL  backward: gradient of x is wrong: relative error "
                                   "9.9e-01 (tolerance 1e-07); worst for slope 0.01, x (4, 6); "
                                   "right where x > 0, wrong where x < 0 (there dx = slope dy = "
                                   "0.01 dy)"): "a check's output for a wrong backward",
    ("README.md", "M2-primal-dual PASS               measured   4.10e-13  expected            0  "
                  "tolerance  1.00e-10  ridge closed form (their eqs. 7-8, N lam): primal == "
                  "dual == SVD == ker~"): "an excerpt of what the first line prints",
    ("docs/engine.md", "src/lastlayer/  __init__.py (the names a user needs most, __version__), "
                       "__main__.py"): "the folder layout",
    ("docs/design.md", "src/lastlayer/  the top package: the names a user needs most, "
                       "__version__; __main__.py"): "the layering of the packages",
}
# The one exempt block: the README's first (the install lines; CI runs them, .ci/run, and
# tests/models/test_packaging.py checks that it does).
EXEMPT = ("README.md", 0)
SHELL = ("bash", "text", "console")
PROGRAMS = ("lastlayer", "python", "python3", "pip")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
VARIES = "# varies"  # on an output line or a doctest source line: run, output not compared


class Block(NamedTuple):
    path: str  # relative to the repository
    index: int  # among the file's blocks
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} (```{self.lang})"


class Command(NamedTuple):
    text: str  # canonical: `.venv/bin/` and the trailing comment removed, continuations joined
    argv: list
    script: str | None  # the here-document of `python - <<'PY'`
    output: str | None  # the expected output of a ```console command


def doc_files() -> list[str]:
    return ["README.md"] + sorted(p.relative_to(ROOT).as_posix()
                                  for p in (ROOT / "docs").rglob("*.md"))


def blocks_of(path: str, text: str) -> list[Block]:
    found, lines, k = [], text.splitlines(), 0
    while k < len(lines):
        if lines[k].startswith("```"):
            start, lang = k, lines[k][3:].strip()
            k += 1
            while k < len(lines) and lines[k].rstrip() != "```":
                k += 1
            if k == len(lines):
                raise AssertionError(f"{path}:{start + 1}: a code block is not closed")
            body = "\n".join(lines[start + 1:k]) + "\n"
            found.append(Block(path, len(found), start + 1, lang, body))
        k += 1
    return found


def _program(line: str) -> str:
    words = line.split()
    return words[0].removeprefix(".venv/bin/") if words else ""


def commands_of(block: Block) -> list[Command]:
    """The command lines of a shell block (none: a listing). A line that is not a command
    of PROGRAMS in a block that has one is an error."""
    raw = block.text.splitlines()
    logical, k = [], 0
    while k < len(raw):
        line, first = raw[k], k
        while line.endswith("\\") and k + 1 < len(raw):
            k += 1
            line = line[:-1].rstrip() + " " + raw[k].strip()
        logical.append((first, line))
        k += 1
    console = block.lang == "console"
    if not any(_program(line[2:] if console and line.startswith("$ ") else line) in PROGRAMS
               for _, line in logical):
        return []  # prose or a listing: no line starts with a command
    out: list[Command] = []
    k = 0
    while k < len(logical):
        first, line = logical[k]
        k += 1
        if console:
            if not line.startswith("$ "):
                if out and out[-1].output is not None:
                    out[-1] = out[-1]._replace(output=out[-1].output + line + "\n")
                    continue
                if line.strip():
                    raise AssertionError(f"{block.where}, line {first + 1}: output before "
                                         f"any `$ ` command")
                continue
            line = line[2:]
        words = shlex.split(line, comments=True)
        if not words:
            continue
        program = _program(line)
        if program not in PROGRAMS:
            raise AssertionError(f"{block.where}, line {first + 1}: {line.strip()!r} is neither a "
                                 f"command of {', '.join(PROGRAMS)} nor classified")
        script = None
        heredoc = re.search(r"<<\s*'?(\w+)'?\s*$", line)
        if heredoc:
            body = []
            while k < len(logical) and logical[k][1].strip() != heredoc.group(1):
                body.append(logical[k][1])
                k += 1
            k += 1
            script = "\n".join(body) + "\n"
            text = line.split("#")[0].strip()
        else:
            text = (" ".join([program, *words[1:]]) if program == "lastlayer"
                    else line.split(" #")[0].strip())
        out.append(Command(text, words[1:], script, "" if console else None))
    return out


def plan(path: str, text: str) -> list[tuple[Block, str]]:
    """Every block of a file with what is done with it: "python", "commands", "output" (the
    expected stdout of the python block before it), "listing" or "exempt"; AssertionError
    for a block or command that is neither run nor classified."""
    steps = []
    for block in blocks_of(path, text):
        if (path, block.index) == EXEMPT:
            assert block.lang == "bash" and len(block.text.splitlines()) == 2, block.where
            steps.append((block, "exempt"))
        elif block.lang == "python":
            steps.append((block, "python"))
        elif block.lang == "output":
            assert steps and steps[-1][1] == "python", (
                f"{block.where}: an output block follows no python block")
            steps.append((block, "output"))
        elif block.lang in SHELL:
            commands = commands_of(block)
            if not commands:
                first = block.text.splitlines()[0]
                assert (path, first) in LISTINGS, (
                    f"{block.where}: a block that is neither run nor classified (first line "
                    f"{first!r}): make it runnable, or add it to LISTINGS in {Path(__file__).name}")
                steps.append((block, "listing"))
                continue
            for c in commands:
                known = COMMANDS if c.text.startswith("lastlayer") else OTHERS
                assert c.text in known, (
                    f"{block.where}: {c.text!r} is neither run nor classified: add it to "
                    f"{'COMMANDS' if known is COMMANDS else 'OTHERS'} in {Path(__file__).name}")
            steps.append((block, "commands"))
        else:
            raise AssertionError(f"{block.where}: a block of language {block.lang!r} is neither "
                                 f"run nor classified (expected python, output or "
                                 f"{', '.join(SHELL)})")
    return steps


def outputs_match(want: str, got: str) -> bool:
    """Line by line (blank lines and surrounding spaces ignored): the text equal, every number
    equal to its printed digits (|got - want| <= half a unit of want's last digit); a line of
    ``want`` ending in "# varies" matches any line."""
    wants = [w.strip() for w in want.splitlines() if w.strip()]
    gots = [g.strip() for g in got.splitlines() if g.strip()]
    if len(wants) != len(gots):
        return False
    for w, g in zip(wants, gots):
        if w.endswith(VARIES):
            continue
        if " ".join(NUMBER.split(w)).split() != " ".join(NUMBER.split(g)).split():
            return False
        nw, ng = NUMBER.findall(w), NUMBER.findall(g)
        if len(nw) != len(ng):
            return False
        for a, b in zip(nw, ng):
            mantissa, _, exponent = a.lower().partition("e")
            decimals = len(mantissa.partition(".")[2])
            half = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
            if abs(float(b) - float(a)) > half * (1 + 1e-9):
                return False
    return True


_VARIES_FLAG = doctest.register_optionflag("LASTLAYER_VARIES")


class _Digits(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        return bool(optionflags & _VARIES_FLAG) or outputs_match(want, got)


def run_python(block: Block, namespace: dict, expected: str | None) -> None:
    code = textwrap.dedent(block.text)
    if re.search(r"^\s*>>> ", code, re.M):
        test = doctest.DocTestParser().get_doctest(code, namespace, block.where, block.path,
                                                   block.line)
        for example in test.examples:  # a varying output: run, not compared
            if VARIES in example.source:
                example.options[_VARIES_FLAG] = True
        report = io.StringIO()
        runner = doctest.DocTestRunner(checker=_Digits(), optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=report.write, clear_globs=False)
        namespace.update(test.globs)  # DocTest ran on a copy: the next block sees its names
        assert result.failed == 0, f"{block.where}:\n{report.getvalue()}"
        return
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, block.where, "exec"), namespace)
    if expected is not None:
        assert outputs_match(expected, stdout.getvalue()), (
            f"{block.where}: printed\n{stdout.getvalue()}\nthe output block after it "
            f"shows\n{expected}")


def check_parses(command: Command) -> None:
    """A command too long to run: the parser accepts it exactly as documented (every flag
    and value), and a `verify --only` prefix selects rows."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = cli.build_parser().parse_args(command.argv)
        except SystemExit as exc:
            raise AssertionError(f"{command.text!r}: refused (exit {exc.code}): {err.getvalue()}")
    if args.command == "verify" and args.only:
        ids = [c.id for c in all_checks()]
        for prefix in args.only:
            assert any(i.startswith(prefix) for i in ids), (
                f"{command.text!r}: {prefix} selects no row")


def run_commands(block: Block, capsys) -> None:
    for c in commands_of(block):
        if c.script is not None:
            code = compile(c.script, f"{block.where}: here-document", "exec")
            exec(code, {"__name__": "__main__"})  # a script of its own: a fresh namespace
        elif c.text.startswith("lastlayer"):
            if COMMANDS[c.text] != RUN:
                check_parses(c)
                continue
            capsys.readouterr()
            code = cli.main(c.argv)
            out, err = capsys.readouterr()
            assert code == 0, f"{block.where}: {c.text!r} exited {code}:\n{out}\n{err}"
            if c.output:
                assert outputs_match(c.output, out), f"{block.where}: {c.text!r} printed\n{out}"
        elif c.text == ".venv/bin/python -m pytest bench":
            assert importlib.util.find_spec("pytest") is not None
            assert sorted((ROOT / "bench").glob("test_*.py")), "bench/ holds no pytest files"
        else:  # pragma: no cover - plan() refuses anything else
            raise AssertionError(c.text)


class _Session:
    """One file's blocks, run in order in one namespace and one folder, each once (a test
    selected alone runs the blocks before it first)."""

    def __init__(self, path: str, folder: Path):
        self.steps = plan(path, (ROOT / path).read_text())
        self.namespace: dict = {"__name__": "__main__"}
        self.folder, self.failures = folder, {}
        self.done = 0

    def run_through(self, index: int, capsys) -> None:
        while self.done <= index:
            k, self.done = self.done, self.done + 1
            block, kind = self.steps[k]
            try:
                if kind == "python":
                    after = self.steps[k + 1] if k + 1 < len(self.steps) else None
                    expected = after[0].text if after and after[1] == "output" else None
                    run_python(block, self.namespace, expected)
                elif kind == "commands":
                    run_commands(block, capsys)
            except Exception as exc:  # noqa: BLE001 - reported by the block's own test
                self.failures[k] = exc
        if index in self.failures:
            earlier = [self.steps[j][0].where for j in self.failures if j < index]
            note = f" (earlier blocks failed too: {', '.join(earlier)})" if earlier else ""
            raise AssertionError(f"{self.steps[index][0].where}{note}") from self.failures[index]


DOC_STEPS = [(path, k, block) for path in doc_files()
             for k, (block, _) in enumerate(plan(path, (ROOT / path).read_text()))]
_SESSIONS: dict[str, _Session] = {}


@pytest.mark.parametrize("path, k", [(p, k) for p, k, _ in DOC_STEPS],
                         ids=[f"{b.path}:{b.line}-{b.lang}" for _, _, b in DOC_STEPS])
def test_every_code_block_runs(path, k, tmp_path_factory, monkeypatch, capsys):
    if path not in _SESSIONS:
        _SESSIONS[path] = _Session(path, tmp_path_factory.mktemp(path.replace("/", "-")))
    session = _SESSIONS[path]
    monkeypatch.chdir(session.folder)
    session.run_through(k, capsys)


def test_the_classification_tables_name_only_what_the_docs_hold():
    """No stale entry: every classified command, line and listing is in a doc."""
    commands, listings = set(), set()
    for path in doc_files():
        for block, kind in plan(path, (ROOT / path).read_text()):
            if kind == "commands":
                commands |= {c.text for c in commands_of(block)}
            elif kind == "listing":
                listings.add((path, block.text.splitlines()[0]))
    assert set(COMMANDS) | set(OTHERS) == commands
    assert set(LISTINGS) == listings
    assert any(v == RUN for v in COMMANDS.values())


# ---- the doc runner itself ---------------------------------------------------------------------
def test_a_new_block_that_is_neither_run_nor_classified_fails():
    with pytest.raises(AssertionError, match="neither run nor classified.*LISTINGS"):
        plan("NEW.md", "```text\nsome listing\n```\n")
    with pytest.raises(AssertionError, match="'lastlayer verify --only X' is neither run nor"):
        plan("NEW.md", "```bash\nlastlayer verify --only X   # new\n```\n")
    with pytest.raises(AssertionError, match="'rm -rf runs' is neither a command"):
        plan("NEW.md", "```bash\nlastlayer verify --list\nrm -rf runs\n```\n")
    with pytest.raises(AssertionError, match="'some listing' is neither a command"):
        plan("NEW.md", "```text\nsome listing\nlastlayer verify --only Y\n```\n")
    with pytest.raises(AssertionError, match="language 'json' is neither run nor classified"):
        plan("NEW.md", "```json\n{}\n```\n")
    with pytest.raises(AssertionError, match="follows no python block"):
        plan("NEW.md", "```output\n1\n```\n")
    steps = plan("NEW.md", "```python\nx = 1\n```\n\n```output\n1\n```\n"
                           "```console\n$ lastlayer verify --list\nP1  a row\n```\n")
    assert [kind for _, kind in steps] == ["python", "output", "commands"]
    (command,) = commands_of(steps[2][0])
    assert command.text == "lastlayer verify --list" and command.output == "P1  a row\n"


def test_outputs_are_compared_to_their_printed_digits():
    assert outputs_match("0.123 (5, 64)\n", "0.12345 (5, 64)")
    assert not outputs_match("0.123", "0.1236")
    assert outputs_match("kkt 3.5e-12", "kkt 3.46851e-12")
    assert not outputs_match("3.5e-12", "3.6e-12")
    assert not outputs_match("lam 0.1", "lambda 0.1") and not outputs_match("1\n2", "1")
    assert outputs_match("took 1.2 s  # varies\nok", "took 9.9 s\nok")


def test_doctest_blocks_and_output_blocks_are_checked():
    good = Block("X.md", 0, 1, "python", ">>> print(round(2 / 3, 6))\n0.667\n>>> 1 + 1\n2\n")
    run_python(good, {}, None)
    bad = good._replace(text=">>> print(2 / 3)\n0.6\n")  # 0.7 would match: 2 / 3 to 1 digit
    with pytest.raises(AssertionError, match="X.md:1"):
        run_python(bad, {}, None)
    varying = good._replace(text=">>> import time; print(time.time())  # varies\n1.0\n")
    run_python(varying, {}, None)
    printing = good._replace(text="print(2 / 3)\n")
    run_python(printing, {}, "0.67")
    with pytest.raises(AssertionError, match="the output block after it shows"):
        run_python(printing, {}, "0.5")


def test_a_command_too_long_to_run_is_parsed_flag_by_flag():
    check_parses(Command("lastlayer reproduce pof --seeds 10 --out runs/pof",
                         ["reproduce", "pof", "--seeds", "10", "--out", "runs/pof"], None, None))
    for argv, why in ((["verify", "--wdie"], "unrecognized arguments: --wdie"),
                      (["reproduce", "pof", "--seeds", "0"], "--seeds"),
                      (["reproduce", "pofx", "--quick"], "invalid choice"),
                      (["verify", "--only", "Q"], "Q selects no row")):
        with pytest.raises(AssertionError, match=why):
            check_parses(Command("lastlayer " + " ".join(argv), argv, None, None))


# ---- source pointers ---------------------------------------------------------------------------
POINTER = re.compile(r"\[`([\w.]+)`\]\(((?:\.\./)+)([\w/.-]+\.py)#L(\d+)-L(\d+)\)")


def test_source_pointers_start_at_the_definition_they_name():
    """A link [`Dense.backward`](../../engine/layers/dense.py#L65-L72) in docs/ points to a
    range of the file that starts with the definition of its last name (`def backward`, in
    `class Dense`) and ends inside it, so a pointer cannot silently go stale."""
    checked = 0
    for path in doc_files():
        folder = (ROOT / path).parent
        for name, up, target, start, end in POINTER.findall((ROOT / path).read_text()):
            source = (folder / up / target).resolve()
            where = f"{path}: [{name}]({up}{target}#L{start}-L{end})"
            assert source.is_file(), f"{where}: no such file"
            lines = source.read_text().splitlines()
            start, end = int(start), int(end)
            assert 1 <= start <= end <= len(lines), f"{where}: the file has {len(lines)} lines"
            *owners, last = name.split(".")
            first = lines[start - 1]
            assert re.match(rf"\s*(def|class) {last}\b", first), (
                f"{where}: line {start} is {first.strip()!r}, not the definition of {last}")
            indent = len(first) - len(first.lstrip())
            for line in lines[start:end]:
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    assert not re.match(r"\s*(def|class) ", line), (
                        f"{where}: the range runs past {last} into {line.strip()!r}")
            if owners and owners[-1][0].isupper():
                above = [ln for ln in lines[:start - 1]
                         if re.match(rf"\s{{0,{max(indent - 1, 0)}}}class \w+", ln)]
                assert above and re.match(rf"\s*class {owners[-1]}\b", above[-1]), (
                    f"{where}: {last} is not defined in class {owners[-1]}")
            checked += 1
    assert checked, "no source pointer found in docs/"

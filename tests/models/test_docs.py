"""The repository carries its own documentation: every ledger ID is documented in
docs/claims.md, and every reference to a doc points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from models.papers import all_checks

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

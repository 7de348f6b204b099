"""Every results file the documentation names exists, and every results file is named.

A number in the docs points at the results JSON that holds it (docs/results/); a renamed or
deleted file would leave the number without a source, and a file no page names is a
measurement nobody can find.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # reads text files only

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
# `docs/results/NAME.json` from the README and CHANGELOG, `results/NAME.json` from a page in
# docs/; NAME may be a glob pattern (`store_scale_routing_*.json`) standing for several files.
NAMED = re.compile(r"(?<![\w./-])(?:docs/)?results/([\w.*\-]+\.json)(?!\w)")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def named_results(text: str) -> set[str]:
    return set(NAMED.findall(text))


def test_the_pattern_finds_both_link_styles_and_globs():
    text = ("see docs/results/a_b-1.json, [run](results/c.json) and `docs/results/d_*.json`; "
            "not my_results/e.json nor results/f.jsonl")
    assert named_results(text) == {"a_b-1.json", "c.json", "d_*.json"}


def test_every_named_results_file_exists():
    present = sorted(p.name for p in RESULTS.glob("*.json"))
    missing = []
    for doc in doc_files():
        for name in sorted(named_results(doc.read_text(encoding="utf-8"))):
            if not any(fnmatch(file, name) for file in present):
                missing.append(f"{doc.relative_to(ROOT)}: results/{name}")
    assert not missing, "named in the docs but not in docs/results/:\n" + "\n".join(missing)


def test_every_results_file_is_named_in_the_docs():
    patterns = set().union(*(named_results(doc.read_text(encoding="utf-8")) for doc in doc_files()))
    orphans = [p.name for p in sorted(RESULTS.glob("*.json")) if not any(fnmatch(p.name, n) for n in patterns)]
    assert not orphans, "results files no doc names: " + ", ".join(orphans)

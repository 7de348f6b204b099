"""Every measured figure in README, docs and CHANGELOG names the results file it comes from.

scripts/audit_figures.py finds the figures (decimals, percentages, ratios, durations, counts
of an outcome) and checks that the paragraph, list item or table holding each one (or the
table's caption, or the command right above) names a docs/results/*.json file that exists.
These tests run it on the repository and pin its rules on small synthetic pages.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # reads text files only

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("audit_figures", ROOT / "scripts" / "audit_figures.py")
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = audit  # dataclasses look their module up while the class is made
_spec.loader.exec_module(audit)


def figures(markdown: str, present: tuple[str, ...] = ("run.json",)) -> list[tuple[str, bool]]:
    """(figure, sourced) for each measured figure of a synthetic page."""
    return [(f.text, bool(f.sources)) for f in audit.audit_text(markdown, "page.md", present)]


def test_every_figure_in_the_docs_names_an_existing_results_file():
    found = audit.audit_repo(ROOT)
    unsourced = [f"{f.path}:{f.line}: {f.text}" for f in found if not f.sources]
    assert len(found) > 100, "the audit found almost no figures: its detector is broken"
    assert not unsourced, ("figures naming no docs/results/*.json (name the file and command, or remove "
                           "the figure):\n" + "\n".join(unsourced))


def test_a_table_sourced_by_its_caption_and_command_passes():
    page = """## Retrieval

```bash
memorag eval hotpotqa --output docs/results/run.json
```

recall@5 / all_gold@5:

| method | 20 questions |
|---|---|
| hybrid | 0.750 / 0.550 |
| memorag | 0.875 / 0.750 |
"""
    assert figures(page) == [("0.750", True), ("0.550", True), ("0.875", True), ("0.750", True)]


def test_a_figure_in_a_paragraph_without_a_file_fails():
    page = "The judge lifts recall@5 to 0.85 and answers took 36 s.\n"
    assert figures(page) == [("0.85", False), ("36 s", False)]


def test_a_named_file_that_does_not_exist_is_no_source():
    page = "Recall@5 0.85 (`docs/results/missing.json`).\n"
    assert figures(page) == [("0.85", False)]


def test_a_source_in_another_paragraph_does_not_count():
    page = "Written to `docs/results/run.json`.\n\nRecall@5 was 0.85.\n"
    assert figures(page) == [("0.85", False)]


def test_a_list_item_is_sourced_by_the_paragraph_introducing_its_list():
    page = "From `docs/results/run.json`:\n\n- adding took ~8 s per document\n- RSS grew to 5.9 GB\n"
    assert figures(page) == [("~8 s", True), ("5.9", True)]


@pytest.mark.parametrize("text, expected", [
    ("recall@5 0.8313 against 0.7438", ["0.8313", "0.7438"]),
    ("quotes 15.4% of gold sentences", ["15.4%"]),
    ("the median question took 1.51x the base's time", ["1.51x"]),
    ("a run of 15.6 minutes, 179 tok/s", ["15.6 minutes", "179 tok/s"]),
    ("better on 6 of 12, one gold paragraph in 40", ["6 of 12", "one gold paragraph in 40"]),
    ("the demo's 7/10", ["7/10"]),
])
def test_measured_figures_are_found(text, expected):
    assert [figure for figure, _ in figures(text + "\n")] == expected


@pytest.mark.parametrize("text", [
    "Python >= 3.10, `pkg==0.9.0`, llama-cpp-python 0.3.36, SQuAD 2.0, Linux 3.15+",  # versions
    "Qwen2.5-Coder-1.5B with recall@5 and F1 on 32K tokens",  # names
    "`--kill-at 0.9`, `clue_weight=1.0`, and a checkpoint every 10 seconds",  # settings
    "3 questions over 10 documents of 1,500 tokens",  # bare counts define the run
    "4 chains of 5 variables per haystack",  # a count between two nouns builds the run
    "the issue's bars (90% verbatim, 30% gold quoted) are not met",  # goals
    'progress says "memory: resumed from 69.5% (1,536 of 2,210 tokens)"',  # a quoted message
    "retries 408/409 and 5xx; any status but 200/202 is an error",  # HTTP statuses
    "2026-11-26 11:27-11:45 UTC",  # dates and times
    "adapter: 16.8 MiB, sha256 checked before use",  # a shipped file's size
])
def test_what_is_not_a_measurement_is_ignored(text):
    assert figures(text + "\n") == []


def test_fenced_code_and_headings_are_not_read():
    page = "## Round 0.5\n\n```\npython bench.py --ratio 3.69 --seconds 12.5\n```\n"
    assert figures(page) == []


def test_every_allowed_figure_is_still_in_its_file():
    # An entry whose line is gone would excuse nothing and hide that the list rotted.
    for path, figure, words, reason in audit.ALLOWED:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert words in text and figure in words, (path, figure)
        assert reason.strip(), (path, figure)


def test_the_command_lists_unsourced_figures_and_exits_1(tmp_path, capsys):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "run.json").write_text(json.dumps({"recall@5": 0.85}))
    (tmp_path / "README.md").write_text("Recall@5 0.85 (`docs/results/run.json`).\n")
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n- Faster: 2.7x at 12K tokens.\n")
    (tmp_path / "docs" / "page.md").write_text("Nothing measured here, 3 questions.\n")
    assert audit.main([str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == ["CHANGELOG.md:3: 2.7x  [NO SOURCE]"]
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n- Faster (see `docs/results/run.json`): 2.7x.\n")
    assert audit.main([str(tmp_path)]) == 0


def test_value_check_finds_a_figure_its_file_does_not_hold(tmp_path):
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    (results / "run.json").write_text(json.dumps({"methods": {"hybrid": {"recall@5": 0.7583, "quoted": 0.1544}}}))
    held, percent, wrong = (audit.Figure("p.md", 1, text, ("run.json",)) for text in ("0.758", "15.4%", "0.760"))
    assert audit.value_in_files(held, results) is True
    assert audit.value_in_files(percent, results) is True
    assert audit.value_in_files(wrong, results) is False

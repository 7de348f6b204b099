#!/usr/bin/env python3
"""List the measured figures in README.md, docs/*.md and CHANGELOG.md that name no results file.

Every measurement the docs quote must be findable: the block that holds it (the paragraph,
the list item, the table) names a ``docs/results/*.json`` file that exists. A table may name
its file in the caption right above it (the paragraph and the command that wrote the file),
a list item in the paragraph that introduces its list, and a paragraph may follow the
command that wrote its file.

What counts as a measured figure, and what does not, is decided by rules, not by a list of
accepted numbers:

* Measured figures: decimals (``0.850``), percentages (``15.4%``), ratios (``3.69x``),
  durations and rates (``36 s``, ``15.6 minutes``, ``179 tok/s``), counts of an outcome
  (``6 of 12``, ``1 gold paragraph in 40``, ``7/10``).
* Not measurements, never flagged:
  - fenced code and inline code (commands, options, file and package names, versions);
    headings; link targets and URLs;
  - numbers glued to a name on the left (``recall@5``, ``Qwen2.5``, ``F1``, ``e5``,
    ``hotpotqa-414``, ``arXiv:2409.05591``) or to letters on the right (``1.5B``, ``32K``);
  - versions: two dots (``0.9.0``), or after ``Python``, ``version``, ``>=``, ``==``;
  - settings: a number right after ``=`` (``clue_weight=1.0``) or right before ``by default``;
  - goals, not results: a figure shortly after ``bar``/``bars``/``target``/``the issue's``/
    ``asks for`` in the same sentence (``bar: 30%``);
  - a file's size in a block that gives the file's sha256 (a shipped file, checked on use);
  - bare integers (``3 questions``, ``10 documents``, ``2,048 tokens``): they define a run.
* The irreducible rest is ``ALLOWED`` below, each entry with its reason.

Usage: ``python scripts/audit_figures.py [ROOT] [--all]``; prints ``file:line: figure`` for
each unsourced figure (``--all`` also lists the sourced ones with their files) and exits 1 if
any figure is unsourced.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

# `docs/results/NAME.json` (README, CHANGELOG) or `results/NAME.json` (a page in docs/); NAME
# may be a glob standing for several files. The same pattern as tests/test_docs_results.py.
RESULTS_NAME = re.compile(r"(?<![\w./-])(?:docs/)?results/([\w.*\-]+\.json)(?!\w)")

# (file, text of the figure, words of its line that identify it): figures that no rule can
# tell from a measurement. Keep this short; every entry says why it is not one.
ALLOWED: tuple[tuple[str, str, str, str], ...] = (
    ("docs/guarantees.md", "3 s", "as fast as they can for 3 s",
     "how long tests/test_locking.py races two writers: a parameter of the test, not a result"),
    ("docs/scaling.md", "5 minutes", "20 clients asking for 5 minutes",
     "the load test's setting (its --seconds 300), not what it measured"),
)

_INTEGER = r"\d+(?:,\d{3})*"  # 1,636; never swallows the comma after a number
_NUMBER = rf"{_INTEGER}(?:\.\d+)?"
_RANGE = rf"{_NUMBER}(?:\s?[-–]\s?{_NUMBER})?"
# A figure must not continue a name or a number on its left: recall@5, Qwen2.5, 0.9.0, x86-64.
_LEFT = r"(?<![\w@.:/#=+-])(?<!\d,)"
FIGURE = re.compile(
    _LEFT + r"[~+]?(?:"
    rf"(?P<ratio>{_RANGE}\s?x)(?![\w])"
    rf"|(?P<percent>{_RANGE}\s?%)"
    rf"|(?P<duration>{_RANGE}\s?(?:tok/s|tokens/s|docs/s|ms|s|sec|seconds?|min|minutes?|h|hours?))(?![\w/])"
    rf"|(?P<fraction>\d+/\d+)(?![\w/.])"
    rf"|(?P<count>(?:{_INTEGER}|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?P<noun>(?:[a-z-]+\s+){{0,3}}?)"
    rf"(?:of|in|out of)\s+(?:the\s+)?{_INTEGER})(?![\w.%,]\d|[\w.%]|\s?(?:%|x\b))"
    rf"|(?P<decimal>\d+\.\d+)(?![\w]|\.\d)"
    r")"
)
# Goals and limits set by someone, not results: "bar: 30%", "the client's limit (2 minutes".
GOAL = re.compile(r"\b(?:bars?|target|issue's|asks for|limit|bound)\b[^.;]{0,40}$", re.IGNORECASE)
# Software and data sets whose version follows their name (SQuAD 2.0, Ray 2.60, Linux 3.15+).
VERSIONED_NAMES = ("python", "squad", "ray", "linux", "glibc", "openai", "version")
VERSION_BEFORE = re.compile(rf"(?:\b(?:{'|'.join(VERSIONED_NAMES)})|>=|<=|==|~=)\s*$", re.IGNORECASE)
VERSION_AFTER = re.compile(r"^\+")  # 3.15+: a minimum version
# Settings: a value the code sets, not one it measured ("every 10 seconds", "2,048 by default").
SETTING_BEFORE = re.compile(r"\b(?:every|within)\s*$", re.IGNORECASE)
SETTING_AFTER = re.compile(r"^\s*(?:by default|\(default\))")
# Quoted text is a message or a sentence of a document shown as it is ("resumed from 88%").
QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”')
# "4 chains of 5 variables", "windows of 400 characters": a count between two nouns says how a
# run is built; an outcome is "6 of 12", "1 gold paragraph in 40", "4 of the 60 questions".
COMPOSITION_AFTER = re.compile(r"^\s+[a-z]+s\b")
# HTTP statuses written as 408/409 or 200/202 are not counts.
HTTP_STATUSES = re.compile(r"^[1-5]\d\d/[1-5]\d\d$")
SIZE_UNIT_AFTER = re.compile(r"^\s*(?:bytes|B|KB|MB|GB|KiB|MiB|GiB)\b")
SHA256 = re.compile(r"\bsha256\b|\b[0-9a-f]{64}\b")
INLINE_CODE = re.compile(r"`[^`]+`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
URL = re.compile(r"https?://\S+")
LIST_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+\.)\s+")


@dataclass
class Block:
    kind: str  # paragraph, item, table, code, heading
    start: int  # 1-based line number of the first line
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Figure:
    path: str
    line: int
    text: str
    sources: tuple[str, ...]  # the existing results files its block (or caption) names


def split_blocks(text: str) -> list[Block]:
    """Markdown cut into the units a source must be named in: paragraphs, list items (one per
    item, nested items apart from their parent), tables, fenced code and headings."""
    blocks: list[Block] = []
    current: Block | None = None
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is not None:
            current.lines.append(line)  # type: ignore[union-attr]
            if stripped.startswith(fence):
                fence, current = None, None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            current = Block("code", number, [line])
            blocks.append(current)
            continue
        if not stripped:
            current = None
            continue
        if stripped.startswith("#"):
            blocks.append(Block("heading", number, [line]))
            current = None
            continue
        kind = "table" if stripped.startswith("|") else "item" if LIST_ITEM.match(line) else "paragraph"
        continues = current is not None and (
            (kind == "table") == (current.kind == "table") and kind != "item")
        if continues:
            current.lines.append(line)  # type: ignore[union-attr]
        else:
            current = Block(kind, number, [line])
            blocks.append(current)
    return blocks


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))  # keeps offsets and line breaks


def figures_in_block(block: Block) -> list[tuple[int, str]]:
    """The measured figures of one block of prose or table, by the module's rules, each with
    the index of its line in the block."""
    text = block.text
    # Blank out what is not prose, keeping offsets, so a figure's left context stays true;
    # inline code may run over a line break, quoted text may not.
    prose = URL.sub(_blank, LINK_TARGET.sub(_blank, INLINE_CODE.sub(_blank, text)))
    prose = QUOTED.sub(_blank, prose)
    shipped_file = bool(SHA256.search(text))
    found = []
    for offset, line in enumerate(prose.split("\n")):
        for match in FIGURE.finditer(line):
            before, after = line[: match.start()], line[match.end():]
            if VERSION_BEFORE.search(before) or VERSION_AFTER.match(after) or GOAL.search(before):
                continue
            if SETTING_BEFORE.search(before) or SETTING_AFTER.match(after) or HTTP_STATUSES.match(match.group(0)):
                continue
            if match.group("count") and match.group("noun") and COMPOSITION_AFTER.match(after):
                continue
            if shipped_file and SIZE_UNIT_AFTER.match(after):
                continue
            found.append((offset, match.group(0).strip()))
    return found


def named_files(text: str, present: Iterable[str]) -> tuple[str, ...]:
    """The results files a text names that exist (a glob counts when it matches one)."""
    present = list(present)
    return tuple(sorted(name for name in set(RESULTS_NAME.findall(text))
                        if any(fnmatch(file, name) for file in present)))


def _context(blocks: list[Block], index: int) -> list[Block]:
    """The blocks whose named files source blocks[index]: itself; for any block the command
    (fenced code) right above it; for a list item the paragraph that introduces its list; for a table also the caption right above it (a paragraph or
    a list item) and the command right above that caption."""
    context = [blocks[index]]
    if blocks[index].kind == "item":
        # A list item may be sourced by the paragraph that introduces its list.
        first = index
        while first - 1 >= 0 and blocks[first - 1].kind == "item":
            first -= 1
        if first - 1 >= 0 and blocks[first - 1].kind == "paragraph":
            context.append(blocks[first - 1])
    previous = index - 1
    if previous >= 0 and blocks[previous].kind == "code":
        context.append(blocks[previous])
        previous -= 1
    if blocks[index].kind == "table" and previous >= 0 and blocks[previous].kind in ("paragraph", "item"):
        context.append(blocks[previous])
        if previous - 1 >= 0 and blocks[previous - 1].kind == "code":
            context.append(blocks[previous - 1])
    return context


def _allowed(path: str, figure: str, line: str) -> bool:
    return any(path == file and figure == text and words in line for file, text, words, _ in ALLOWED)


def audit_text(text: str, path: str, present: Iterable[str]) -> list[Figure]:
    """Every measured figure of one markdown text with the results files that source it."""
    present = list(present)
    blocks = split_blocks(text)
    figures = []
    for index, block in enumerate(blocks):
        if block.kind in ("code", "heading"):
            continue
        sources = named_files("\n".join(b.text for b in _context(blocks, index)), present)
        for offset, figure in figures_in_block(block):
            line = block.lines[offset]
            if not sources and _allowed(path, figure, line):
                continue
            figures.append(Figure(path, block.start + offset, figure, sources))
    return figures


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "CHANGELOG.md"]


def audit_repo(root: Path) -> list[Figure]:
    present = [p.name for p in (root / "docs" / "results").glob("*.json")]
    figures = []
    for doc in doc_files(root):
        figures += audit_text(doc.read_text(encoding="utf-8"), str(doc.relative_to(root)), present)
    return figures


def json_numbers(path: Path) -> list[float]:
    """Every number a results file holds, at any depth."""
    numbers: list[float] = []

    def walk(value: object) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            numbers.append(float(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(path.read_text(encoding="utf-8")))
    return numbers


def value_in_files(figure: Figure, results: Path) -> bool | None:
    """Whether a sourced decimal or percentage is, to the digits shown, a number of its files
    (a percentage as a share too); None for figures this cannot check (counts, ratios, ranges:
    derived from rows, to be checked by reading)."""
    text = figure.text.lstrip("~+")
    if not re.fullmatch(r"\d+\.\d+|\d+(?:\.\d+)?\s?%", text):
        return None
    digits = text.rstrip("% ").split(".")[1] if "." in text else ""
    shown = float(text.rstrip("% "))
    candidates = [shown, shown / 100] if text.endswith("%") else [shown]
    tolerance = [0.5 * 10 ** -len(digits) + 1e-9, 0.5 * 10 ** -(len(digits) + 2) + 1e-9]
    for source in figure.sources:
        for file in results.glob(source):
            for number in json_numbers(file):
                if any(abs(number - want) <= tol for want, tol in zip(candidates, tolerance)):
                    return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--all", action="store_true", help="also list the sourced figures and their files")
    parser.add_argument("--check-values", action="store_true",
                        help="list sourced decimals and percentages that no named file holds to the digits shown "
                             "(derived figures such as means of two files show up here: check them by reading)")
    args = parser.parse_args(argv)
    figures = audit_repo(args.root)
    if args.check_values:
        for figure in figures:
            if figure.sources and value_in_files(figure, args.root / "docs" / "results") is False:
                print(f"{figure.path}:{figure.line}: {figure.text} not in {', '.join(figure.sources)}")
    unsourced = [f for f in figures if not f.sources]
    for figure in figures if args.all else unsourced:
        where = ", ".join(figure.sources) if figure.sources else "NO SOURCE"
        print(f"{figure.path}:{figure.line}: {figure.text}  [{where}]")
    print(f"{len(figures)} figures, {len(figures) - len(unsourced)} sourced, {len(unsourced)} without a source",
          file=sys.stderr)
    return 1 if unsourced else 0


if __name__ == "__main__":
    sys.exit(main())

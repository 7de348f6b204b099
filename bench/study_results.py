"""What the retrieval studies in bench/ report: per variant, the mean recall@k and all_gold@k
over the questions, printed as a markdown table and, with ``--out``, written as a results JSON
together with the command line that produced it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

Scores = dict[str, list[tuple[float, float]]]  # variant -> (recall@k, all_gold@k) per question


def add_question_set_args(ap: Any) -> None:
    """The HotpotQA question set a study reads (``memorag eval``'s options of the same
    meaning): ``--first-index``, ``--limit``, ``--per-haystack``, ``--seed``."""
    ap.add_argument("--first-index", type=int, default=0)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--per-haystack", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)


def indexed_haystacks(paths: Sequence[str], embedder: Any, clue_method: str | None = None
                      ) -> Iterator[tuple[Any, Any, dict[str, list[str]]]]:
    """``(haystack, retriever over it, stored clues by question id)`` for every haystack of the
    stored eval runs ``paths``, indexed with faiss at the run's chunk size; the clues are the
    ``clue_method`` rows' (none without one)."""
    from memorag.eval import datasets
    from memorag.models.registry import make_index_factory
    from memorag.retrieval import Retriever

    for path in paths:
        run, haystacks = datasets.load_run(path)
        clues = {r["id"]: r["clues"] for r in run["questions"] if r["method"] == clue_method} if clue_method else {}
        for hay in haystacks:
            retriever = Retriever(embedder, make_index_factory("faiss"), chunk_tokens=run["config"]["chunk_tokens"])
            retriever.build(hay.text)
            yield hay, retriever, clues


def mean_scores(scores: Scores, k: int) -> dict[str, dict[str, float]]:
    """Each variant's mean recall@k and all_gold@k."""
    return {label: {f"recall@{k}": sum(a for a, _ in rows) / len(rows),
                    f"all_gold@{k}": sum(b for _, b in rows) / len(rows)}
            for label, rows in scores.items() if rows}


def print_table(means: dict[str, dict[str, float]], k: int, header: str | None = "variant") -> None:
    """The means as a markdown table (``header=None``: the rows only)."""
    if header:
        print(f"| {header} | recall@{k} | all_gold@{k} |\n|---|---|---|")
    for label, m in means.items():
        print(f"| {label} | {m[f'recall@{k}']:.3f} | {m[f'all_gold@{k}']:.3f} |")


def write_results(path: str | Path | None, study: str, args: Any, **results: Any) -> None:
    """Write ``results`` with the study's name, its command and parsed arguments to ``path``
    (nothing when ``path`` is empty)."""
    if not path:
        return
    payload = {"study": study, "command": " ".join(["python", *sys.argv]), "args": vars(args), **results}
    Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")

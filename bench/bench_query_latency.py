"""Query latency: memorag (clues + retrieval + generation) against plain RAG (question-only
retrieval + generation) with the same generator and k, on the bundled sample, one run.

Usage: python bench/bench_query_latency.py [--gen-model SPEC] [--questions 5]
Prints per-mode seconds per question and the ratio memorag / plain RAG (issue 9 target: <= 3).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.resources import files
from pathlib import Path

from memorag import MemoRAG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_demo_questions import QUESTIONS  # noqa: E402  (the demo's known-answer questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen-model", default=None)
    ap.add_argument("--questions", type=int, default=5)
    args = ap.parse_args()
    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    pipe = MemoRAG(gen_model_name_or_path=args.gen_model)
    pipe.memorize(text, progress=False)
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    pipe.ask(questions[0], task_type="rag", max_new_tokens=8)  # warm both contexts
    seconds: dict[str, list[float]] = {"rag": [], "memorag": []}
    parts: dict[str, list[dict]] = {"rag": [], "memorag": []}
    # Mode by mode, not alternating: llama.cpp reuses the longest cached prompt prefix, and
    # the same question's evidence in the other mode is mostly that prefix, which would make
    # whichever mode runs second look cheap.
    for mode in ("rag", "memorag"):
        for q in questions:
            t = time.perf_counter()
            ans = pipe.ask(q, task_type=mode, max_new_tokens=64)
            seconds[mode].append(time.perf_counter() - t)
            parts[mode].append(ans.timings)
    rag = sum(seconds["rag"]) / len(questions)
    mem = sum(seconds["memorag"]) / len(questions)
    clue = sum(p["clues_and_retrieval"] for p in parts["memorag"]) / len(questions)
    print(f"{len(questions)} questions, generator {pipe.generator.describe().get('file', '?')}, k={pipe.ret_hit}")
    print("| mode | s per question | of which clues + retrieval |\n|---|---|---|")
    print(f"| plain RAG | {rag:.1f} | {sum(p['clues_and_retrieval'] for p in parts['rag']) / len(questions):.2f} |")
    print(f"| memorag | {mem:.1f} | {clue:.1f} |")
    print(f"ratio memorag / plain RAG: {mem / rag:.2f}")


if __name__ == "__main__":
    main()

"""What the default memory's recall adapter costs: memorize throughput and recall seconds of
the base memory model against the base with its shipped LoRA adapter, in one run.

The adapter applies to the recall task and its reply only (memorag.llm.llamacpp,
``task_adapter``), so memorizing should cost the same; recall pays for the adapter's extra
matrix products over the task and the reply tokens. Runs alternate between the two models
so that drift in the machine's speed hits both alike.

Usage: python bench/bench_adapter.py [--repeats 2] [--questions 5] --out docs/results/adapter_cost.json
Run it alone: two llama.cpp jobs on 2 cores starve each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.resources import files
from pathlib import Path

from memorag import Memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_demo_questions import QUESTIONS  # noqa: E402  (the demo's known-answer questions)

SPECS = {"base": "default-base", "base + recall adapter": "default"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="memorize runs per model (alternating)")
    ap.add_argument("--questions", type=int, default=5, help="recall questions per model")
    ap.add_argument("--out", required=True, help="results JSON")
    args = ap.parse_args()
    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    memories = {label: Memory(spec) for label, spec in SPECS.items()}
    rates: dict[str, list[float]] = {label: [] for label in SPECS}
    for _ in range(args.repeats):
        for label, mem in memories.items():
            stats = mem.memorize(text)
            rates[label].append(stats["memory_tokens_per_second"])
            print(f"memorize {label}: {stats['memory_tokens']} tokens, {stats['memory_tokens_per_second']} tok/s",
                  flush=True)
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    recall: dict[str, list[float]] = {label: [] for label in SPECS}
    spans: dict[str, list[list[str]]] = {label: [] for label in SPECS}
    for q in questions:
        for label, mem in memories.items():
            t = time.perf_counter()
            spans[label].append(mem.recall_spans(q))
            recall[label].append(round(time.perf_counter() - t, 3))
    base, adapted = SPECS
    memorize_ratio = statistics.median(rates[adapted]) / statistics.median(rates[base])
    recall_ratio = statistics.median(recall[adapted]) / statistics.median(recall[base])
    result = {"command": "python bench/bench_adapter.py " + " ".join(sys.argv[1:]),
              "loadavg_at_start": list(os.getloadavg()),
              "models": {label: memories[label].llm.describe() for label in SPECS},
              "memorize_tokens_per_second": rates, "recall_seconds": recall, "recall_spans": spans,
              "questions": questions,
              "memorize_throughput_ratio_adapter_over_base": round(memorize_ratio, 3),
              "recall_seconds_ratio_adapter_over_base": round(recall_ratio, 3)}
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"memorize throughput, adapter / base: {memorize_ratio:.3f}")
    print(f"recall seconds per question, adapter / base: {recall_ratio:.3f}")


if __name__ == "__main__":
    main()

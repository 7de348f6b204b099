"""The memory model with and without flash attention, in one run: what reading the document
costs, and what a question's clues cost after it.

llama.cpp's CPU flash-attention kernel reads a long prompt from an empty cache faster than its
plain attention path, but a question's clue task and the quotes it verifies in batches (a few
dozen tokens after the whole document) are slower with it. A llama.cpp context cannot switch
between the two (the KV layouts differ), so the memory runs with one setting for both.

For each setting the bench builds the default pipeline with the memory's flash attention set,
memorizes the bundled sample, and asks the demo's questions with plain RAG and with the default
plan, each mode starting with the generator's store of answered prompts empty (as
bench_query_latency.py does).

Usage: python bench/bench_memory_attention.py [--questions 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.resources import files
from pathlib import Path

from memorag import MemoRAG

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_query_latency import WARM_UP_QUESTION, cpu_model  # noqa: E402
from test_demo_questions import QUESTIONS, correct  # noqa: E402


def ask_all(pipe: MemoRAG, questions: list[str], task_type: str) -> list:
    forget = getattr(pipe.generator, "forget_prompts", None)
    if forget is not None:
        forget()  # each mode starts cold: only its own questions warm the generator
    out = []
    for q in questions:
        t = time.perf_counter()
        ans = pipe.ask(q, task_type=task_type, max_new_tokens=64)
        out.append((time.perf_counter() - t, ans))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--settings", default="on,off", help="memory flash attention settings, in run order")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    keys = [key for _, key in QUESTIONS[: args.questions]]
    settings = [s for s in args.settings.split(",") if s]
    if not settings or not set(settings) <= {"on", "off"}:  # refused before minutes of work, not midway
        raise SystemExit(f"--settings takes on and/or off; got {args.settings!r}")
    runs = {}
    for setting in settings:
        pipe = MemoRAG(enable_flash_attn=setting == "on")
        t = time.perf_counter()
        stats = pipe.memorize(text, progress=False)
        memorize = time.perf_counter() - t
        pipe.ask(WARM_UP_QUESTION, task_type="rag", max_new_tokens=8)  # models loaded outside the timing
        pipe.ask(WARM_UP_QUESTION, max_new_tokens=8)
        modes = {}
        for label, task in (("plain RAG", "rag"), ("memorag", "memorag")):
            asked = ask_all(pipe, questions, task)
            n = len(asked)
            modes[label] = {
                "seconds_per_question": round(sum(s for s, _ in asked) / n, 3),
                "clues_per_question": round(sum(a.timings.get("clues", 0.0) for _, a in asked) / n, 3),
                "retrieval_per_question": round(sum(a.timings.get("retrieval", 0.0) for _, a in asked) / n, 3),
                "generation_per_question": round(sum(a.timings.get("generation", 0.0) for _, a in asked) / n, 3),
                "answers_right": sum(correct(a.answer, key) for (_, a), key in zip(asked, keys)),
                "answers": [a.answer for _, a in asked],
                "spans": [a.clues.spans if a.clues else [] for _, a in asked],
                "evidence_ids": [[h.chunk_id for h in a.evidence] for _, a in asked],
                "seconds": [round(s, 3) for s, _ in asked],
            }
        runs[setting] = {
            "memory_model": pipe.memory.llm.describe(),
            "memorize_seconds": round(memorize, 3),
            "memory_seconds": stats.get("memory_seconds"),
            "modes": modes,
            "ratio_memorag_to_plain": round(modes["memorag"]["seconds_per_question"]
                                            / modes["plain RAG"]["seconds_per_question"], 3),
        }
        print(setting, "memorize", runs[setting]["memorize_seconds"],
              {k: (v["seconds_per_question"], v["clues_per_question"], v["answers_right"]) for k, v in modes.items()},
              flush=True)
        del pipe
    if args.out:
        result = {"benchmark": "bench_memory_attention", "command": "python bench/bench_memory_attention.py "
                  + " ".join(sys.argv[1:]), "questions": questions, "cpu_count": os.cpu_count(),
                  "cpu_model": cpu_model(), "runs": runs}
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The judge scoring a question after all of its passages in one batched decode, against one
passage at a time (``memorag.llm.llamacpp.JUDGE_SEQUENCES``; 1 = one at a time).

The default plan's judge reads one paragraph per candidate chunk and then the question; a
question's ~16 tokens after one paragraph are a decode too small to use the CPU well. With
batching, every paragraph is its own llama.cpp sequence and the question after all of them is
one decode (``LlamaCppLLM.continuation_logprobs_many``).

On the bundled sample, the memory's clues for the demo's questions are written once; then
the default plan ranks the chunks for each question with those clues (the judge's work, no
generation), in four runs: one, batched, batched, one. Every run starts with the judge's
stored passage states emptied, so each run reads its passages cold on first sight and warm
after, as a process does. Records seconds per question per run, and whether every run chose
the same evidence.

Usage: python bench/bench_judge_batch.py [--questions 10] [--out FILE.json]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_latency import cpu_model, judge_models, memorized_sample  # noqa: E402
from test_demo_questions import QUESTIONS  # noqa: E402  (the demo's known-answer questions)


def main() -> None:
    args, pipe, _ = memorized_sample(__doc__)
    import memorag.llm.llamacpp as backend

    view, parts = pipe.view(), pipe.answering()
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    clues = [pipe.memory.clues(q, kinds=parts.plan.clue_kinds()) for q in questions]
    parts.plan.find(view, "Who is the narrator of the story?", None, parts.top_k)  # untimed: loads the judge
    judges = judge_models(pipe.judge)
    batched_default = backend.JUDGE_SEQUENCES
    runs = []
    for mode in ("one", "batched", "batched", "one"):
        backend.JUDGE_SEQUENCES = batched_default if mode == "batched" else 1
        for m in judges:  # cold, as a new process
            if getattr(m, "prompt_cache", None) is not None:
                m.prompt_cache.clear()
        seconds, evidence = [], []
        for q, c in zip(questions, clues):
            t = time.perf_counter()
            hits = parts.plan.find(view, q, c, parts.top_k).hits
            seconds.append(round(time.perf_counter() - t, 3))
            evidence.append([h.chunk_id for h in hits])
        runs.append({"mode": mode, "seconds_per_question": round(statistics.mean(seconds), 3), "seconds": seconds,
                     "evidence_ids": evidence})
        print(f"{mode}: {statistics.mean(seconds):.3f} s a question", flush=True)
    backend.JUDGE_SEQUENCES = batched_default
    per_mode = {mode: round(statistics.mean(s for r in runs if r["mode"] == mode for s in r["seconds"]), 3)
                for mode in ("one", "batched")}
    result = {"benchmark": "bench_judge_batch", "command": "python bench/bench_judge_batch.py " + " ".join(sys.argv[1:]),
              "what": "seconds per question of the default plan's ranking (the judge's work; clues written once "
                      "before, no generation) on the demo's questions, the judge scoring one passage at a time "
                      "(one) or all of a question's passages in one batch (batched); runs one, batched, batched, "
                      "one, each from an empty judge cache",
              "cpu_model": cpu_model(), "judge_sequences": batched_default,
              "judge_models": [m.describe() for m in judges if hasattr(m, "describe")],
              "questions": questions, "runs": runs, "mean_seconds_per_question": per_mode,
              "ratio_batched_to_one": round(per_mode["batched"] / per_mode["one"], 3),
              "same_evidence_every_run": all(r["evidence_ids"] == runs[0]["evidence_ids"] for r in runs)}
    print(json.dumps({k: result[k] for k in ("mean_seconds_per_question", "ratio_batched_to_one",
                                             "same_evidence_every_run")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""What a judge costs per passage it reads (query likelihood, no prompt cache hits).

Each judge scores the same passages and questions (HotpotQA judge examples from the training
range, seeded), every passage read for the first time, one judge after the other in one run.
Prints seconds per passage and each judge's ratio to the first; --out writes them as JSON.

Usage: python bench/bench_judge.py [--judges judge-0.5b,qwen2.5-1.5b] [--questions 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from memorag.pipeline import load_judge
from memorag.training.judge import build_judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judges", default="judge-0.5b,qwen2.5-0.5b,qwen2.5-1.5b", help="comma-separated judge specs")
    ap.add_argument("--questions", type=int, default=8, help="questions; each with 2 gold and 3 other passages")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()
    examples, _ = build_judge(args.questions, 0, negatives=3, seed=args.seed)
    rows = []
    for spec in args.judges.split(","):
        judge = load_judge(spec)
        judge.continuation_logprobs([{"role": "user", "content": "Warm up."}], "Ready?")
        tokens = 0
        start = time.perf_counter()
        for ex in examples:
            for i in range(len(ex.passages)):
                tokens += len(judge.continuation_logprobs(ex.messages(i), ex.question))
        seconds = time.perf_counter() - start
        passages = sum(len(ex.passages) for ex in examples)
        rows.append({"judge": spec, "passages": passages, "seconds": round(seconds, 3),
                     "seconds_per_passage": round(seconds / passages, 3), "question_tokens_scored": tokens})
        print(f"{spec}: {passages} passages, {seconds / passages:.3f} s/passage", flush=True)
        del judge
    first = rows[0]["seconds_per_passage"]
    for r in rows:
        r["ratio_to_first"] = round(r["seconds_per_passage"] / first, 3)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"command": "python bench/bench_judge.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v),
                "machine": {"processor": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count()},
                "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()

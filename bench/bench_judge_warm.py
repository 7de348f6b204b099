"""The judge's passages read before the first question: what it costs once, what it saves a
question. A lever the latency issue names ("each passage's judge prefix computed when the
document is memorized"), measured before anything is built for it.

The judge scores a candidate chunk by reading one of its paragraphs and then the question,
and keeps the KV state of each paragraph it read (``LlamaCppLLM.prompt_cache``). Here the
judge reads every paragraph of every chunk of the bundled sample before the questions (the
same prompt plan ``recall`` builds, scored against a one-token stand-in question), and the
demo's questions are then asked through the default pipeline. Two modes, one after the
other, each starting with the judge's cache and the generator's stored prompts empty:
``cold`` (as today) and ``warm`` (every paragraph read first). Records the seconds of the
reading, each question's seconds and parts, and each question's evidence (equal in both
modes when restored states score as fresh ones).

Usage: python bench/bench_judge_warm.py [--questions 10] [--out FILE.json]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_latency import cpu_model, memorized_sample  # noqa: E402
from test_demo_questions import QUESTIONS, correct  # noqa: E402  (the demo's known-answer questions)

WARM_UP_QUESTION = "Who is the narrator of the story?"  # untimed: loads the judge


def read_every_paragraph(pipe) -> tuple[int, float]:
    """The judge reads each paragraph of each chunk as plan ``recall`` would show it; returns
    (paragraphs read, seconds)."""
    from memorag.plans import LIKELIHOOD_USER, paragraphs

    p = pipe.plan_params()
    lang = p.language if p.language in LIKELIHOOD_USER else "en"
    n, t = 0, time.perf_counter()
    for chunk in pipe.retriever.chunks:
        for text in paragraphs(chunk.text, p.likelihood_chars):
            pipe.judge.continuation_logprobs([{"role": "user", "content": LIKELIHOOD_USER[lang].format(passage=text)}],
                                             "?")
            n += 1
    return n, time.perf_counter() - t


def main() -> None:
    args, pipe, memorize_seconds = memorized_sample(__doc__)
    pipe.ask(WARM_UP_QUESTION, max_new_tokens=8)
    loaded = getattr(pipe.judge, "loaded_models", None)
    judges = loaded() if callable(loaded) else [pipe.judge]
    caches = [m.prompt_cache for m in judges if getattr(m, "prompt_cache", None) is not None]
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    keys = [key for _, key in QUESTIONS[: args.questions]]
    modes = []
    for mode in ("cold", "warm"):
        for cache in caches:
            cache.clear()
        answered = getattr(pipe.generator, "answer_cache", None)
        if answered is not None:
            answered.clear()
        read = read_every_paragraph(pipe) if mode == "warm" else (0, 0.0)
        cached_mb = sum(c.bytes for c in caches) / 2**20
        seconds, timings, evidence, answers = [], [], [], []
        for q in questions:
            t = time.perf_counter()
            ans = pipe.ask(q, max_new_tokens=64)
            seconds.append(round(time.perf_counter() - t, 3))
            timings.append(ans.timings)
            evidence.append([h.chunk_id for h in ans.evidence])
            answers.append(ans.answer)
        row = {"mode": mode, "paragraphs_read_first": read[0], "reading_seconds": round(read[1], 3),
               "judge_cache_mb_after_reading": round(cached_mb, 1),
               "seconds_per_question": round(statistics.mean(seconds), 3),
               "retrieval_seconds_per_question": round(statistics.mean(t["retrieval"] for t in timings), 3),
               "answers_right": sum(correct(a, k) for a, k in zip(answers, keys)),
               "seconds": seconds, "timings": timings, "evidence_ids": evidence, "answers": answers}
        modes.append(row)
        print(json.dumps({k: row[k] for k in ("mode", "paragraphs_read_first", "reading_seconds",
                                              "seconds_per_question", "retrieval_seconds_per_question",
                                              "answers_right")}), flush=True)
    result = {"benchmark": "bench_judge_warm", "command": "python bench/bench_judge_warm.py " + " ".join(sys.argv[1:]),
              "cpu_model": cpu_model(), "memorize_seconds": round(memorize_seconds, 3),
              "judge_models": [m.describe() for m in judges if hasattr(m, "describe")],
              "questions": questions, "modes": modes,
              "same_evidence_every_question": modes[0]["evidence_ids"] == modes[1]["evidence_ids"]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

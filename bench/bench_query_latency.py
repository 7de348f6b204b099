"""Query latency: memorag (clues + retrieval + generation) against plain RAG (question-only
retrieval + generation) with the same generator and k, on the bundled sample, one run.

Usage: python bench/bench_query_latency.py [--gen-model SPEC] [--questions 5] [--plans P,Q]
    [--evidence chunks,passages] [--judge-cache off,on] [--judge-states on,off] [--evidence-order document,rank] [--out FILE.json]
Prints per-mode seconds per question, the ratio memorag / plain RAG and how many answers hold
the answer key of tests/test_demo_questions.py (a faster mode must not answer worse); --out
writes them, with every question's seconds, answer and the pipeline's own timings of its
parts, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.resources import files
from pathlib import Path

from memorag import MemoRAG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_demo_questions import QUESTIONS, correct  # noqa: E402  (the demo's known-answer questions)


def cpu_model() -> str:
    """The CPU's model name: seconds differ a lot between machines, so a file says where it ran."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


WARM_UP_QUESTION = "What happens in these chapters?"


def memorized_sample(doc: str | None) -> tuple[argparse.Namespace, MemoRAG, float]:
    """The demo benches' shared start: ``--questions``/``--out`` parsed (``doc`` is the
    bench's help), the default pipeline with the bundled sample memorized, and the seconds
    memorizing took."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    pipe = MemoRAG()
    t = time.perf_counter()
    pipe.memorize(text, progress=False)
    return args, pipe, time.perf_counter() - t


def judge_models(judge: object) -> list[object]:
    """The models behind a pipeline's judge that have been loaded (a twin judge wraps them)."""
    if judge is None:
        return []
    loaded = getattr(judge, "loaded_models", None)
    return loaded() if callable(loaded) else [judge]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen-model", default=None)
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--plans", default="", help="comma-separated query plans to time in memorag mode "
                    "(default: the pipeline's own); e.g. recall,clues shows what the judge costs")
    ap.add_argument("--evidence", default="", help="comma-separated evidence renderings to time in memorag "
                    "mode (default: the pipeline's own); e.g. chunks,passages")
    ap.add_argument("--judge-cache", default="on", help="comma-separated: on (the judge keeps the KV "
                    "states of passages it read, the default) and/or off; each is a separate set of modes")
    ap.add_argument("--judge-states", default="on", help="comma-separated: on (the judge restores the "
                    "passages memorize read in advance, memorag.judge_states; the default) and/or off (it "
                    "reads them when asked); each is a separate set of modes")
    ap.add_argument("--evidence-order", default="", help="comma-separated orders the generator reads the "
                    "evidence in (document, rank; default: the pipeline's own); each is a separate set of "
                    "modes, plain RAG included")
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = ap.parse_args()
    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    pipe = MemoRAG(gen_model_name_or_path=args.gen_model)
    t = time.perf_counter()
    memorized = pipe.memorize(text, progress=False)
    memorize = {"seconds": round(time.perf_counter() - t, 3),
                **{k: v for k, v in memorized.items() if k.startswith("judge_states")}}
    doc_states = pipe.document.judge_states if pipe.document is not None else None
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    keys = [key for _, key in QUESTIONS[: args.questions]]
    plans = [p for p in args.plans.split(",") if p] or [pipe.query_plan]
    caches = [c for c in args.judge_cache.split(",") if c]
    if not set(caches) <= {"on", "off"}:
        raise SystemExit(f"--judge-cache takes on and/or off; got {args.judge_cache!r}")
    states_opts = [s for s in args.judge_states.split(",") if s]
    if not set(states_opts) <= {"on", "off"}:
        raise SystemExit(f"--judge-states takes on and/or off; got {args.judge_states!r}")
    # Warm up outside the timing: both contexts, and every plan once, so each judge model a
    # plan uses is loaded before any mode is timed (loading the judge inside the first timed
    # mode made whichever mode ran first look slow). With a question that is not timed: the
    # generator reuses the longest prefix of its last prompt, and a timed question asked in
    # the warm-up would find its own prompt there.
    pipe.ask(WARM_UP_QUESTION, task_type="rag", max_new_tokens=8)
    for plan in plans:
        pipe.query_plan = plan
        pipe.ask(WARM_UP_QUESTION, task_type="memorag", max_new_tokens=8)
    judge_caches = [m.prompt_cache for m in judge_models(pipe.judge) if getattr(m, "prompt_cache", None) is not None]
    full_budget = judge_caches[0].max_bytes if judge_caches else 0
    renders = [e for e in args.evidence.split(",") if e] or [pipe.evidence]
    orders = [o for o in args.evidence_order.split(",") if o] or [pipe.evidence_order]
    # plain RAG reads whole chunks under every rendering: no judge picked a part of them
    modes = []
    for o in orders:
        tag = "" if len(orders) == 1 else f", {o} order"
        modes += [(f"plain RAG{tag}", "rag", pipe.query_plan, "chunks", None, None, o)] + [
            (f"memorag ({p}" + ("" if len(renders) == 1 else f", {e}") + ")"
             + ("" if caches == ["on"] else f", judge cache {c}")
             + ("" if states_opts == ["on"] else f", judge states {st}") + tag, "memorag", p, e, c, st, o)
            for st in states_opts for c in caches for e in renders for p in plans]
    plain_of = {o: next(label for label, *_, mo in modes if mo == o) for o in orders}
    seconds: dict[str, list[float]] = {label: [] for label, *_ in modes}
    parts: dict[str, list[dict]] = {label: [] for label, *_ in modes}
    answers: dict[str, list[str]] = {label: [] for label, *_ in modes}
    evidence: dict[str, list[list[int]]] = {label: [] for label, *_ in modes}
    prompt_tokens: dict[str, list[int]] = {label: [] for label, *_ in modes}
    restored: dict[str, int | None] = {label: None for label, *_ in modes}  # answers begun from a stored state
    states_used: dict[str, int | None] = {label: None for label, *_ in modes}  # passages restored from them
    # Mode by mode, not alternating: llama.cpp reuses the longest cached prompt prefix, and
    # the same question's evidence in the other mode is mostly that prefix, which would make
    # whichever mode runs second look cheap.
    for label, task, plan, render, judge_cache, states, order in modes:
        pipe.query_plan, pipe.evidence, pipe.evidence_order = plan, render, order
        if states is not None and hasattr(pipe.judge, "use_judge_states"):
            pipe.judge.use_judge_states(doc_states if states == "on" else None)
        hits_before = doc_states.hits if doc_states is not None else 0
        answered = getattr(pipe.generator, "answer_cache", None)
        forget = getattr(pipe.generator, "forget_prompts", None)
        if forget is not None:
            # every mode starts cold: only its own questions can warm the generator (its stored
            # answered prompts, and the prompt its context holds: the last mode's or the warm-up's)
            forget()
        elif answered is not None:
            answered.clear()
            answered.hits = answered.misses = 0
        for cache in judge_caches if judge_cache is not None else []:
            cache.clear()  # every mode starts cold: only its own questions can warm the cache
            cache.max_bytes = full_budget if judge_cache == "on" else 0
        for q in questions:
            t = time.perf_counter()
            ans = pipe.ask(q, task_type=task, max_new_tokens=64)
            seconds[label].append(time.perf_counter() - t)
            parts[label].append(ans.timings)
            answers[label].append(ans.answer)
            evidence[label].append([h.chunk_id for h in ans.evidence])
            count = getattr(pipe.generator, "count_tokens", None)
            if count is not None:  # what the generator read: its messages, in its own tokens (no chat template)
                prompt_tokens[label].append(sum(count(m["content"]) for m in ans.messages))
        if answered is not None:
            restored[label] = answered.hits
        if doc_states is not None:
            states_used[label] = doc_states.hits - hits_before
    n = len(questions)
    print(f"{n} questions, generator {pipe.generator.describe().get('file', '?')}, k={pipe.ret_hit}")
    right = {label: sum(correct(a, key) for a, key in zip(answers[label], keys)) for label in answers}
    print("| mode | s per question | of which clues + retrieval | answers right |\n|---|---|---|---|")
    for label, *_ in modes:
        print(f"| {label} | {sum(seconds[label]) / n:.1f} | "
              f"{sum(p['clues_and_retrieval'] for p in parts[label]) / n:.1f} | {right[label]} of {n} |")
    def ratio(label: str, order: str) -> float:
        return sum(seconds[label]) / n / (sum(seconds[plain_of[order]]) / n)

    for label, *_, order in modes:
        if label != plain_of[order]:
            print(f"ratio {label} / {plain_of[order]}: {ratio(label, order):.2f}")
    if args.out:
        result = {"benchmark": "bench_query_latency", "command": "python bench/bench_query_latency.py "
                  + " ".join(sys.argv[1:]), "questions": questions, "k": pipe.ret_hit,
                  "generator": pipe.generator.describe(), "memory_model": pipe.memory.llm.describe(),
                  "judge_models": [m.describe() for m in judge_models(pipe.judge) if hasattr(m, "describe")],
                  "memorize": memorize, "judge_cache_mb": full_budget // (1024 * 1024), "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "machine": platform.machine(),
                  "modes": [{"mode": label, "task_type": task, "plan": plan, "evidence": render,
                             "judge_cache": judge_cache, "judge_states": states, "evidence_order": order,
                             "seconds_per_question": round(sum(seconds[label]) / n, 3),
                             "ratio_to_plain_rag": round(ratio(label, order), 3),
                             "answers_right": right[label], "answers_from_stored_state": restored[label],
                             "passages_from_judge_states": states_used[label], "answers": answers[label],
                             "evidence_ids": evidence[label], "prompt_tokens": prompt_tokens[label],
                             "prompt_tokens_per_question": round(sum(prompt_tokens[label]) / n, 1)
                             if prompt_tokens[label] else None,
                             "seconds": [round(x, 3) for x in seconds[label]], "timings": parts[label]}
                            for label, task, plan, render, judge_cache, states, order in modes]}
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

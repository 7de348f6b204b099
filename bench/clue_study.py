"""Compare memory models' recall clues on held-out HotpotQA questions (issue 14).

For each memory model spec (``default``, a trained ``.gguf``...): the eval harness's
HotpotQA haystacks (memorag.eval.datasets, sized with the default model's tokenizer), each
memorized once and cached like ``memorag eval``; then per question the memory's recalled
spans (``Memory.recall_spans``, the task the training teaches; surrogate questions are left
out for both models) and, through the eval harness's own ``MethodRunner``:

* ``recall@k`` / ``all_gold@k`` of the clue plans ``clues`` (question + every span) and
  ``grounded`` (question + the spans the document really holds);
* ``spans_in_document``: the share of recalled spans found verbatim in the haystack
  (case and whitespace ignored), and ``spans_grounded``: the share that memorag.grounding
  matches to a real sentence;
* ``gold_quoted``: the share of gold sentences that some span quotes (verbatim containment;
  ``memorag.eval.metrics.gold_quoted``, the measure ``memorag eval`` reports);
* ``gold_in_memory``: the share of gold sentences the memory's text holds at all (for a
  document longer than the memory window, the extract it reads: what it could quote), and
  ``gold_quoted_of_held``: the share of those it quoted.

``--memory-window`` sets the memory's window (the pipeline's default is 8192); without it
the window fits the whole haystack, as the runs before that option did.

Questions used for training are refused: ``--split`` takes the ``split.json`` written by
``memorag train data`` and the run stops if any evaluated index is in it (or >= 3700).
The generator is never called by these plans; a scripted stand-in takes its place so no
generator weights load, and the script checks it stayed unused.

Usage: python bench/clue_study.py --models default,/tmp/run/memory-clues-q4_k_m.gguf \\
           --split /tmp/run/data/split.json --first-index 0 --limit 20 --out docs/results/x.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from memorag.config import QUOTE_FROM
from memorag.eval import datasets
from memorag.eval.methods import MethodRunner
from memorag.eval.metrics import all_gold_at_k, gold_quoted, recall_at_k, spans_in_document
from memorag.eval.runner import load_or_memorize
from memorag.longmem import compress
from memorag.memory import Clues
from memorag.models.packaged import cache_dir
from memorag.models.registry import load_llm
from memorag.pipeline import MemoRAG
from memorag.plans import PlanParams, ground_clues
from memorag.testing import ScriptedLLM

PLANS = ("clues", "grounded")


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def check_held_out(split_path: str | None, first: int, limit: int) -> list[int]:
    indices = list(range(first, first + limit))
    if first + limit > datasets.TUNING_LIMIT:
        raise SystemExit(f"indices reach {first + limit - 1}: HotpotQA from {datasets.TUNING_LIMIT} on is held out.")
    if split_path:
        used = set(json.loads(Path(split_path).read_text(encoding="utf-8"))["hotpotqa_indices"])
        overlap = sorted(used.intersection(indices))
        if overlap:
            raise SystemExit(f"{len(overlap)} evaluated indices were used for training (e.g. {overlap[:5]}).")
    return indices


def memory_text(pipe: MemoRAG, text: str) -> str:
    """What the memory read of ``text``: the text itself, or the extract it was compressed to
    (the same deterministic compressor the memorize ran)."""
    mem = pipe.memory
    if not mem.needs_compression(text):
        return text
    return compress(mem.llm, text, method=mem.compression, ratio=mem.beacon_ratio, language=mem.language or "en")[0]


def study(spec: str, haystacks: list[datasets.Haystack], n_ctx: int, k: int, state_root: Path,
          quote_source: str = "document") -> dict:
    wall0, cpu0 = time.perf_counter(), _cpu()
    generator = ScriptedLLM(spec="unused-generator")
    pipe = MemoRAG(mem_model_name_or_path=spec, customized_gen_model=generator, ret_hit=k,
                   retrieval_chunk_size=512, n_ctx=n_ctx)
    pipe.memory.quote_from = quote_source  # what ask does: Memory.quote_from (the pipeline's default "document")
    rows = []
    for hay in haystacks:
        load_or_memorize(pipe, state_root, hay, progress=False)
        runner = MethodRunner(pipe, k)
        held = _norm(memory_text(pipe, hay.text))
        for q in hay.questions:
            # Recall spans only: training taught the recall task, and the surrogate questions
            # and draft answer (never in the document) would blur both measures. The runner
            # takes these clues as it would take Memory.clues' (its cache).
            clues = Clues(q.question, spans=pipe.memory.recall_spans(q.question))
            runner.memory.remember(clues)
            grounded = ground_clues(pipe.retriever, q.question, clues, PlanParams(language=pipe.memory.language or "en"))
            gold = [s for para in q.gold for s in para if _norm(s)]  # gold_quoted's order
            quoted = gold_quoted(clues.spans, q.gold)
            in_memory = [_norm(g) in held for g in gold]
            row = {"id": q.id, "question": q.question, "spans": clues.spans,
                   "spans_in_document": spans_in_document(clues.spans, hay.text),
                   "spans_grounded": [g.grounded for g in grounded],
                   "gold_quoted": quoted, "gold_in_memory": in_memory,
                   "gold_quoted_of_held": [qd for qd, m in zip(quoted, in_memory) if m]}
            for plan in PLANS:
                evidence = runner.retrieve(plan, q.question, hay.text).evidence
                row[plan] = {f"recall@{k}": recall_at_k(q.gold, evidence), f"all_gold@{k}": all_gold_at_k(q.gold, evidence)}
            rows.append(row)
    assert not generator.turns, "the clue plans must not call the generator"

    def share(key: str) -> float:
        flags = [f for r in rows for f in r[key]]
        return round(sum(flags) / len(flags), 4) if flags else 0.0

    summary = {"questions": len(rows), "spans": sum(len(r["spans"]) for r in rows),
               "spans_per_question": round(sum(len(r["spans"]) for r in rows) / len(rows), 2),
               "spans_in_document": share("spans_in_document"), "spans_grounded": share("spans_grounded"),
               "gold_quoted": share("gold_quoted"), "gold_in_memory": share("gold_in_memory"),
               "gold_quoted_of_held": share("gold_quoted_of_held")}
    for plan in PLANS:
        for metric in (f"recall@{k}", f"all_gold@{k}"):
            summary[f"{plan} {metric}"] = round(sum(r[plan][metric] for r in rows) / len(rows), 4)
    summary["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    summary["cpu_seconds"] = round(_cpu() - cpu0, 1)
    return {"model": pipe.memory.llm.describe(), "summary": summary, "rows": rows}


# The decoding levers of memorag.quoting a run may set: flag -> (constant, type, what it does).
QUOTE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--quote-distinct": ("QUOTE_DISTINCT", bool, "1 = a finished quote's sentence cannot be quoted again"),
    "--quote-lookahead": ("QUOTE_LOOKAHEAD", int, "first tokens read one further at a quote's start; 0 = greedy"),
    "--quote-depth": ("QUOTE_LOOKAHEAD_DEPTH", int, "tokens each look-ahead candidate is read to"),
    "--quote-follow": ("QUOTE_FOLLOW_DOCUMENT", bool, "1 = a short line no top token continues goes on as the "
                       "document does instead of ending the reply"),
    "--quote-sentence-end": ("QUOTE_SENTENCE_END", bool, "1 = a quote closes only where its sentence ends in the "
                             "source; 0 = anywhere once it is long enough"),
    "--quote-contrast": ("QUOTE_CONTRAST", float, "weight of a quote start's log-probability for no question, "
                         "subtracted at the look-ahead; 0 = off"),
    "--quote-contrast-lines": ("QUOTE_CONTRAST_LINES", int, "the first N quotes start under the contrast; "
                               "0 = every one"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated memory model specs")
    ap.add_argument("--split", help="split.json of the training data: its indices must not be evaluated")
    ap.add_argument("--first-index", type=int, default=0)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--haystack-tokens", type=int, default=4000)
    ap.add_argument("--questions-per-haystack", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--memory-window", type=int, help="the memory's window in tokens (default: the whole haystack)")
    ap.add_argument("--quote-min-lines", type=int, default=1,
                    help="memorag.quoting.QUOTE_MIN_LINES: quotes the memory must write before it may end")
    for flag, (constant, kind, what) in QUOTE_FLAGS.items():
        ap.add_argument(flag, type=int if kind is bool else kind, choices=(0, 1) if kind is bool else None,
                        help=f"memorag.quoting.{constant} (default: the module's): {what}")
    ap.add_argument("--quote-source", choices=QUOTE_FROM, default="document",
                    help="the text the memory's quotes come from when it read an extract (Memory.quote_from): the "
                         "whole document (document, what ask does) or the extract it read (memory)")
    ap.add_argument("--quote-greedy", action="store_true",
                    help="the quoting before QUOTE_DISTINCT, QUOTE_VIABLE_ONLY, QUOTE_LOOKAHEAD and "
                         "QUOTE_FOLLOW_DOCUMENT: all four off")
    ap.add_argument("--out", required=True, help="results JSON")
    args = ap.parse_args()
    indices = check_held_out(args.split, args.first_index, args.limit)
    import memorag.quoting

    memorag.quoting.QUOTE_MIN_LINES = args.quote_min_lines
    if args.quote_greedy:
        memorag.quoting.QUOTE_VIABLE_ONLY = False
        args.quote_distinct, args.quote_lookahead, args.quote_follow = 0, 0, 0
    args.quote_viable_only = memorag.quoting.QUOTE_VIABLE_ONLY
    for flag, (constant, kind, _) in QUOTE_FLAGS.items():
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            setattr(memorag.quoting, constant, kind(getattr(args, name)))
        setattr(args, name, getattr(memorag.quoting, constant))  # the run's value, in the results
    count = load_llm("default", n_ctx=512).count_tokens  # sizes haystacks as `memorag eval` does
    haystacks = datasets.build("hotpotqa", first_index=args.first_index, limit=args.limit,
                               per_haystack=args.questions_per_haystack, haystack_tokens=args.haystack_tokens,
                               seed=args.seed, count_tokens=count)
    n_ctx = args.memory_window or min(32768, args.haystack_tokens + args.haystack_tokens // 4 + 2048)
    results = {"config": {**vars(args), "indices": [indices[0], indices[-1]], "n_ctx": n_ctx,
                          "loadavg_at_start": list(__import__("os").getloadavg())}, "models": {}}
    for spec in args.models.split(","):
        results["models"][spec] = study(spec, haystacks, n_ctx, args.top_k, cache_dir() / "eval", args.quote_source)
        print(spec, json.dumps(results["models"][spec]["summary"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    keys = list(next(iter(results["models"].values()))["summary"])
    print("| model | " + " | ".join(keys) + " |\n|---" * 1 + "|---" * len(keys) + "|")
    for spec, res in results["models"].items():
        print(f"| {Path(spec).name} | " + " | ".join(str(res["summary"][k]) for k in keys) + " |")


if __name__ == "__main__":
    main()

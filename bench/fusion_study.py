"""Replay stored memory clues through the library's query plans (memorag.plans).

Clue generation is the slow part of an evaluation run; turning clues into a ranking is
cheap. This script takes the per-question clues an `memorag eval ... --retrieval-only` run
wrote, rebuilds the same haystacks and retriever (no memory model needed, only its
tokenizer to size the haystacks), and prints recall@k / all_gold@k for each plan and
parameter setting, plus how many clue lines the document really holds (grounded).

Plans and settings are the library's own (memorag.plans), so what is measured here is
what `MemoRAG.ask` and `memorag eval` run.

Usage: python bench/fusion_study.py RESULTS.json [...] [--method memorag+answer]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace

from memorag.eval import datasets
from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.memory import Clues
from memorag.models.registry import load_embedder, load_llm, make_index_factory
from memorag.plans import PlanContext, PlanParams, ground_clues, run_plan
from memorag.retrieval import Retriever

BASE = PlanParams()
SETTINGS: list[tuple[str, str, PlanParams]] = [
    ("question", "question", BASE),
    ("clues", "clues", BASE),
    ("grounded (direct hits)", "grounded", BASE),
    ("grounded + sentences searched", "grounded", replace(BASE, sentence_weight=1.0)),
    ("rerank", "rerank", BASE),
    ("rerank w1", "rerank", replace(BASE, rerank_weight=1.0)),
    ("rerank w4", "rerank", replace(BASE, rerank_weight=4.0)),
    ("rerank depth20", "rerank", replace(BASE, rerank_depth=20)),
    ("memorag", "memorag", BASE),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--method", default="memorag+answer", help="whose stored clues to replay")
    ap.add_argument("--judge", default="default", help="judge LLM spec for the rerank plans ('' to skip them)")
    ap.add_argument("--only", default="", help="comma-separated setting labels to run (default: all)")
    args = ap.parse_args()
    settings = [s for s in SETTINGS if not args.only or s[0] in args.only.split(",")]
    judge = load_llm(args.judge, n_ctx=2048) if args.judge else None

    llm = load_llm("default", n_ctx=512)  # tokenizer only: sizes the haystacks exactly as the run did
    embedder = load_embedder("default")
    totals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    lines_total = lines_grounded = 0
    k = 5
    for path in args.results:
        with open(path, encoding="utf-8") as fh:
            run = json.load(fh)
        cfg = run["config"]
        k = cfg["top_k"]
        clues = {r["id"]: r["clues"] for r in run["questions"] if r["method"] == args.method}
        haystacks = datasets.build(cfg["dataset"], first_index=cfg["first_index"], limit=cfg["limit"],
                                   per_haystack=cfg["questions_per_haystack"],
                                   haystack_tokens=cfg["haystack_tokens"], seed=cfg["seed"],
                                   count_tokens=llm.count_tokens)
        for hay in haystacks:
            r = Retriever(embedder, make_index_factory("faiss"), chunk_tokens=cfg["chunk_tokens"])
            r.build(hay.text)
            for q in hay.questions:
                if q.id not in clues:
                    continue
                c = Clues(q.question, spans=list(clues[q.id]))
                g = ground_clues(r, q.question, c, BASE)
                lines_total += len(g)
                lines_grounded += sum(x.grounded for x in g)
                for depth in (10, 20):  # how much a perfect reranker of the top `depth` could gain
                    deep = [h.text for h in run_plan("question", r, q.question, None, depth, BASE)]
                    totals[f"question recall@{depth}"].append((recall_at_k(q.gold, deep), all_gold_at_k(q.gold, deep)))
                ctx = PlanContext(r, judge)
                for label, plan, params in settings:
                    evidence = [h.text for h in run_plan(plan, ctx, q.question, c, k, params)]
                    totals[label].append((recall_at_k(q.gold, evidence), all_gold_at_k(q.gold, evidence)))
    n = len(totals[settings[0][0]])
    print(f"{n} questions, clues from {args.method}, k={k}; "
          f"{lines_grounded}/{lines_total} clue lines grounded at coverage {BASE.min_coverage}")
    print("| plan | recall@k | all_gold@k |\n|---|---|---|")
    for label in [s[0] for s in settings] + ["question recall@10", "question recall@20"]:
        rs = totals[label]
        print(f"| {label} | {sum(a for a, _ in rs) / n:.3f} | {sum(b for _, b in rs) / n:.3f} |")


if __name__ == "__main__":
    main()

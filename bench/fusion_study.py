"""Replay stored memory clues through different ways of turning them into retrieval queries.

Clue generation is the slow part of an evaluation run; the fusion of clues and question is
cheap. This script takes the per-question clues an `memorag eval ... --retrieval-only` run
wrote, rebuilds the same haystacks and retriever (no memory model needed, only its
tokenizer to size the haystacks), and prints recall@k / all_gold@k for each query plan:

  q-dense        the question alone, dense
  q-hybrid       the question alone, dense + BM25
  lines          question (weight 2) + every clue line (weight 1), dense + BM25  [pipeline <=0.1]
  lines-norm     as lines, but the clue lines share one unit of weight between them
  expand         question (weight 2) + one expanded query "question + all clue lines" (weight 1)
  expand-only    the expanded query alone
  q-bm25         the question alone, BM25
  *-lex2         BM25 rankings weighted twice the dense ones
  bm25-lines-norm  BM25 only: question (2) + clue lines sharing 1
  bm25-expand      BM25 only: question (2) + expanded query (1)

Usage: python bench/fusion_study.py RESULTS.json [--method memorag+answer]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from memorag.eval import datasets
from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.models.registry import load_embedder, load_llm, make_index_factory
from memorag.retrieval import Retriever, weighted_rrf

PLANS = ("q-dense", "q-bm25", "q-hybrid", "q-hybrid-lex2", "lines", "lines-norm", "lines-norm-lex2", "expand",
         "expand-only", "expand-lex2", "bm25-lines-norm", "bm25-expand")


def plan_queries(plan: str, question: str, lines: list[str], qw: float = 2.0) -> tuple[list[str], list[float], bool]:
    plan = plan.removesuffix("-lex2")
    if plan == "q-dense":
        return [question], [1.0], False
    if plan in ("q-hybrid", "q-bm25"):
        return [question], [1.0], True
    if plan == "lines":
        return [question, *lines], [qw] + [1.0] * len(lines), True
    if plan == "lines-norm":
        return [question, *lines], [qw] + [1.0 / max(1, len(lines))] * len(lines), True
    expanded = " ".join([question, *lines])
    if plan == "expand":
        return [question, expanded], [qw, 1.0], True
    if plan == "expand-only":
        return [expanded], [1.0], True
    raise ValueError(plan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--method", default="memorag+answer", help="whose stored clues to replay")
    ap.add_argument("--rrf-k", type=int, default=None, help="reciprocal-rank fusion constant (default: the library's)")
    args = ap.parse_args()
    if args.rrf_k is not None:
        import memorag.retrieval

        memorag.retrieval.RRF_K = args.rrf_k

    llm = load_llm("default", n_ctx=512)  # tokenizer only: sizes the haystacks exactly as the run did
    embedder = load_embedder("default")
    totals: dict[str, list[tuple[float, float]]] = defaultdict(list)
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
                for plan in PLANS:
                    if plan == "q-bm25":
                        hits = r.bm25_search(q.question, k)
                    elif plan.startswith("bm25-"):  # lexical only: question weight 2, clues share 1
                        lines = clues[q.id]
                        extra = [" ".join([q.question, *lines])] if plan == "bm25-expand" else lines
                        ranks = [[h.chunk_id for h in r.bm25_search(x, 20)] for x in [q.question, *extra]]
                        ws = [2.0] + [1.0 / max(1, len(extra))] * len(extra)
                        hits = [r.chunks[c] for c, _ in weighted_rrf(ranks, ws)[:k]]
                    else:
                        queries, weights, lexical = plan_queries(plan, q.question, clues[q.id])
                        lw = 2.0 if plan.endswith("-lex2") else 1.0
                        hits = r.search(queries, k, weights=weights, lexical=lexical, lexical_weight=lw)
                    evidence = [h.text for h in hits]  # Hit and Chunk both carry .text
                    totals[plan].append((recall_at_k(q.gold, evidence), all_gold_at_k(q.gold, evidence)))
    n = len(totals[PLANS[0]])
    print(f"{n} questions, clues from {args.method}, k={k}")
    print("| plan | recall@k | all_gold@k |\n|---|---|---|")
    for plan in PLANS:
        rs = totals[plan]
        print(f"| {plan} | {sum(a for a, _ in rs) / n:.3f} | {sum(b for _, b in rs) / n:.3f} |")


if __name__ == "__main__":
    main()

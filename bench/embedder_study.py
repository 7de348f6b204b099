"""Study (issue 9, direction 3): embedders compared on the HotpotQA haystacks of stored runs.

Prints recall@5 / all_gold@5 of dense, hybrid (dense + BM25) and BM25 retrieval per
embedder, and the seconds spent building each index (embedding the haystacks); ``--out``
writes them as a results JSON.

Usage: python bench/embedder_study.py default,e5-small RESULTS.json [...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import functools
import time

from study_results import Scores, mean_scores, print_table, write_results

from memorag.eval import datasets
from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.models.registry import load_embedder, make_index_factory
from memorag.retrieval import Retriever

print = functools.partial(print, flush=True)  # progress lines while it runs
K = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("embedders", help="comma-separated embedder names")
    ap.add_argument("results", nargs="+", help="stored eval runs whose haystacks are searched")
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()

    embs = {name: load_embedder(name) for name in args.embedders.split(",")}
    tot: Scores = {}
    secs = {n: 0.0 for n in embs}
    nq = 0
    for path in args.results:
        run, hs = datasets.load_run(path)
        cfg = run["config"]
        for hay in hs:
            rs = {}
            for n, e in embs.items():
                r = Retriever(e, make_index_factory("faiss"), chunk_tokens=cfg["chunk_tokens"])
                t = time.time()
                r.build(hay.text)
                secs[n] += time.time() - t
                rs[n] = r
            for q in hay.questions:
                nq += 1
                for n, r in rs.items():
                    for m, hits in (
                        ("dense", [r.chunks[c].text for c in r.rank_chunks([q.question], K)[0]]),
                        ("hybrid", [h.text for h in r.search([q.question], K, lexical=True)]),
                        ("bm25", [h.text for h in r.bm25_search(q.question, K)]),
                    ):
                        tot.setdefault(f"{n} {m}", []).append((recall_at_k(q.gold, hits), all_gold_at_k(q.gold, hits)))
            print(hay.id, {k: round(sum(a for a, _ in v) / len(v), 3) for k, v in tot.items()})
    print(nq, "questions; build seconds", {n: round(s, 1) for n, s in secs.items()})
    means = mean_scores(tot, K)
    print_table(means, K, header=None)
    write_results(args.out, "embedder_study", args, questions=nq, k=K, build_seconds=secs, variants=means)


if __name__ == "__main__":
    main()

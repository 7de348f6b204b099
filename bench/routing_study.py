"""Study (issue 11): how often a collection routes a question to its gold document.

Each of the first N SQuAD 2.0 dev articles (bundled data) becomes one document (its first
P paragraphs); each answerable question of those paragraphs is routed
(``Collection.route``) and the rank of its article among the routed documents is
recorded, for the collection's rule (one hybrid dense + BM25 search over every document's
chunks, a document scoring as its best chunk) and for dense or BM25 alone.

Routing reads only chunks and vectors, so the memory model here is the scripted fake of
``memorag.testing`` (no LLM is loaded); the embedder is the real default (MiniLM). Accuracy
only: nothing is timed.

Usage: python bench/routing_study.py [N_ARTICLES=20] [PARAGRAPHS=8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile

from memorag import MemoRAG
from memorag.collection import Collection
from memorag.eval.datasets import squad_articles
from memorag.models.registry import load_embedder, make_index_factory
from memorag.retrieval import Retriever
from memorag.testing import ScriptedLLM

print = functools.partial(print, flush=True)  # progress lines while it runs

DEPTH = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n_articles", nargs="?", type=int, default=20, help="SQuAD articles, one document each")
    ap.add_argument("n_paragraphs", nargs="?", type=int, default=8, help="paragraphs kept per article")
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()
    n_articles, n_paragraphs = args.n_articles, args.n_paragraphs
    articles = squad_articles()[:n_articles]
    pipe = MemoRAG.from_parts(ScriptedLLM(context_window=1 << 20),
                              Retriever(load_embedder("default"), make_index_factory("faiss")))
    questions: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection(tmp, pipe)
        for i, art in enumerate(articles):
            name = f"squad-{i:02d}"
            paras = art["paragraphs"][:n_paragraphs]
            coll.add_text(name, "\n\n".join(p["context"] for p in paras))
            for p in paras:
                questions += [(q["question"].strip(), name) for q in p["qas"] if not q.get("is_impossible")]
            print(f"added {name} ({art['title']})")

        # every document's chunks joined, as routing searches them (the collection's public view)
        whole, _ = coll.view([(f"squad-{i:02d}", 0.0) for i in range(len(articles))], use_memory=False)

        def ranks(mode: str) -> list[int | None]:
            """Rank (1-based) of the gold document among the top DEPTH routed, None if absent."""
            out = []
            for q, gold in questions:
                if mode == "hybrid":
                    routed = [n for n, _ in coll.route(q, DEPTH)]
                else:
                    r = whole.retriever
                    hits = r.search([q], 20, lexical=False) if mode == "dense" else r.bm25_search(q, 20)
                    routed = list(dict.fromkeys(whole.locate(h.chunk_id)[0] for h in hits))[:DEPTH]
                out.append(routed.index(gold) + 1 if gold in routed else None)
            return out

        results = {"articles": n_articles, "paragraphs_per_article": n_paragraphs, "questions": len(questions),
                   "embedder": "default (all-MiniLM-L6-v2)", "modes": {}}
        for mode in ("hybrid", "dense", "bm25"):
            rk = ranks(mode)
            acc = {f"gold_in_top{k}": round(sum(1 for r in rk if r is not None and r <= k) / len(rk), 3)
                   for k in range(1, DEPTH + 1)}
            results["modes"][mode] = acc
            print(mode, acc)
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

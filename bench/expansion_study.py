"""Study (issue 9): extra queries fused with the question, from the memory or from a
question decomposition.

Sources: ``memq`` (the surrogate questions among the stored memory clues), ``memall``
(every stored clue line), ``decomp`` (an LLM splits the question into at most three
simple questions; no document needed). Each extra query is searched on its own and fused
with the question's ranking in several ways. Results: docs/evaluation.md.

``--out`` writes the table and the per-question rows as a results JSON.

Usage: python bench/expansion_study.py RESULTS.json [...] --source memq|memall|decomp [--llm qwen2.5-1.5b]
           [--out FILE.json]
"""

from __future__ import annotations

import argparse
import re
import time

from study_results import indexed_haystacks, mean_scores, print_table, write_results

from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.models.registry import load_embedder, load_llm
from memorag.plans import run_plan
from memorag.retrieval import weighted_rrf

DECOMP = (
    "You split a question into the simple questions a search engine must answer to answer it.",
    "Question: {q}\n\nWrite the simple questions, one per line, at most three. Keep every name from the question.",
)
K = 5


def rr(rankings, k):
    out = []
    for i in range(20):
        for rk in rankings:
            if i < len(rk) and rk[i] not in out:
                out.append(rk[i])
    return out[:k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--source", default="memq")
    ap.add_argument("--llm", default="qwen2.5-1.5b")
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()
    llm = load_llm(args.llm, n_ctx=2048) if args.source.startswith("decomp") else None
    emb = load_embedder("default")
    rows = []
    t_llm = 0.0
    for hay, r, clues in indexed_haystacks(args.results, emb, clue_method="memorag+answer"):
        for q in hay.questions:
            if args.source == "memq":
                extra = [c for c in clues[q.id] if c.strip().endswith("?")]
            elif args.source == "memall":
                extra = list(clues[q.id])
            else:
                t = time.time()
                out = llm.chat(
                    [
                        {"role": "system", "content": DECOMP[0]},
                        {"role": "user", "content": DECOMP[1].format(q=q.question)},
                    ],
                    max_new_tokens=80,
                )
                t_llm += time.time() - t
                extra = [re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", line).strip() for line in out.split("\n") if line.strip()][:3]
            extra = list(dict.fromkeys(e for e in extra if e and e.lower() != q.question.lower()))
            f = [h.chunk_id for h in run_plan("question", r, q.question, None, 20)]
            subs = [[h.chunk_id for h in r.search([e], 20)] for e in extra]
            variants = {"question": f[:K]}
            if subs:
                n = len(subs)
                variants["rrf q2 s1/n"] = [c for c, _ in weighted_rrf([f] + subs, [2] + [1 / n] * n)][:K]
                variants["rrf q1 s1/n"] = [c for c, _ in weighted_rrf([f] + subs, [1] + [1 / n] * n)][:K]
                variants["rrf q1 s1"] = [c for c, _ in weighted_rrf([f] + subs, [1] + [1] * n)][:K]
                variants["roundrobin"] = rr([f] + subs, K)
                variants["q3 + sub tops"] = (f[:3] + [s[0] for s in subs if s[0] not in f[:3]] + f[3:])[:K]
                variants["q4 + sub tops"] = (f[:4] + [s[0] for s in subs if s[0] not in f[:4]] + f[4:])[:K]
            else:
                for v in ("rrf q2 s1/n", "rrf q1 s1/n", "rrf q1 s1", "roundrobin", "q3 + sub tops", "q4 + sub tops"):
                    variants[v] = f[:K]
            row = dict(id=q.id, q=q.question, extra=extra, scores={})
            for name, ids in variants.items():
                ev = [r.chunks[c].text for c in ids]
                row["scores"][name] = (recall_at_k(q.gold, ev), all_gold_at_k(q.gold, ev))
            rows.append(row)
            print(q.id, extra[:3], row["scores"]["question"], row["scores"]["rrf q2 s1/n"], flush=True)
    n = len(rows)
    print(f"{n} questions, source {args.source}, {t_llm / n:.1f} s/question llm")
    means = mean_scores({name: [r["scores"][name] for r in rows] for name in rows[0]["scores"]}, K)
    print_table(means, K, header=None)
    write_results(args.out, "expansion_study", args, questions=n, k=K, llm_seconds_per_question=t_llm / n,
                  variants=means, per_question=rows)


if __name__ == "__main__":
    main()

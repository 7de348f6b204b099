"""Study (issue 9): names as sub-queries (plan ``entities``) and bridge names from the memory.

No LLM runs here: question-only hybrid against the question plus each name it holds
searched alone, with several weights; and the same plus the names that the memory's
*grounded* clue sentences add (stored clues of the run), the bridge entities of a
two-hop question; ``--out`` writes the table as a results JSON.

Usage: python bench/entity_study.py RUN.json [RUN.json ...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace

from study_results import indexed_haystacks, mean_scores, print_table, write_results

from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.memory import Clues
from memorag.models.registry import load_embedder
from memorag.plans import PlanContext, PlanParams, grounded_sentences, names_in, run_plan

K = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--method", default="memorag+answer")
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()
    emb = load_embedder("default")
    totals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for hay, r, clues in indexed_haystacks(args.results, emb, clue_method=args.method):
        ctx = PlanContext(r)
        for q in hay.questions:
            c = Clues(q.question, spans=list(clues.get(q.id, [])))

            def add(label, hits, q=q):
                ev = [h.text for h in hits]
                totals[label].append((recall_at_k(q.gold, ev), all_gold_at_k(q.gold, ev)))

            add("question", run_plan("question", ctx, q.question, None, K))
            add("clues (default)", run_plan("clues", ctx, q.question, c, K))
            for w in (0.5, 1.0, 2.0):
                add(f"entities w{w:g}", run_plan("entities", ctx, q.question, None, K, replace(PlanParams(), clue_weight=w)))
            qnames = names_in(q.question)
            sents = grounded_sentences(r, q.question, c, PlanParams())
            bridge = [n for s in sents[:3] for n in names_in(s.text)
                      if n not in qnames and n.lower() not in q.question.lower()]
            bridge = list(dict.fromkeys(bridge))
            for w in (0.5, 1.0):
                names = qnames + bridge
                ws = [2.0] + [w / max(1, len(names))] * len(names)
                add(f"entities + memory bridge names w{w:g}",
                    r.search([q.question, *names], K, weights=ws, lexical=True) if names else run_plan("question", ctx, q.question, None, K))
    n = len(totals["question"])
    print(f"{n} questions, k={K}")
    means = mean_scores(totals, K)
    print_table(means, K, header="plan")
    write_results(args.out, "entity_study", args, questions=n, k=K, variants=means)


if __name__ == "__main__":
    main()

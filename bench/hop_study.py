"""Study (issue 21): the memory takes the second hop. The judge's best passage is shown to
the memory beside the question, and the memory quotes what else the document says that
helps answer it (never from the chunk that passage came from).

Why: on HotpotQA the memory quotes what the question already finds (docs/evaluation.md,
"What the memory adds on 80 held-out questions"). The missing gold paragraph of a two-hop
question is about a bridge entity the question never names; the first hop's passage names
it, and the memory, which has read the document, may know where the document says more.

Per question, on the eval harness's own haystacks and memorized states (cached like
``memorag eval``), with the pipeline's own plans, judge and k:

* ``hybrid``: question only; ``likelihood``: the judge, no memory; ``links``: the judge and
  a two-hop walk along rare shared words (``follow_hops=2``), the memory-free second hop;
* ``recall``: the default plan (the memory's quotes for the question, then the judge);
* ``hop``: plan ``recall`` with the quotes the memory gives when it also reads the
  ``likelihood`` top passage (its chunk's sentences are kept out of the quotes);
  ``hop+quotes``: the same quotes, voting in the fusion (plan ``recall+quotes``).

Writes recall@k, all_gold@k, the quotes' gold share and every question's rows.

    python bench/hop_study.py --first-index 900 --limit 40 --per-haystack 20 --seed 5 \
        --out docs/results/hop_study_900-939s5.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_results, beside this script
from study_results import add_question_set_args  # noqa: E402

HOP_QUERY = "{question}\n\nA passage found so far: {passage}"
METHODS = ("hybrid", "likelihood", "links", "recall", "hop", "hop+quotes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_set_args(ap)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--haystack-tokens", type=int, default=32000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from memorag import MemoRAG
    from memorag.answering import RetrievalPlan
    from memorag.eval import datasets
    from memorag.eval.methods import MethodRunner
    from memorag.eval.metrics import all_gold_at_k, recall_at_k
    from memorag.eval.runner import clue_quality, load_or_memorize
    from memorag.longmem import extract_sentences
    from memorag.memory import Clues
    from memorag.models.packaged import cache_dir
    from memorag.models.registry import default_window

    if args.first_index + args.limit > 3700:
        raise SystemExit("HotpotQA indices >= 3700 are kept out of studies.")
    pipe = MemoRAG(ret_hit=args.top_k, n_ctx=default_window("default"), judge="auto")
    haystacks = datasets.build("hotpotqa", first_index=args.first_index, limit=args.limit,
                               per_haystack=args.per_haystack, haystack_tokens=args.haystack_tokens,
                               seed=args.seed, count_tokens=pipe.memory.llm.count_tokens)
    rows: list[dict] = []
    t_start = time.perf_counter()
    for hay in haystacks:
        load_or_memorize(pipe, cache_dir() / "eval", hay, progress=True)
        runner = MethodRunner(pipe, args.top_k)
        links = MethodRunner(pipe, args.top_k, plan_params={"follow_hops": 2})
        params = runner.parts("memorag").plan.params
        judge = runner.parts("memorag").plan.judge
        for q in hay.questions:
            t0 = time.perf_counter()
            got: dict[str, list] = {}
            found = {m: runner.retrieve(m, q.question, hay.text).found for m in ("hybrid", "likelihood", "memorag")}
            for m, f in found.items():
                got[m] = f.hits
            got["links"] = links.retrieve("likelihood", q.question, hay.text).found.hits
            top = got["likelihood"][0]
            passage = top.passage or top.text
            t_hop = time.perf_counter()
            spans = pipe.memory.recall_spans(HOP_QUERY.format(question=q.question, passage=passage),
                                             avoid=extract_sentences(top.text))
            hop_seconds = time.perf_counter() - t_hop
            clues = Clues(question=q.question, spans=spans)
            view = runner.view()
            got["hop"] = RetrievalPlan("recall", params, judge).find(view, q.question, clues, args.top_k).hits
            got["hop+quotes"] = RetrievalPlan("recall+quotes", params, judge).find(
                view, q.question, clues, args.top_k).hits
            got["recall"] = got.pop("memorag")
            row: dict = {"id": q.id, "question": q.question, "hop_spans": spans,
                         "hop_seconds": round(hop_seconds, 2), "seconds": round(time.perf_counter() - t0, 2),
                         "hop_quality": clue_quality(spans, hay, q)}
            row["recall_spans"] = found["memorag"].clues.spans if found["memorag"].clues else []
            row["recall_quality"] = clue_quality(row["recall_spans"], hay, q)
            for m in METHODS:
                texts = [h.text for h in got[m][: args.top_k]]
                row[m] = {"recall": recall_at_k(q.gold, texts), "all_gold": all_gold_at_k(q.gold, texts),
                          "ids": [h.chunk_id for h in got[m][: args.top_k]]}
            rows.append(row)
            print(f"{q.id}: " + "  ".join(f"{m} {row[m]['recall']:.2f}" for m in METHODS)
                  + f"  hop quotes gold {sum(row['hop_quality']['gold_quoted'])} of {len(row['hop_quality']['gold_quoted'])}",
                  flush=True)
    n = len(rows)
    summary = {m: {"recall@k": round(sum(r[m]["recall"] for r in rows) / n, 4),
                   "all_gold@k": round(sum(r[m]["all_gold"] for r in rows) / n, 4)} for m in METHODS}
    for key, rows_key in (("hop", "hop_quality"), ("recall", "recall_quality")):
        flags = [f for r in rows for f in r[rows_key]["gold_quoted"]]
        summary[f"{key}_gold_quoted"] = round(sum(flags) / len(flags), 4) if flags else 0.0
    summary["hop_seconds_mean"] = round(sum(r["hop_seconds"] for r in rows) / n, 2)
    for m in METHODS:
        print(f"{m:12s} recall@{args.top_k} {summary[m]['recall@k']:.4f}  all_gold@{args.top_k} "
              f"{summary[m]['all_gold@k']:.4f}")
    out = {"study": "hop_study", "command": "python bench/hop_study.py " + " ".join(sys.argv[1:]),
           "hop_query": HOP_QUERY, "questions": n, "top_k": args.top_k,
           "memory_model": pipe.memory.llm.describe(), "summary": summary,
           "wall_seconds": round(time.perf_counter() - t_start, 1), "rows": rows}
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()

"""Answer F1 of two methods of a `memorag eval --retrieval-only` run, generated only where
their evidence differs.

Usage: python bench/answer_diff.py RESULTS.json [--methods likelihood,memorag] --out FILE.json

Why only there: with the same evidence chunks in the same order the generator gets the same
prompt and, decoding greedily, writes the same answer, so a question whose two evidence lists
are equal adds nothing to the difference of the two methods' answer F1. Generating the rest
costs half a minute an answer on 2 cores; a run where the methods differ on a few questions
in 80 then costs minutes, not hours. The rows' ``evidence_ids`` (chunk ids, best first, which
`memorag eval` records) say where they differ; each such question is answered with both
evidence lists by the run's generator and answer prompt (`memorag.eval.methods.MethodRunner`,
as `memorag eval` without --retrieval-only answers), over the run's own cached haystack. The
F1 difference over all questions is the sum over the differing ones divided by the run's
question count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def differing(rows: list[dict], a: str, b: str) -> list[tuple[dict, dict]]:
    """(row of a, row of b) for every question whose two evidence lists differ, in run order.
    A question missing either method, or rows without ``evidence_ids``, is an error: the
    difference would be computed over the wrong questions."""
    by_id: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_id.setdefault(r["id"], {})[r["method"]] = r
    out = []
    for qid, methods in by_id.items():
        if a not in methods or b not in methods:
            raise SystemExit(f"{qid} has no {a if a not in methods else b} row: run both methods on every question")
        ra, rb = methods[a], methods[b]
        if ra.get("evidence_ids") is None or rb.get("evidence_ids") is None:
            raise SystemExit(f"{qid}: rows have no evidence_ids (made by a memorag eval older than this script)")
        if ra["evidence_ids"] != rb["evidence_ids"]:
            out.append((ra, rb))
    return out


def summarize(answered: list[dict], n_questions: int, a: str, b: str) -> dict:
    """Means over the differing questions and the F1 difference over the whole run."""
    n = len(answered)
    mean = (lambda key: round(sum(r[key] for r in answered) / n, 4)) if n else (lambda key: None)
    return {"questions": n_questions, "differing": n,
            f"f1_{a}_on_differing": mean(f"f1_{a}"), f"f1_{b}_on_differing": mean(f"f1_{b}"),
            f"f1_{b}_minus_{a}_over_all": round(sum(r[f"f1_{b}"] - r[f"f1_{a}"] for r in answered) / n_questions, 4),
            "better": sum(r[f"f1_{b}"] > r[f"f1_{a}"] for r in answered),
            "worse": sum(r[f"f1_{b}"] < r[f"f1_{a}"] for r in answered)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--methods", default="likelihood,memorag", help="the two methods, A,B (the difference is B - A)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    a, b = args.methods.split(",")
    run = json.loads(args.results.read_text(encoding="utf-8"))
    cfg = run["config"]
    pairs = differing(run["questions"], a, b)
    n_questions = len({r["id"] for r in run["questions"]})
    print(f"{len(pairs)} of {n_questions} questions have different evidence under {a} and {b}", file=sys.stderr)

    from memorag.answering import Found
    from memorag.eval import datasets
    from memorag.eval.methods import MethodResult, MethodRunner
    from memorag.eval.metrics import exact_match, qa_f1
    from memorag.eval.runner import index_haystack
    from memorag.models.packaged import cache_dir
    from memorag.pipeline import MemoRAG
    from memorag.plans import PlanResult
    from memorag.retrieval import Hit

    pipe = MemoRAG(mem_model_name_or_path=cfg["memory_model"]["spec"], gen_model_name_or_path=cfg["generator"]["spec"],
                   ret_hit=cfg["top_k"], retrieval_chunk_size=cfg["chunk_tokens"], n_ctx=cfg["memory_window"],
                   compression=cfg["compression"], judge=None)
    haystacks = datasets.build(cfg["dataset"], first_index=cfg["first_index"], limit=cfg["limit"],
                               per_haystack=cfg["questions_per_haystack"], haystack_tokens=cfg["haystack_tokens"],
                               seed=cfg["seed"], count_tokens=pipe.memory.llm.count_tokens)
    wanted = {ra["id"]: (ra, rb) for ra, rb in pairs}
    answered = []
    for hay in haystacks:
        todo = [q for q in hay.questions if q.id in wanted]
        if not todo:
            continue
        pipe.retriever.state, where, _ = index_haystack(pipe, cache_dir() / "eval", hay)
        chunks = pipe.retriever.chunks
        runner = MethodRunner(pipe, cfg["top_k"])
        for q in todo:
            row = {"id": q.id, "question": q.question, "answers": q.answers}
            for method, r in zip((a, b), wanted[q.id]):
                hits = [Hit(cid, 0.0, chunks[cid].text) for cid in r["evidence_ids"]]
                result = MethodResult([h.text for h in hits], found=Found(q.question, "memorag", None, PlanResult(hits)))
                pred = runner.answer(method, q.question, hay.text, result)
                row.update({f"evidence_{method}": r["evidence_ids"], f"recall_{method}": r["recall"],
                            f"prediction_{method}": pred, f"f1_{method}": qa_f1(pred, q.answers),
                            f"em_{method}": exact_match(pred, q.answers)})
            print(f"{q.id}: F1 {a} {row[f'f1_{a}']:.3f}, {b} {row[f'f1_{b}']:.3f}", file=sys.stderr, flush=True)
            answered.append(row)
    summary = summarize(answered, n_questions, a, b)
    print(json.dumps(summary, indent=1))
    args.out.write_text(json.dumps({"benchmark": "answer_diff", "command": "python bench/answer_diff.py "
                                    + " ".join(sys.argv[1:]), "results": args.results.name, "methods": [a, b],
                                    "generator": cfg["generator"], "top_k": cfg["top_k"], "summary": summary,
                                    "rows": answered}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Does the memory point at the evidence? Score each candidate paragraph by how likely the
memory (which has read the document) finds quoting its first sentence as the reply to the
recall task, and compare rankings on HotpotQA haystacks.

For every question: the question-only hybrid top ``--depth`` chunks; each chunk's paragraphs;
per paragraph the memory's mean log-probability of the first ``--tokens`` tokens of its first
sentence after the recall prompt (the memory with the document, and a control: the same
model and adapter after a document that holds nothing). Optionally the 1.5B judge's query
likelihood of the same candidates (the plan ``likelihood`` scores), so fusions can be
compared offline. Writes one JSON with every score, and prints recall@k / all_gold@k.

    python bench/pointer_study.py --first-index 0 --limit 20 --per-haystack 10 --seed 0 \
        --out /tmp/pointer_0-19.json
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

CONTROL_TEXT = "This document is empty."


def _order(row: dict, key: str, m: int, pmi: bool = False) -> list[int]:
    """The first-round chunks ordered by their best paragraph's mean log-probability of its
    first ``m`` tokens (``key``: "mem" with the document, "control" without; ``pmi``: mem
    minus control, what the document adds)."""
    best: dict[int, float] = {}
    for c in row["cands"]:
        lp = c.get(key, [])[:m]
        if not lp:
            continue
        v = sum(lp) / len(lp)
        if pmi:
            ctl = c["control"][:m]
            v -= sum(ctl) / len(ctl)
        best[c["chunk"]] = max(best.get(c["chunk"], float("-inf")), v)
    return sorted(row["first"], key=lambda cid: -best.get(cid, float("-inf")))


def _judged(row: dict) -> list[int]:
    return sorted(row["first"], key=lambda cid: -row["judge"].get(str(cid), float("-inf")))


def _score(row: dict, order: list[int], k: int) -> tuple[float, float]:
    found = [False] * row["all_gold_count"]
    for cid in order[:k]:
        for i, g in enumerate(row["chunk_gold"][str(cid)]):
            found[i] = found[i] or g
    return sum(found) / len(found), float(all(found))


def summarize(rows: list[dict], m: int, weight: float, k: int = 5) -> dict:
    """recall@k / all_gold@k of each ranking, mean over ``rows`` (fusions as the plans fuse:
    weighted RRF, the first round weight 1, the judge 2)."""
    from memorag.retrieval import weighted_rrf

    def fuse(rankings: list[list[int]], weights: list[float]) -> list[int]:
        return [cid for cid, _ in weighted_rrf(rankings, weights)]

    rankings = {
        "hybrid (question, first round)": lambda r: r["first"],
        f"pointer m{m} (memory)": lambda r: _order(r, "mem", m),
        f"pointer m{m} (control: no document)": lambda r: _order(r, "control", m),
        f"hybrid + pointer w{weight} (memory)": lambda r: fuse([r["first"], _order(r, "mem", m)], [1, weight]),
        f"hybrid + pointer w{weight} (control)": lambda r: fuse([r["first"], _order(r, "control", m)], [1, weight]),
        f"hybrid + pointer w{weight} (memory minus control)":
            lambda r: fuse([r["first"], _order(r, "mem", m, pmi=True)], [1, weight]),
        "likelihood (hybrid + judge w2)": lambda r: fuse([r["first"], _judged(r)], [1, 2]),
        f"likelihood + pointer w{weight} (memory)":
            lambda r: fuse([r["first"], _judged(r), _order(r, "mem", m)], [1, 2, weight]),
        f"likelihood + pointer w{weight} (control)":
            lambda r: fuse([r["first"], _judged(r), _order(r, "control", m)], [1, 2, weight]),
    }
    out = {}
    for name, fn in rankings.items():
        try:
            scores = [_score(r, fn(r), k) for r in rows]
        except KeyError:  # a run without the judge or the control
            continue
        out[name] = {"recall": round(sum(s[0] for s in scores) / len(scores), 4),
                     "all_gold": round(sum(s[1] for s in scores) / len(scores), 4), "questions": len(scores)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_set_args(ap)
    ap.add_argument("--haystack-tokens", type=int, default=32000)
    ap.add_argument("--max-haystacks", type=int, default=None)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--judge", action="store_true", help="also score the candidates with the 1.5B judge")
    ap.add_argument("--control", action="store_true", help="also score with an empty memory")
    ap.add_argument("--memory-window", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summarize", type=Path, nargs="*", default=None,
                    help="only pool these study files into --out's summary (no model loads)")
    ap.add_argument("--m", type=int, default=4, help="tokens of each paragraph the summary's pointer reads")
    ap.add_argument("--weight", type=float, default=1.0, help="the pointer's weight in the summary's fusions")
    args = ap.parse_args()
    if args.summarize:
        rows = [r for p in args.summarize for r in json.loads(p.read_text())["questions"]]
        result = {"command": "python " + " ".join(sys.argv), "files": [p.name for p in args.summarize],
                  "m": args.m, "weight": args.weight, "k": 5, "summary": summarize(rows, args.m, args.weight)}
        args.out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["summary"], indent=1))
        return

    from memorag.eval import datasets
    from memorag.eval.runner import load_or_memorize
    from memorag.models.packaged import cache_dir
    from memorag.pipeline import MemoRAG
    from memorag.plans import PlanContext, PlanParams, likelihood_scores
    from memorag.prompts import prompts_for

    pipe = MemoRAG(gen_model_name_or_path="qwen2.5-1.5b" if args.judge else "qwen2.5-0.5b", ret_hit=5,
                   **({"n_ctx": args.memory_window} if args.memory_window else {}))
    llm = pipe.memory.llm
    hays = datasets.build("hotpotqa", first_index=args.first_index, limit=args.limit, per_haystack=args.per_haystack,
                          haystack_tokens=args.haystack_tokens, seed=args.seed, count_tokens=llm.count_tokens)
    if args.max_haystacks:
        hays = hays[: args.max_haystacks]
    template = prompts_for("en").recall
    done: dict[str, dict] = {}
    if args.out.exists():
        done = {r["id"]: r for r in json.loads(args.out.read_text())["questions"]}
    rows = list(done.values())
    root = cache_dir() / "eval"
    for hay in hays:
        todo = [q for q in hay.questions if q.id not in done]
        if not todo:
            continue
        t = time.perf_counter()
        load_or_memorize(pipe, root, hay, progress=True)
        print(f"{hay.id}: memory ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        r = pipe.retriever
        pending: list[tuple[dict, list[str], str]] = []
        for q in todo:
            t0 = time.perf_counter()
            first = r.search([q.question], args.depth)
            cands = []  # (chunk_id, paragraph text, reply text)
            for h in first:
                for para in (p.strip() for p in h.text.split("\n\n")):
                    if len(para) < 40:
                        continue
                    lines = para.split("\n", 1)
                    body = lines[1] if len(lines) == 2 and len(lines[0]) < 120 else para
                    cands.append((h.chunk_id, para, body.strip()))
            task = template.format(question=q.question)
            with pipe.memory._adapter_for("recall"):
                mem = llm.score_replies(task, [c[2] for c in cands], max_tokens=args.tokens)
            t_mem = time.perf_counter() - t0
            gold_flags = []
            from memorag.eval.metrics import retrieved_gold

            for c in cands:
                gold_flags.append(any(retrieved_gold(q.gold, [c[1]])))
            row = {"id": q.id, "question": q.question, "haystack": hay.id,
                   "first": [h.chunk_id for h in first],
                   "chunk_gold": {str(h.chunk_id): retrieved_gold(q.gold, [h.text]) for h in first},
                   "all_gold_count": len(q.gold),
                   "cands": [{"chunk": c[0], "head": c[2][:80], "gold": g, "mem": lp}
                             for c, g, lp in zip(cands, gold_flags, mem)],
                   "seconds_memory": round(t_mem, 2)}
            if args.judge:
                t1 = time.perf_counter()
                ctx = PlanContext(r, pipe.judge)
                js = likelihood_scores(ctx, q.question, first, PlanParams())
                row["judge"] = {str(k): score for k, (score, _) in js.items()}
                row["seconds_judge"] = round(time.perf_counter() - t1, 2)
            pending.append((row, [c[2] for c in cands], task))
            rows.append(row)
            done[q.id] = row
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "questions": rows},
                                           indent=1))
            print(f"{q.id}: {len(cands)} paragraphs, memory {t_mem:.1f} s", file=sys.stderr)
        if args.control and pending:
            # The same model, adapter and prompt after a document that holds nothing: what the
            # scores owe to the question alone, not to the memory of this document.
            pipe.memory.memorize(CONTROL_TEXT)
            for row, replies, task in pending:
                with pipe.memory._adapter_for("recall"):
                    ctl = llm.score_replies(task, replies, max_tokens=args.tokens)
                for c, lp in zip(row["cands"], ctl):
                    c["control"] = lp
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "questions": rows},
                                           indent=1))
    print(f"{len(rows)} questions -> {args.out}")


if __name__ == "__main__":
    main()

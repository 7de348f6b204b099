"""Study (issue 9): rerank question-only candidates by query likelihood (plans ``likelihood``
and ``recall``).

For each HotpotQA question, question-only hybrid retrieval gives the top 10 chunks; a
small LLM scores paragraphs of them by how likely it finds the *question* after reading
each (mean log-probability of the question's tokens: query likelihood, as in UPR,
arXiv:2204.07496, and arXiv:2310.13243), within a budget of paragraphs per question; a
chunk's score is its best paragraph's. Plan ``recall`` adds the chunks the memory's
grounded clues point at (stored clues of the run) to the candidates.

Judge calls are cached by prompt in ``--cache`` (JSON), so budgets and fusion weights
are compared without rescoring.

Usage: python bench/rerank_study.py RUN.json [RUN.json ...] [--judge default]
       python bench/rerank_study.py --build hotpotqa:400:20:1   (first index, limit, seed; no clues)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import replace

from memorag.answering import AnswerPrompt, RetrievalPlan, View
from memorag.eval import datasets
from memorag.eval.metrics import all_gold_at_k, exact_match, match_score, qa_f1, recall_at_k
from memorag.memory import Clues
from memorag.models.registry import load_embedder, load_llm, make_index_factory
from memorag.pipeline import load_judge
from memorag.plans import PlanParams, excerpt_evidence
from memorag.retrieval import Retriever


class CachedJudge:
    def __init__(self, judge, path: str, name: str) -> None:
        self.judge, self.path, self.name = judge, path, name
        self.cache: dict[str, list[float]] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.cache = json.load(fh)
        self.calls = 0
        self.seconds = 0.0

    def continuation_logprobs(self, messages, continuation):
        key = hashlib.sha1(json.dumps([self.name, messages, continuation]).encode()).hexdigest()
        if key not in self.cache:
            t = time.time()
            self.cache[key] = self.judge.continuation_logprobs(messages, continuation)
            self.seconds += time.time() - t
            self.calls += 1
        return self.cache[key]

    def answer(self, messages, max_new_tokens: int = 48) -> str:
        """The generator's answer (greedy, so cached by prompt like the scores)."""
        key = hashlib.sha1(json.dumps([self.name, "answer", max_new_tokens, messages]).encode()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.judge.chat(messages, max_new_tokens=max_new_tokens).strip()
        return self.cache[key]

    def save(self) -> None:
        with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(self.cache, fh)
        os.replace(self.path + ".tmp", self.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="*")
    ap.add_argument("--build", action="append", default=[],
                    help="DATASET:FIRST:LIMIT:SEED[:PER_HAYSTACK[:TOKENS]] (default 10 q per 32K haystack)")
    ap.add_argument("--judge", default="default")
    ap.add_argument("--method", default="memorag+answer", help="whose stored clues plan 'recall' uses")
    ap.add_argument("--budgets", default="10,16")
    ap.add_argument("--weights", default="0.5,1,2,100")
    ap.add_argument("--depth", type=int, default=PlanParams().likelihood_depth)
    ap.add_argument("--chars", type=int, default=PlanParams().likelihood_chars)
    ap.add_argument("--hops", default="0", help="comma-separated follow_hops values to compare (0 = off)")
    ap.add_argument("--max-df", type=int, default=PlanParams().follow_max_df)
    ap.add_argument("--anchors", type=int, default=PlanParams().follow_anchors)
    ap.add_argument("--new-only", action="store_true", help="the walk adds only chunks the judge has not placed")
    ap.add_argument("--cache", default="/tmp/rerank_cache.json")
    ap.add_argument("--f1", default="", help="comma-separated labels whose evidence the generator "
                    "(the judge model) answers from; answer F1 / EM are reported for them")
    ap.add_argument("--notes", default="", help="comma-separated labels also answered with the sentences "
                    "the link walk went through listed before the evidence (label + ' notes')")
    ap.add_argument("--excerpts", default="", help="comma-separated labels also answered from excerpts of "
                    "their evidence (plans.excerpt_evidence: the question's best sentences and the walked "
                    "ones, with their neighbours; label + ' excerpts')")
    ap.add_argument("--reorder", default="", help="comma-separated labels also answered from the same "
                    "evidence in another order (--order-kind; label + ' ' + kind)")
    ap.add_argument("--order-kind", choices=("best-last", "document"), default="best-last",
                    help="best-last: rank order reversed, the best chunk next to the question; "
                    "document: the chunks' order in the document")
    ap.add_argument("--around", type=int, default=1, help="sentences either side of a kept one in --excerpts")
    ap.add_argument("--k", type=int, default=5, help="evidence chunks per question")
    ap.add_argument("--out", "--output", dest="output", default="", help="write per-question results and the table as JSON")
    args = ap.parse_args()

    # room for k=5 evidence (--f1); a SPEC+lora=FILE judge scores with its adapter, as ask does
    judge = CachedJudge(load_judge(args.judge, n_ctx=4096), args.cache, args.judge)
    emb = load_embedder("default")
    counter = load_llm("default", n_ctx=512).count_tokens
    runs = []
    for path in args.results:
        run, hs = datasets.load_run(path)
        clues = {r["id"]: r["clues"] for r in run["questions"] if r["method"] == args.method}
        runs.append((run["config"]["chunk_tokens"], hs, clues))
    for spec in args.build:
        name, first, limit, seed, *rest = spec.split(":")
        per, tokens = (int(rest[0]) if rest else 10), (int(rest[1]) if len(rest) > 1 else 32000)
        runs.append((512, datasets.build(name, first_index=int(first), limit=int(limit), per_haystack=per,
                                         haystack_tokens=tokens, seed=int(seed), count_tokens=counter), {}))
    k = args.k
    settings = [("question", "question", PlanParams())]
    for b in map(int, args.budgets.split(",")):
        for w in map(float, args.weights.split(",")):
            for hops in map(int, args.hops.split(",")):
                for plan in ("likelihood", "recall"):
                    label = f"{plan} budget {b} w{w:g}" + (f" hops {hops}" if hops else "")
                    settings.append((label, plan,
                                     replace(PlanParams(), likelihood_passages=b, likelihood_weight=w,
                                             likelihood_depth=args.depth, likelihood_chars=args.chars,
                                             follow_hops=hops, follow_max_df=args.max_df,
                                             follow_anchors=args.anchors,
                                             follow_new_only=args.new_only)))
    totals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    rows: list[dict] = []
    f1_labels = [x for x in args.f1.split(",") if x]
    note_labels = [x for x in args.notes.split(",") if x]
    excerpt_labels = [x for x in args.excerpts.split(",") if x]
    order_labels = [x for x in args.reorder.split(",") if x]
    answers: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    prompt = AnswerPrompt()  # the answering core's prompt: what MemoRAG.ask sends the generator

    def answer(view: View, question: str, evidence: list[str], linked: list[str] | None = None) -> str:
        if linked:
            evidence = ["Linked sentences:\n" + "\n".join(linked), *evidence]
        return judge.answer(prompt.messages(view, "memorag", question, evidence, []))

    def record(label: str, q, hay, pred: str, **extra) -> None:
        scores = (qa_f1(pred, q.answers), exact_match(pred, q.answers), match_score(pred, q.answers, q.match))
        answers[label].append(scores)
        rows.append({"id": q.id, "haystack": hay.id, "method": label, "prediction": pred,
                     "f1": scores[0], "em": scores[1], "match": scores[2], **extra})

    for chunk_tokens, hs, clues in runs:
        for hay in hs:
            r = Retriever(emb, make_index_factory("faiss"), chunk_tokens=chunk_tokens)
            r.build(hay.text)
            view = View(r, None, "en")
            for q in hay.questions:
                c = Clues(q.question, spans=list(clues.get(q.id, [])))
                for label, hits in (("dense", r.search([q.question], k)), ("bm25", r.bm25_search(q.question, k))):
                    ev = [h.text for h in hits]
                    totals[label].append((recall_at_k(q.gold, ev), all_gold_at_k(q.gold, ev)))
                    rows.append({"id": q.id, "haystack": hay.id, "method": label, "recall": totals[label][-1][0],
                                 "all_gold": totals[label][-1][1]})
                for label, plan, params in settings:
                    if plan == "recall" and not clues:
                        continue
                    found = RetrievalPlan(plan, params, judge).find(view, q.question, c, k)
                    hits = found.hits
                    ev = [h.text for h in hits]
                    totals[label].append((recall_at_k(q.gold, ev), all_gold_at_k(q.gold, ev)))
                    rows.append({"id": q.id, "haystack": hay.id, "method": label, "recall": totals[label][-1][0],
                                 "all_gold": totals[label][-1][1]})
                    if label in f1_labels:
                        # the same evidence in the same order gives the same prompt: the judge's
                        # cache answers it once
                        record(label, q, hay, answer(view, q.question, ev))
                    if label in order_labels:
                        moved = (hits[::-1] if args.order_kind == "best-last"
                                 else sorted(hits, key=lambda h: h.chunk_id))
                        record(f"{label} {args.order_kind}", q, hay, answer(view, q.question, [h.text for h in moved]))
                    if label in note_labels:
                        record(label + " notes", q, hay, answer(view, q.question, ev, found.linked),
                               linked=list(found.linked))
                    if label in excerpt_labels:
                        short = excerpt_evidence(r, q.question, hits, around=args.around, linked_ids=found.linked_ids)
                        record(label + " excerpts", q, hay, answer(view, q.question, short), evidence=short)
                judge.save()
                if args.output:  # after every question: a long run stopped early keeps its rows
                    write_output(args, k, totals, answers, rows)
                n = len(totals["question"])
                best = max((lab for lab in totals if lab not in ("question", "dense", "bm25")), key=lambda lab: sum(a for a, _ in totals[lab]))
                print(f"{n} q  question {sum(a for a, _ in totals['question']) / n:.3f}  best {best} "
                      f"{sum(a for a, _ in totals[best]) / len(totals[best]):.3f}  "
                      f"{judge.seconds / max(1, judge.calls):.2f} s/passage, {judge.calls} scored", flush=True)
    n = len(totals["question"])
    print(f"\n{n} questions, judge {args.judge}, k={k}")
    table = write_output(args, k, totals, answers, rows)
    print(f"| plan | n | recall@{k} | all_gold@{k} |\n|---|---|---|---|")
    for label, fs in answers.items():
        print(f"{label}: answer F1 {table[label]['f1']:.3f}, EM {table[label]['em']:.3f}, "
              f"match {table[label]['match']:.3f} ({len(fs)} answers)")
    for label, row in table.items():
        if f"recall@{k}" in row:
            print(f"| {label} | {row['n']} | {row[f'recall@{k}']:.3f} | {row[f'all_gold@{k}']:.3f} |")


def write_output(args, k: int, totals: dict, answers: dict, rows: list[dict]) -> dict:
    table = {label: {"n": len(rs), f"recall@{k}": round(sum(a for a, _ in rs) / len(rs), 4),
                     f"all_gold@{k}": round(sum(b for _, b in rs) / len(rs), 4)} for label, rs in totals.items()}
    for label, fs in answers.items():
        table.setdefault(label, {"n": len(fs)}).update(f1=round(sum(f[0] for f in fs) / len(fs), 4), em=round(sum(f[1] for f in fs) / len(fs), 4),
                            match=round(sum(f[2] for f in fs) / len(fs), 4), answers=len(fs))
    if args.output:
        config = {"results": args.results, "build": args.build, "judge": args.judge, "method": args.method,
                  "budgets": args.budgets, "weights": args.weights, "hops": args.hops,
                  "max_df": args.max_df, "around": args.around, "anchors": args.anchors, "depth": args.depth, "chars": args.chars,
                  "top_k": k, "chunk_tokens": 512}
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump({"config": config, "table": table, "questions": rows}, fh, indent=1)
    return table

if __name__ == "__main__":
    main()

"""Study (issue 9): a reader LLM writes a follow-up query from the first-round evidence.

For each HotpotQA question, question-only hybrid retrieval runs first; the reader
(default: the 1.5B generator) sees the question and the best-matching 400-character
window of each of the top-3 chunks and writes one search query for the missing fact
(self-ask / IRCoT-style second hop). The second-round ranking is fused with the first in
several ways (weighted RRF, fixed slots). Results: docs/evaluation.md. ``--out`` writes
the table and the per-question rows as a results JSON.

Usage: python bench/followup_study.py docs/results/hotpotqa_retrieval_0-19_32k.json \
           docs/results/hotpotqa_retrieval_200-219_32k.json [--reader qwen2.5-1.5b] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import time

from study_results import indexed_haystacks, mean_scores, print_table, write_results

from memorag.eval.metrics import all_gold_at_k, recall_at_k
from memorag.models.registry import load_embedder, load_llm
from memorag.plans import run_plan
from memorag.retrieval import weighted_rrf

PROMPTS = {
    "query": (
        "You help a search engine answer questions that need two steps.",
        "Question: {q}\n\nPassages found so far:\n{p}\n\nThe answer may need a fact about a person, place or thing that these passages name but the question does not. Write one short search query for the missing fact. Reply with the query only.",
    ),
    "entity": (
        "You help a search engine answer questions that need two steps.",
        "Question: {q}\n\nPassages found so far:\n{p}\n\nWhich person, place, work or organisation named in the passages must be looked up next to answer the question? Reply with its name only.",
    ),
}
K = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--reader", default="qwen2.5-1.5b")
    ap.add_argument("--prompt", default="query", choices=sorted(PROMPTS))
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--out", default="", help="write the results JSON here")
    args = ap.parse_args()
    sysmsg, user = PROMPTS[args.prompt]
    reader = load_llm(args.reader, n_ctx=4096)
    emb = load_embedder("default")
    rows = []
    t_llm = 0.0
    for hay, r, _ in indexed_haystacks(args.results, emb):
        idx = r.sentence_index("en")
        for q in hay.questions:
            first = run_plan("question", r, q.question, None, 20)
            wins = [idx.window(h.chunk_id, q.question, 400) or h.text[:400] for h in first[: args.top]]
            passages = "\n".join(f"[{i + 1}] {w}" for i, w in enumerate(wins))
            t = time.time()
            follow = (
                reader.chat(
                    [
                        {"role": "system", "content": sysmsg},
                        {"role": "user", "content": user.format(q=q.question, p=passages)},
                    ],
                    max_new_tokens=32,
                )
                .strip()
                .split("\n")[0]
            )
            t_llm += time.time() - t
            second = r.search([follow], 20)
            both = r.search([q.question + " " + follow], 20)
            f = [h.chunk_id for h in first]
            s = [h.chunk_id for h in second]
            b = [h.chunk_id for h in both]
            texts = {h.chunk_id: h.text for h in first + second + both}
            variants = {
                "question": f[:K],
                "rrf q2 f1": [c for c, _ in weighted_rrf([f, s], [2, 1])][:K],
                "rrf q1 f1": [c for c, _ in weighted_rrf([f, s], [1, 1])][:K],
                "rrf q2 qf1": [c for c, _ in weighted_rrf([f, b], [2, 1])][:K],
                "rrf q1 qf1": [c for c, _ in weighted_rrf([f, b], [1, 1])][:K],
                "slots q3+f2": (f[:3] + [c for c in s if c not in f[:3]])[:K],
                "slots q4+f1": (f[:4] + [c for c in s if c not in f[:4]])[:K],
                "slots q3+qf2": (f[:3] + [c for c in b if c not in f[:3]])[:K],
            }
            row = dict(id=q.id, question=q.question, follow=follow)
            for name, ids in variants.items():
                ev = [texts[c] for c in ids]
                row[name] = (recall_at_k(q.gold, ev), all_gold_at_k(q.gold, ev))
            rows.append(row)
            print(q.id, "|", follow, "|", row["question"], row["slots q3+f2"], flush=True)
    n = len(rows)
    print(f"{n} questions, reader {args.reader}, prompt {args.prompt}, {t_llm / n:.1f} s/question reading")
    means = mean_scores({name: [r[name] for r in rows] for name in rows[0] if name not in ("id", "question", "follow")}, K)
    print_table(means, K, header=None)
    write_results(args.out, "followup_study", args, questions=n, k=K, reader_seconds_per_question=t_llm / n,
                  variants=means, per_question=rows)


if __name__ == "__main__":
    main()

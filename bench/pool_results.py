"""Pool the rows of several ``memorag eval`` runs into one summary (one results JSON).

A held-out comparison is often made of runs with different haystacks (other indices, other
seeds), or of a run stopped after some of its haystacks: each run's rows are complete
per question, so pooling them gives the same per-question means a single run would. Each
input is a results JSON or the ``.partial.jsonl`` beside it; rows are rebuilt against
their own haystacks to add the clue measures (spans in the document, gold sentences
quoted) where a run was made before eval recorded them.

Usage: python bench/pool_results.py RUN1.partial.jsonl RUN2.json --methods hybrid,likelihood,memorag \
           --out docs/results/x.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memorag.config import DEFAULT_PLAN
from memorag.eval import datasets
from memorag.eval.runner import markdown_table, summarize, update_clue_measures
from memorag.models.registry import load_llm


def read_rows(path: Path) -> tuple[dict | None, list[dict]]:
    """(config or None, rows) of a results JSON or a .partial.jsonl."""
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
        return None, rows
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["config"], data["questions"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="results JSON files or .partial.jsonl files")
    ap.add_argument("--configs", nargs="*", default=[],
                    help="for each .partial.jsonl (in order), the eval command's arguments as one JSON object "
                         "(dataset, first_index, limit, questions_per_haystack, haystack_tokens, seed)")
    ap.add_argument("--methods", required=True)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    methods = args.methods.split(",")
    count = load_llm("default", n_ctx=512).count_tokens  # haystacks are sized as `memorag eval` sizes them
    pooled, sources = [], []
    partial_configs = iter(args.configs)
    for run in map(Path, args.runs):
        config, rows = read_rows(run)
        if config is None:
            config = json.loads(next(partial_configs))
        hays = datasets.build(config["dataset"], first_index=config["first_index"], limit=config["limit"],
                              per_haystack=config["questions_per_haystack"],
                              haystack_tokens=config["haystack_tokens"], seed=config["seed"], count_tokens=count)
        where = {q.id: (hay, q) for hay in hays for q in hay.questions}
        latest: dict[tuple[str, str], dict] = {}
        for row in rows:
            if row["method"] in methods:
                latest[(row["id"], row["method"])] = row
        for row in latest.values():
            update_clue_measures(row, *where[row["id"]], config.get("query_plan") or DEFAULT_PLAN)
            row.pop("config_key", None)
        kept = sorted(latest.values(), key=lambda r: (r["id"], r["method"]))
        done = {r["id"] for r in kept if all((r["id"], m) in latest for m in methods)}
        kept = [r for r in kept if r["id"] in done]  # a question counts only with every method
        pooled += kept
        sources.append({"run": str(run), "config": config, "questions": len(done)})
    retrieval_only = all(s["config"].get("retrieval_only", True) for s in sources)
    summary = summarize(pooled, methods, args.top_k, retrieval_only)
    Path(args.out).write_text(json.dumps({"sources": sources, "methods": summary, "questions": pooled},
                                         indent=1, ensure_ascii=False), encoding="utf-8")
    print(markdown_table(summary, args.top_k, retrieval_only))


if __name__ == "__main__":
    main()

"""Question by question, how two `bench/clue_study.py` runs on the same questions differ.

Usage: python bench/clue_study_diff.py BEFORE.json AFTER.json [--model SPEC] [--out FILE.json]

A clue study's summary gives shares over all questions; a change to how the memory quotes
moves some questions up and others down, and the shares hide how many. For each question of
both runs (matched by id, in the same order) this counts where AFTER quotes more or fewer
gold sentences than BEFORE, where the quotes alone retrieve more or less (`grounded`
recall@k, no judge), and how many questions got exactly the same spans. docs/evaluation.md
quotes these counts as "better / worse".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows_of(path: Path, model: str | None) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    models = data.get("models") or {}
    if not models:
        raise SystemExit(f"{path} has no models: not a clue study results file")
    if model is None:
        if len(models) > 1:
            raise SystemExit(f"{path} holds {', '.join(models)}: pick one with --model")
        model = next(iter(models))
    if model not in models:
        raise SystemExit(f"{path} has no model {model!r} (it has {', '.join(models)})")
    return models[model]["rows"]


def recall_key(row: dict) -> str:
    keys = [k for k in row["grounded"] if k.startswith("recall@")]
    if len(keys) != 1:
        raise SystemExit(f"question {row['id']}: no single recall@k under 'grounded'")
    return keys[0]


def compare(before: list[dict], after: list[dict]) -> dict:
    """The counts, over questions both runs asked (the same ids in the same order)."""
    if [r["id"] for r in before] != [r["id"] for r in after]:
        raise SystemExit("the two runs asked different questions (or in another order): compare runs of one "
                         "--first-index/--limit/--seed")
    out = {"questions": len(before), "same_spans": 0, "gold_quoted_better": 0, "gold_quoted_worse": 0,
           "grounded_recall_better": 0, "grounded_recall_worse": 0,
           "gold_quoted_before": 0, "gold_quoted_after": 0, "gold_sentences": 0}
    for b, a in zip(before, after, strict=True):
        out["same_spans"] += b["spans"] == a["spans"]
        qb, qa = sum(b["gold_quoted"]), sum(a["gold_quoted"])
        out["gold_quoted_before"] += qb
        out["gold_quoted_after"] += qa
        out["gold_sentences"] += len(b["gold_quoted"])
        out["gold_quoted_better"] += qa > qb
        out["gold_quoted_worse"] += qa < qb
        key = recall_key(b)
        rb, ra = b["grounded"][key], a["grounded"][key]
        out["grounded_recall_better"] += ra > rb
        out["grounded_recall_worse"] += ra < rb
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--model", help="the model spec to compare when a file holds more than one")
    ap.add_argument("--out", type=Path, help="write the counts as JSON here too")
    args = ap.parse_args(argv)
    counts = compare(rows_of(args.before, args.model), rows_of(args.after, args.model))
    counts["before"], counts["after"] = str(args.before), str(args.after)
    text = json.dumps(counts, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

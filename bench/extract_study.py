"""What the memory holds of a long document: gold sentences in the extractive memory text.

At the default 8K window a 32K-token document is read as an extract (memorag.longmem,
``compression="extractive"``); a sentence left out of it is one the memory cannot quote or
attend to, whatever the model. This study builds the extract of HotpotQA haystacks (the
``memorag eval`` builder) the way the pipeline does, with the default memory model's
tokenizer and budget, under several sentence selections, and counts the questions'
supporting sentences (and whole gold paragraphs, and apart the sentences that open a paragraph
and the later ones) the extract holds. No model is run; it
takes seconds a haystack.

Selections: ``base`` (TF-IDF density with a bonus for names and numbers: the pipeline's
selection before the opening-sentence bonus and the dedup), ``dedup`` (a sentence seen before is not kept again), ``lead=B`` (a paragraph's first
sentence scores 1 + B times as much), and ``lead=B+dedup``.

Usage: python bench/extract_study.py [--first-index 0] [--limit 20] [--per-haystack 10]
    [--seed 0] [--tokens 32000] [--selections base,dedup,lead=1,lead=1+dedup] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_results, beside this script
from study_results import add_question_set_args  # noqa: E402


def _selection(name: str) -> dict:
    """``base``, ``dedup``, ``lead=B`` or ``lead=B+dedup`` as extractive_memory's keywords."""
    kw: dict = {"lead_bonus": 0.0, "dedup": False}  # base: TF-IDF alone, as before the bonus and the dedup
    for part in name.split("+"):
        if part == "dedup":
            kw["dedup"] = True
        elif part.startswith("lead="):
            kw["lead_bonus"] = float(part[5:])
        elif part != "base":
            raise SystemExit(f"unknown selection part {part!r}: base, dedup or lead=B")
    return kw


def _norm(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_set_args(ap)
    ap.add_argument("--tokens", type=int, default=32000, help="haystack tokens")
    ap.add_argument("--selections", default="base,dedup,lead=1,lead=1+dedup",
                    help="lead=1+dedup is the pipeline's selection now (memorag.longmem.LEAD_BONUS)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from memorag.eval.datasets import hotpotqa_haystacks
    from memorag.longmem import extract_sentences, extractive_memory, memory_budget
    from memorag.models.registry import DEFAULT_MEMORY_WINDOW, load_llm

    # the default memory's tokenizer and window: the budget the pipeline gives the extract
    llm = load_llm("default", n_ctx=DEFAULT_MEMORY_WINDOW)
    selections = [s for s in args.selections.split(",") if s]
    kwargs = {s: _selection(s) for s in selections}
    haystacks = hotpotqa_haystacks(args.first_index, args.limit, args.per_haystack, args.tokens, args.seed,
                                   count_tokens=llm.count_tokens)
    rows: dict[str, dict] = {s: {"supporting_sentences": 0, "in_memory": 0, "gold_paragraphs": 0,
                                 "paragraphs_wholly_in_memory": 0, "memory_tokens": [],
                                 "opening_sentences": 0, "opening_in_memory": 0} for s in selections}
    for h in haystacks:
        total = llm.count_tokens(h.text)
        # which sentences open a paragraph (the first of a line of the haystack: its lines are
        # a title and then the paragraph's text)
        opening = {_norm(sents[0]) for line in h.text.split("\n") if (sents := extract_sentences(line))}
        budget = memory_budget(llm, total, None)
        for s in selections:
            text, stats = extractive_memory(llm, h.text, budget, "en", **kwargs[s])
            memory = _norm(text)
            row = rows[s]
            row["memory_tokens"].append(stats.memory_tokens)
            for q in h.questions:
                for para in q.gold:
                    held = [_norm(sent) in memory for sent in para if sent.strip()]
                    opens = [_norm(sent) in opening for sent in para if sent.strip()]
                    row["opening_sentences"] += sum(opens)
                    row["opening_in_memory"] += sum(h_ and o for h_, o in zip(held, opens))
                    row["supporting_sentences"] += len(held)
                    row["in_memory"] += sum(held)
                    row["gold_paragraphs"] += 1
                    row["paragraphs_wholly_in_memory"] += bool(held) and all(held)
        print(f"{h.id}: {total} tokens", file=sys.stderr)
    for row in rows.values():
        row["share_in_memory"] = round(row["in_memory"] / max(1, row["supporting_sentences"]), 4)
        later = row["supporting_sentences"] - row["opening_sentences"]
        row["opening_share_in_memory"] = round(row["opening_in_memory"] / max(1, row["opening_sentences"]), 4)
        row["later_share_in_memory"] = round((row["in_memory"] - row["opening_in_memory"]) / max(1, later), 4)
    print("| selection | gold sentences in memory | opening / later sentences | gold paragraphs whole | "
          "memory tokens |\n|---|---|---|---|---|")
    for s, row in rows.items():
        print(f"| {s} | {row['in_memory']} of {row['supporting_sentences']} ({row['share_in_memory']:.3f}) | "
              f"{row['opening_share_in_memory']:.3f} / {row['later_share_in_memory']:.3f} | "
              f"{row['paragraphs_wholly_in_memory']} of {row['gold_paragraphs']} | "
              f"{', '.join(map(str, row['memory_tokens']))} |")
    if args.out:
        result = {"command": "python bench/extract_study.py " + " ".join(sys.argv[1:]),
                  "questions": sum(len(h.questions) for h in haystacks), "haystacks": [h.id for h in haystacks],
                  "memory_model": llm.describe(), "selections": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

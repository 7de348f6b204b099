"""The memory's clues with a decoding shortcut off and on: seconds per question for the
default memory's clues on the demo's questions about the bundled sample, and the clue lines
of both modes.

``--lever restart`` (``memorag.memory.STOP_ON_RESTART``): decoding ends once a line begins a
line already kept (five words the same), where before the repeat was decoded to its end and
then dropped; the lines kept should not change.

``--lever complete`` (``memorag.quoting.COMPLETE_UNIQUE``): a quote is closed as soon as it
names one place in the document and its sentence is finished from the document, where
before the model decoded every word; the first line should not change, and the later ones
may (the model reads its shortened line before writing the next).

``--lever quote-rules`` (``memorag.quoting.QUOTE_VIABLE_ONLY``, ``QUOTE_DISTINCT``,
``QUOTE_LOOKAHEAD``, ``QUOTE_FOLLOW_DOCUMENT``): off is the greedy quoting before them (all
off, look-ahead 0), on the defaults; the lines may change (that is their purpose), the
seconds are their cost.

``--lever follow`` (``memorag.quoting.QUOTE_FOLLOW_DOCUMENT``): a short line none of the
model's best tokens continues goes on as the document does, where before the reply ended
there; the lines may change (a reply that ended goes on).

The modes run in the order off, on, on, off over all questions (each a full pass), so a slow
spell of the machine hits both; consecutive calls are different questions, so neither mode
finds its task cached.

Usage: python bench/bench_clue_stop.py [--lever restart|complete|quote-rules|follow] [--questions 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_latency import cpu_model  # noqa: E402
from test_demo_questions import QUESTIONS  # noqa: E402  (the demo's known-answer questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lever", choices=("restart", "complete", "quote-rules", "follow"), default="restart")
    ap.add_argument("--lookahead", type=int, help="with --lever quote-rules: the look-ahead width when on "
                    "(default: memorag.quoting.QUOTE_LOOKAHEAD)")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import memorag.memory as memory_module
    import memorag.quoting as quoting_module
    from memorag import MemoRAG

    # each lever: (module, name, value off, value on)
    levers = {"restart": [(memory_module, "STOP_ON_RESTART", False, True)],
              "complete": [(quoting_module, "COMPLETE_UNIQUE", False, True)],
              "quote-rules": [(quoting_module, "QUOTE_VIABLE_ONLY", False, True),
                              (quoting_module, "QUOTE_DISTINCT", False, True),
                              (quoting_module, "QUOTE_LOOKAHEAD", 0,
                                                       args.lookahead or quoting_module.QUOTE_LOOKAHEAD or 8),
                              (quoting_module, "QUOTE_FOLLOW_DOCUMENT", False, True)],
              "follow": [(quoting_module, "QUOTE_FOLLOW_DOCUMENT", False, True)]}[args.lever]
    switch = ", ".join(f"{m.__name__}.{name}" for m, name, _, _ in levers)
    questions = [q for q, _ in QUESTIONS[: args.questions]]
    pipeline = MemoRAG()
    pipeline.memorize(files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8"))
    memory = pipeline.memory
    defaults = [getattr(m, name) for m, name, _, _ in levers]
    seconds: dict[str, list[list[float]]] = {"off": [], "on": []}
    lines: dict[str, list[list[str]]] = {}
    for mode in ("off", "on", "on", "off"):
        for m, name, off, on in levers:
            setattr(m, name, on if mode == "on" else off)
        run_seconds, run_lines = [], []
        for q in questions:
            t = time.perf_counter()
            clues = memory.clues(q, kinds=("spans",))  # what plan recall, the default, asks for
            run_seconds.append(round(time.perf_counter() - t, 3))
            run_lines.append(clues.spans)
        seconds[mode].append(run_seconds)
        lines.setdefault(mode, run_lines)
        print(f"{mode}: {statistics.mean(run_seconds):.3f} s a question", flush=True)
    for (m, name, _, _), value in zip(levers, defaults):
        setattr(m, name, value)
    per_mode = {mode: round(statistics.mean(s for run in runs for s in run), 3) for mode, runs in seconds.items()}
    differ = [q for q, a, b in zip(questions, lines["off"], lines["on"]) if a != b]
    result = {"benchmark": "bench_clue_stop", "command": "python bench/bench_clue_stop.py " + " ".join(sys.argv[1:]),
              "what": "seconds per question for the default memory's clues (quoted recall spans, as plan recall "
                      f"asks) on the demo's questions, without (off) and with (on) {switch}; "
                      "modes run off, on, on, off",
              "lever": args.lever,
              "cpu_model": cpu_model(),
              "memory_model": pipeline.memory.llm.describe() if hasattr(pipeline.memory.llm, "describe") else None,
              "questions": questions, "seconds": seconds, "mean_seconds_per_question": per_mode,
              "ratio_on_to_off": round(per_mode["on"] / per_mode["off"], 3),
              "lines": lines, "questions_whose_lines_differ": differ}
    print(json.dumps({k: result[k] for k in ("mean_seconds_per_question", "ratio_on_to_off",
                                             "questions_whose_lines_differ")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Would the generator's reading of every chunk at memorize time pay? (a measurement, not a feature)

The generator reads its evidence in document order, so a question's prompt starts with the
system prompt, the instruction and its first evidence chunk; each of those starts can be read
once, when the document is memorized, and restored at question time (as the judge's passages
are, memorag.judge_states). This bench measures it on the bundled sample before building it:
plain RAG and the default plan on the demo's questions, each mode starting with the generator's
store of answered prompts empty, first as shipped, then with every chunk's prompt start read in
advance and offered beside that store (the store's own longest-prefix rule picks it up).

Usage: python bench/bench_evidence_states.py [--questions 10] [--out FILE.json]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from memorag.answering import AnswerPrompt, View
from memorag.llm import llamacpp
from memorag.retrieval import Hit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_query_latency import WARM_UP_QUESTION, cpu_model, memorized_sample  # noqa: E402
from test_demo_questions import QUESTIONS, correct  # noqa: E402


def shared(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def main() -> None:
    args, pipe, memorize_seconds = memorized_sample(__doc__)
    gen = pipe.generator
    if not isinstance(gen, llamacpp.LlamaCppLLM):
        raise SystemExit("this bench reads prompt states through the llama.cpp generator")
    pipe.ask(WARM_UP_QUESTION, task_type="rag", max_new_tokens=8)
    pipe.ask(WARM_UP_QUESTION, max_new_tokens=8)
    starts: list[tuple[list[int], bytes]] = []
    real_start = llamacpp.LlamaCppLLM._start_from_answered

    def start_with_read_ahead(self: llamacpp.LlamaCppLLM, ids: list[int]) -> None:
        # offer the read-ahead start sharing the most with ``ids`` to the store, when it
        # shares more than the store's best; the store's own rule then decides
        if self is gen and starts:
            tokens, state = max(starts, key=lambda s: shared(s[0], ids))
            found = self.answer_cache.longest_prefix(ids)
            if found is None or shared(tokens, ids) > found[0]:
                self.answer_cache.put(tokens, state)
        real_start(self, ids)

    llamacpp.LlamaCppLLM._start_from_answered = start_with_read_ahead  # type: ignore[method-assign]
    runs = {}
    for setting in ("shipped", "read ahead"):
        read = {}
        if setting == "read ahead":
            t = time.perf_counter()
            view = View(pipe.retriever, None, pipe.retriever.state.language)
            for i, chunk in enumerate(pipe.retriever.state.chunks):
                messages = AnswerPrompt().messages(view, "memorag", "", [chunk.text], [Hit(i, 0.0, chunk.text)])
                ids = gen._prompt_ids(gen._render_marked(messages)[0])[:-1]
                gen._llm.eval(ids[gen._keep_shared_head(ids):])
                state = gen._seq_state(1 << 40)
                assert state is not None
                starts.append((ids, state))
            read = {"chunks": len(starts), "seconds": round(time.perf_counter() - t, 3),
                    "bytes": sum(len(s) for _, s in starts)}
        modes = {}
        for task in ("rag", "memorag"):
            gen.forget_prompts()
            seconds, generation, answers = [], [], []
            for q, _ in QUESTIONS[: args.questions]:
                t = time.perf_counter()
                ans = pipe.ask(q, task_type=task, max_new_tokens=64)
                seconds.append(round(time.perf_counter() - t, 3))
                generation.append(ans.timings["generation"])
                answers.append(ans.answer)
            right = sum(correct(a, key) for a, (_, key) in zip(answers, QUESTIONS))
            modes[task] = {"seconds_per_question": round(sum(seconds) / len(seconds), 3),
                           "generation_per_question": round(sum(generation) / len(generation), 3),
                           "answers_right": right, "seconds": seconds, "answers": answers}
            print(setting, task, modes[task]["seconds_per_question"], f"{right} right")
        ratio = round(modes["memorag"]["seconds_per_question"] / modes["rag"]["seconds_per_question"], 3)
        print(setting, "ratio", ratio)
        runs[setting] = {"read_ahead": read, "modes": modes, "ratio_memorag_to_plain": ratio}
    if args.out:
        args.out.write_text(json.dumps({
            "benchmark": "bench_evidence_states", "command": "python bench/bench_evidence_states.py "
            + " ".join(sys.argv[1:]), "cpu_model": cpu_model(), "memorize_seconds": round(memorize_seconds, 3),
            "generator": gen.describe(), "runs": runs}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Core benchmark (issue: read once, ask many times) on the default memory model.

Prints, from one run on this machine:
  * our memorize throughput / raw llama-cpp prefill throughput (same model, same tokens,
    same context size, same threads) -- target >= 0.9
  * load_seconds / memorize_seconds for the memory state            -- target <= 1/100
  * whether greedy clues after load equal those right after memorize

Usage: python bench/bench_core.py [--tokens 16000] [--model default] [--no-flash-attn]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from memorag.llm.llamacpp import LlamaCppLLM
from memorag.memory import Memory
from memorag.models.registry import resolve_gguf
from memorag.prompts import prompts_for


def make_document(llm: LlamaCppLLM, target_tokens: int) -> str:
    """Real prose of about ``target_tokens`` tokens: the bundled Austen sample, repeated with part labels."""
    sample = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    parts, total, i = [], 0, 0
    per = llm.count_tokens(sample)
    while total + per // 4 < target_tokens:
        i += 1
        parts.append(f"Part {i}.\n\n{sample}")
        total += per
    text = "\n\n".join(parts)
    # Trim to the target by characters (close enough; exact counts are printed).
    ratio = target_tokens / max(1, llm.count_tokens(text))
    return text[: int(len(text) * min(1.0, ratio))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16000)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-flash-attn", dest="flash_attn", action="store_false",
                    help="turn llama.cpp flash attention off (it is on by default)")
    ap.add_argument("--json", action="store_true", help="print one JSON line too")
    args = ap.parse_args()

    import llama_cpp

    path = resolve_gguf(args.model)
    n_ctx = args.tokens + 1024
    threads = max(1, os.cpu_count() or 1)  # both runs get the same threads
    ours = LlamaCppLLM(path, spec=args.model, n_ctx=n_ctx, flash_attn=args.flash_attn, n_threads=threads)
    doc = make_document(ours, args.tokens)
    memory = Memory(llm=ours)
    prefix_ids, _ = ours.prefix_ids_for(prompts_for(memory.language_for(doc)).memory_prefix(doc))
    print(f"model {path.name}, document {len(prefix_ids)} tokens, n_ctx {n_ctx}, flash_attn {args.flash_attn}")

    # Raw llama-cpp-python: a fresh context evaluating exactly the same token ids.
    raw = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=ours.n_batch, n_ubatch=ours.n_batch,
                          n_threads=threads, n_threads_batch=threads,
                          flash_attn=args.flash_attn, verbose=False)
    t = time.perf_counter()
    raw.eval(prefix_ids)
    raw_s = time.perf_counter() - t
    del raw

    t = time.perf_counter()
    stats = memory.memorize(doc)
    ours_s = time.perf_counter() - t
    question = "Who is the new tenant of Netherfield Park?"
    clues_before = memory.clues(question)

    with tempfile.TemporaryDirectory() as tmp:
        memory.save(tmp)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        fresh = Memory(llm=ours.twin(n_ctx=n_ctx))
        t = time.perf_counter()
        fresh.load(tmp)
        load_s = time.perf_counter() - t
        clues_after = fresh.clues(question)

    n = stats["memory_tokens"]
    result = {
        "tokens": n,
        "raw_prefill_tokens_per_s": round(n / raw_s, 1),
        "memorize_tokens_per_s": round(n / ours_s, 1),
        "throughput_ratio_ours_over_raw": round(raw_s / ours_s, 3),
        "memorize_seconds": round(ours_s, 2),
        "load_seconds": round(load_s, 3),
        "load_over_memorize": round(load_s / ours_s, 5),
        "speedup_load_vs_memorize": round(ours_s / load_s, 1),
        "state_mb": round(size / 1e6, 1),
        "clues_identical_after_load": (clues_before.spans, clues_before.questions)
        == (clues_after.spans, clues_after.questions),
    }
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

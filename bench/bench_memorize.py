"""Memorizing one long document with the default pipeline, per memory window, same run.

For each memory window (the memory model's context, ``MemoRAG(n_ctx=W)``), a fresh default
pipeline memorizes the same document and the wall time is split into what the user waits
for: the index (embedding, overlapped with the memory pass by default), the compression
(only when the document is longer than the window) and the memory model's reading. Beside
each, llama.cpp's raw prefill of the same number of tokens of the same model in a window of
the same size (a fresh ``llama_cpp.Llama``, same threads, batch and flash attention) is the
physical limit for that reading on this machine.

The document is a HotpotQA distractor haystack (the eval data of ``setup.sh --dev``; the
same builder as ``memorag eval hotpotqa``) of ``--tokens`` tokens, or with ``--source
sample`` the bundled sample repeated with part labels.

Usage: python bench/bench_memorize.py [--windows 8192,32768] [--tokens 32000] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.resources import files
from pathlib import Path


def hotpotqa_document(tokens: int, first_index: int, seed: int) -> str:
    from memorag.eval.datasets import hotpotqa_haystacks

    return hotpotqa_haystacks(first_index=first_index, limit=10, per_haystack=10, haystack_tokens=tokens,
                              seed=seed)[0].text


def sample_document(tokens: int) -> str:
    sample = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    parts, i = [], 0
    while len(" ".join(parts).split()) * 1.3 < tokens:  # ~1.3 Qwen tokens per English word
        i += 1
        parts.append(f"Part {i}.\n\n{sample}")
    words = "\n\n".join(parts).split(" ")
    return " ".join(words[: int(tokens / 1.3)])


def raw_prefill_seconds(model_path: str, ids: list[int], n_ctx: int, n_batch: int, flash_attn: bool) -> float:
    """llama.cpp's own prefill of ``ids`` in a fresh context: the floor for the memory's reading."""
    import llama_cpp

    threads = max(1, os.cpu_count() or 1)
    raw = llama_cpp.Llama(model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                          n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
    try:
        t = time.perf_counter()
        raw.eval(ids)
        return time.perf_counter() - t
    finally:
        raw.close()


def run(windows: list[int], document: str, source: str) -> dict:
    from memorag import MemoRAG
    from memorag.prompts import prompts_for

    rows = []
    for window in windows:
        pipe = MemoRAG(n_ctx=window)
        llm = pipe.memory.llm
        t = time.perf_counter()
        stats = pipe.memorize(document)
        wall = time.perf_counter() - t
        n_read = int(stats["memory_tokens"])
        # The memory prefix's token ids as the backend builds them (bench/bench_core.py does the
        # same): the raw prefill reads as many tokens of it as the memory read.
        prefix = prompts_for(pipe.memory.language_for(document)).memory_prefix(document)
        ids = llm.prefix_ids_for(prefix)[0][:n_read]
        raw = raw_prefill_seconds(str(llm.model_path), ids, llm.context_window, llm.n_batch, llm.flash_attn)
        compression = stats.get("compression") or {}
        row = {"memory_window": llm.context_window, "document_tokens": stats.get("document_tokens", n_read),
               "memory_tokens": n_read, "memorize_wall_seconds": round(wall, 2),
               "memory_seconds": stats["memory_seconds"], "index_seconds": stats["index_seconds"],
               "overlap_indexing": stats["overlap_indexing"],
               "compression_method": compression.get("method"),
               "memory_tokens_per_second": stats["memory_tokens_per_second"],
               "raw_prefill_seconds": round(raw, 2),
               "raw_prefill_tokens_per_second": round(n_read / raw, 1),
               "memory_vs_raw": round(raw / stats["memory_seconds"], 3),
               # the judge's passage states (memorag.judge_states): read, or why not, and the seconds
               **{k: v for k, v in stats.items() if k.startswith("judge_states")}}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        del pipe
    return {"benchmark": "bench_memorize", "source": source, "rows": rows, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", default="8192,32768", help="comma-separated memory windows (tokens)")
    ap.add_argument("--tokens", type=int, default=32000, help="document length in tokens (approximate)")
    ap.add_argument("--source", choices=["hotpotqa", "sample"], default="hotpotqa")
    ap.add_argument("--first-index", type=int, default=3000, help="HotpotQA index of the haystack's first question")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",") if w.strip()]
    if args.source == "hotpotqa":
        document = hotpotqa_document(args.tokens, args.first_index, args.seed)
    else:
        document = sample_document(args.tokens)
    result = run(windows, document, args.source)
    result["command"] = "python bench/bench_memorize.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""Three llama.cpp settings the latency issue named as levers, measured on the default models
in one run, nothing else running:

1. The sampling loop. The generator (1.5B) decodes through llama-cpp-python's
   ``create_completion`` (a Python loop around llama.cpp); a bare loop of ``llama_decode``
   and a numpy argmax over the logits is the floor any C sampler chain could reach.
   Milliseconds per token after the same ~1,500-token prompt.
2. The KV cache type for the memory (0.5B): f16 (the default) against q8_0.
3. Flash attention for the memory: on (the default) against off.

For 2 and 3: the rate of reading the bundled sample (~4,200 tokens, the memory pass), one
decode step after it, and a 45-token batch after it (a clue task's size: what every
question's clues begin with).

Usage: python bench/bench_llama_knobs.py [--reps 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_latency import cpu_model  # noqa: E402

THREADS = max(1, os.cpu_count() or 1)  # as memorag runs its models (llama-cpp-python's own default is half)


def greedy_steps(llm, first: int, pos: int, n: int) -> list[int]:
    """``n`` greedy decode steps from token ``first`` at position ``pos``: llama_decode and argmax."""
    batch, n_vocab, tok, out = llm._batch, llm.n_vocab(), first, []
    for _ in range(n):
        batch.set_batch(batch=[tok], n_past=pos, logits_all=False)
        llm._ctx.decode(batch)
        tok = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(0), shape=(n_vocab,))))
        out.append(tok)
        pos += 1
    return out


def sampling_loop(path: Path, text: str, reps: int, n: int = 40) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=8192, n_batch=512, n_ubatch=512, n_threads=THREADS,
                          n_threads_batch=THREADS, flash_attn=True, verbose=False)
    ids = llm.tokenize(("Read this and go on with the story.\n" + text).encode(), add_bos=False)[:1500]
    python_ms, bare_ms = [], []
    for _ in range(reps):
        llm.reset()
        llm._ctx.kv_cache_clear()
        times = []
        t = time.perf_counter()
        for _chunk in llm.create_completion(prompt=ids, max_tokens=n, temperature=0.0, stream=True):
            times.append(time.perf_counter() - t)
        python_ms.append(1000 * (times[-1] - times[0]) / (len(times) - 1))
        # the prompt is in the cache: drop its last token and decode from there
        llm._ctx.kv_cache_seq_rm(-1, len(ids) - 1, -1)
        t = time.perf_counter()
        greedy_steps(llm, ids[-1], len(ids) - 1, n)
        bare_ms.append(1000 * (time.perf_counter() - t) / n)
    return {"prompt_tokens": len(ids), "tokens": n, "create_completion_ms_per_token": [round(x, 1) for x in python_ms],
            "bare_loop_ms_per_token": [round(x, 1) for x in bare_ms],
            "ratio_python_to_bare": round(min(python_ms) / min(bare_ms), 3)}


def memory_settings(path: Path, text: str, reps: int) -> list[dict]:
    import llama_cpp

    rows = []
    settings = [("f16 KV, flash attention on (default)", True, None),
                ("q8_0 KV, flash attention on", True, llama_cpp.GGML_TYPE_Q8_0),
                ("f16 KV, flash attention off", False, None)]
    for name, flash, kv_type in settings:
        kv = {"type_k": kv_type, "type_v": kv_type} if kv_type is not None else {}
        llm = llama_cpp.Llama(str(path), n_ctx=8192, n_batch=512, n_ubatch=512, n_threads=THREADS,
                              n_threads_batch=THREADS, flash_attn=flash, verbose=False, **kv)
        ids = llm.tokenize(text.encode(), add_bos=False)
        ids = ids[: min(len(ids) - 1, 4200)]
        read, step, task = [], [], []
        for _ in range(reps):
            llm.reset()
            llm._ctx.kv_cache_clear()
            t = time.perf_counter()
            llm.eval(ids)
            read.append(len(ids) / (time.perf_counter() - t))
            t = time.perf_counter()
            greedy_steps(llm, ids[-1], len(ids), 20)
            step.append(1000 * (time.perf_counter() - t) / 20)
            llm._ctx.kv_cache_seq_rm(-1, len(ids), -1)
            batch = llm._batch
            batch.set_batch(batch=ids[:45], n_past=len(ids), logits_all=False)
            t = time.perf_counter()
            llm._ctx.decode(batch)
            task.append(1000 * (time.perf_counter() - t))
        rows.append({"setting": name, "context_tokens": len(ids), "read_tokens_per_second": round(max(read), 1),
                     "decode_ms_per_token_after": round(min(step), 1), "task_45_tokens_ms": round(min(task))})
        print(json.dumps(rows[-1]), flush=True)
        del llm
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from memorag.models.registry import DEFAULT_GENERATOR, resolve_gguf

    text = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")
    generator, memory = resolve_gguf(DEFAULT_GENERATOR), resolve_gguf("default")
    loop = sampling_loop(generator, text, args.reps)
    print(json.dumps(loop), flush=True)
    rows = memory_settings(memory, text, args.reps)
    result = {"benchmark": "bench_llama_knobs", "command": "python bench/bench_llama_knobs.py " + " ".join(sys.argv[1:]),
              "cpu_model": cpu_model(), "threads": THREADS, "generator": generator.name, "memory_model": memory.name,
              "sampling_loop": loop, "memory_settings": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Does embedding the chunks while the memory model reads pay off on this machine?

Memorizes the same document twice in one process: indexing then memory (sequential), and
indexing in a thread beside the memory pass (overlapped). Prints each stage's seconds and
the ratio of wall-clock totals. The memory window is kept small (default 8192) so that the
two stages take comparable time, which is where overlap matters most.

Usage: python bench/bench_overlap.py [--tokens 60000] [--n-ctx 8192]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_long import make_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=60000)
    ap.add_argument("--n-ctx", type=int, default=8192)
    args = ap.parse_args()

    from memorag import MemoRAG

    text = make_text(args.tokens)
    pipe = MemoRAG(n_ctx=args.n_ctx)
    rows = {}
    for mode in (False, True, False):  # sequential twice: the first run warms caches
        pipe.overlap_indexing = mode
        t = time.perf_counter()
        stats = pipe.memorize(text, progress=False)
        rows["overlapped" if mode else "sequential"] = {
            "total_seconds": round(time.perf_counter() - t, 1), "index_seconds": stats["index_seconds"],
            "memory_seconds": stats["memory_seconds"], "document_tokens": stats.get("document_tokens")}
    print(json.dumps(rows, indent=1))
    seq, ovl = rows["sequential"], rows["overlapped"]
    print(f"overlapped / sequential wall time: {ovl['total_seconds'] / seq['total_seconds']:.2f} "
          f"(index {seq['index_seconds']} s + memory {seq['memory_seconds']} s sequential)")


if __name__ == "__main__":
    main()

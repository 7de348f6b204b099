"""Long-document benchmark: MemoRAGLite (compressed memory) at ~10K, ~100K and (opt-in) ~1M tokens.

For each size, in a fresh subprocess (so peak RSS is per run): memorize seconds, document
tokens/s, peak RSS, size on disk, and seconds to load the saved state; then the ratio of
tokens/s between the largest and the smallest run (near-linear cost => ratio near 1).

Text: Jane Austen's novels from Debian's r-cran-janeaustenr (read with Rscript) when
installed (`bash scripts/setup.sh --bench-data`), else the bundled sample repeated.

Usage: python bench/bench_long.py [--sizes 10000,100000] [--million] [--compression extractive]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path


def corpus_text() -> str:
    if shutil.which("Rscript"):
        try:
            out = subprocess.run(
                ["Rscript", "-e", "library(janeaustenr); d <- austen_books(); writeLines(as.character(d$text))"],
                capture_output=True, text=True, timeout=120, check=True)
            lines = out.stdout.split("\n")
            # Re-flow the one-line-per-printed-line layout into paragraphs.
            return "\n\n".join(" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip())
        except (subprocess.SubprocessError, OSError):
            pass
    return files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")


def make_text(tokens: int) -> str:
    base = corpus_text()
    # ~1.3 tokens per word for English prose with the Qwen tokenizer.
    words_needed = int(tokens / 1.3)
    words = base.split(" ")
    out, n, i = [], 0, 0
    while n < words_needed:
        out.append(f"\n\n[Copy {i + 1}]\n\n" if i else "")
        chunk = words[: words_needed - n]
        out.append(" ".join(chunk))
        n += len(chunk)
        i += 1
    return "".join(out)


def run_one(tokens: int, compression: str) -> dict:
    from memorag.lite import MemoRAGLite
    from memorag.store import dir_size

    text = make_text(tokens)
    pipe = MemoRAGLite(compression=compression)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        stats = pipe.memorize(text, save_dir=Path(tmp) / "state", progress=False)
        seconds = time.perf_counter() - t
        doc_tokens = stats.get("document_tokens") or stats["memory_tokens"]
        t = time.perf_counter()
        pipe.load(Path(tmp) / "state")
        load_s = time.perf_counter() - t
        disk = dir_size(Path(tmp) / "state")
    return {"target_tokens": tokens, "document_tokens": doc_tokens, "memorize_seconds": round(seconds, 1),
            "tokens_per_second": round(doc_tokens / seconds, 1), "index_seconds": stats["index_seconds"],
            "memory_seconds": stats["memory_seconds"], "memory_tokens": stats["memory_tokens"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "disk_mb": round(disk / 1e6, 1), "load_seconds": round(load_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--million", action="store_true", help="also run ~1,000,000 tokens (about 10-20 minutes)")
    ap.add_argument("--compression", default="extractive", choices=["extractive", "gist"])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.compression)))
        return
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--compression", args.compression],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"\ntokens/s ratio largest/smallest: {rows[-1]['tokens_per_second'] / rows[0]['tokens_per_second']:.2f}")


if __name__ == "__main__":
    main()

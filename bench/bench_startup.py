"""Start-up: seconds to construct the default pipeline (``MemoRAG()``), the embedder loaded
beside the LLMs (``memorag.pipeline.PARALLEL_LOAD``, the default) against one model after
the other, each in a fresh Python process (a warm process would find the libraries imported).
The runs alternate, so a slow spell of the machine hits both ways.

Usage: python bench/bench_startup.py [--runs 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = """
import time
t = time.perf_counter()
import memorag.pipeline as p
p.PARALLEL_LOAD = {parallel}
p.MemoRAG()
print(round(time.perf_counter() - t, 3))
"""


def construct_seconds(parallel: bool) -> float:
    """Seconds from the first memorag import to a constructed default pipeline, in a new process."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(parallel=parallel)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    construct_seconds(True)  # untimed: the page cache holds the model files from here on
    seconds: dict[str, list[float]] = {"sequential": [], "parallel": []}
    for _ in range(args.runs):
        for mode in ("sequential", "parallel"):
            seconds[mode].append(construct_seconds(mode == "parallel"))
            print(f"{mode}: {seconds[mode][-1]} s", flush=True)
    medians = {mode: statistics.median(v) for mode, v in seconds.items()}
    result = {"benchmark": "bench_startup", "command": "python bench/bench_startup.py " + " ".join(sys.argv[1:]),
              "what": "seconds from importing memorag to a constructed MemoRAG() with the default models, "
                      "each in a fresh process, the modes alternating",
              "cpu_model": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                                 if line.startswith("model name")), platform.processor()),
              "seconds": seconds, "median_seconds": medians,
              "ratio_parallel_to_sequential": round(medians["parallel"] / medians["sequential"], 3)}
    print(json.dumps({k: result[k] for k in ("median_seconds", "ratio_parallel_to_sequential")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

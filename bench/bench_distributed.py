"""Throughput of a distributed memorize (memorag.distributed) with 1 and 2 Ray workers, same run.

One local Ray cluster is started (as many CPUs as the largest worker count); for each
worker count a fresh store memorizes the same N documents with ``add_on_ray`` and the wall
time is recorded, worker start (model loading) included, as a user of ``memorag add --ray``
waits for it. The result file gives documents per minute for each count and the ratio of
each count's throughput to the first one's.

Documents are distinct slices of the bundled sample (Pride and Prejudice, ch. 1-3) of about
``--tokens`` tokens each (~1.3 tokens per word for English prose with the Qwen tokenizer).

Models: the default ones unless ``--mem-model``/``--ret-model`` name others (spec strings,
e.g. ``scriptedspecs:llm`` with tests/ on PYTHONPATH to check the script on the fakes).
On one machine the workers share its cores (llama.cpp uses every core of its node), so the
ratio measured here bounds what a second worker adds on the same node; docs/scaling.md
says how to read it for N machines.

Usage: python bench/bench_distributed.py [--workers 1,2] [--docs 6] [--tokens 1500] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

SAMPLE = "data/sample_pride_and_prejudice_ch1-3.txt"
TOKENS_PER_WORD = 1.3


def make_corpus(folder: Path, n_docs: int, tokens: int) -> list[Path]:
    """``n_docs`` files of ~``tokens`` tokens: slices of the sample starting at different words."""
    words = files("memorag").joinpath(SAMPLE).read_text(encoding="utf-8").split()
    per_doc = max(1, int(tokens / TOKENS_PER_WORD))
    step = max(1, len(words) // max(1, n_docs))
    folder.mkdir(parents=True)
    out = []
    for i in range(n_docs):
        start = (i * step) % len(words)
        picked = [words[(start + j) % len(words)] for j in range(per_doc)]
        path = folder / f"doc{i:03d}.txt"
        path.write_text(f"Document {i}.\n\n" + " ".join(picked), encoding="utf-8")
        out.append(path)
    return out


def run(workers: list[int], n_docs: int, tokens: int, models: dict, address: str | None) -> dict:
    import ray

    from memorag.distributed import add_on_ray

    if address is None:
        ray.init(address="local", num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
            corpus = Path(tmp) / "corpus"
            make_corpus(corpus, n_docs, tokens)
            for w in workers:
                store = Path(tmp) / f"store-{w}"
                t0 = time.perf_counter()
                result = add_on_ray(store, [corpus], workers=w, **models)
                wall = time.perf_counter() - t0
                if result.failed:
                    raise SystemExit(f"{len(result.failed)} documents failed with {w} workers: {result.failed}")
                memorize = [s.get("total_seconds", 0.0) for s in result.stats.values()]
                rows.append({"workers": w, "documents": len(result.added), "wall_seconds": round(wall, 2),
                             "documents_per_minute": round(60 * len(result.added) / wall, 3),
                             "memorize_seconds_sum": round(sum(memorize), 2),
                             "memorize_seconds_max": round(max(memorize), 2),
                             "worker_processes": sorted({w_["pid"] for w_ in result.workers.values()}),
                             "hosts": sorted({w_["host"] for w_ in result.workers.values()})})
                print(json.dumps(rows[-1]), file=sys.stderr)
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
    finally:
        ray.shutdown()
    base = rows[0]["documents_per_minute"]
    for row in rows:
        row["throughput_ratio"] = round(row["documents_per_minute"] / base, 3)
    return {"benchmark": "bench_distributed", "documents": n_docs, "tokens_per_document": tokens,
            "models": models or "default", "ray_nodes": nodes, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, first is the baseline")
    parser.add_argument("--docs", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=1500, help="approximate tokens per document")
    parser.add_argument("--mem-model", default=None, help="memory model spec (default: memorag's default)")
    parser.add_argument("--ret-model", default=None, help="embedding model spec (default: memorag's default)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: a local one)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args()
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers must be comma-separated whole numbers; got {args.workers!r}")
    if not workers or min(workers) < 1 or args.docs < 1 or args.tokens < 1:
        parser.error("--workers, --docs and --tokens must be at least 1")
    models = {k: v for k, v in (("mem_model_name_or_path", args.mem_model),
                                ("ret_model_name_or_path", args.ret_model)) if v}
    report = run(workers, args.docs, args.tokens, models, args.address)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""Prefill and decode speed of each llama.cpp build variant setup can make, in one run.

Every wheel setup.sh built (one directory per version + flags under
~/.cache/memorag/wheels) is unpacked into a private directory, and a child process per
variant loads the default model and times a 4,000-token prefill and a 64-token greedy
decode (flash attention, all cores). Variants alternate, twice each, so drift of the
machine hits all of them alike. Build a second variant first, e.g.
`MEMORAG_LLAMA_VARIANT=avx2 bash scripts/setup.sh` (then rerun plain setup to switch back).

Usage: python bench/bench_build_variants.py [--tokens 4000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile

from memorag.models.packaged import cache_dir
from memorag.models.registry import resolve_gguf

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import llama_cpp
llm = llama_cpp.Llama(sys.argv[2], n_ctx=int(sys.argv[3]) + 256, n_batch=512, n_ubatch=512, flash_attn=True, verbose=False)
text = open(sys.argv[4], encoding="utf-8").read()
ids = llm.tokenize(text.encode())[: int(sys.argv[3])]
t0 = time.perf_counter(); llm.eval(ids); t1 = time.perf_counter()
n = 0
for _ in llm.generate(ids + llm.tokenize(b" The", add_bos=False), temp=0.0):  # reuses the cached prefix
    n += 1
    if n >= 64:
        break
t2 = time.perf_counter()
info = llama_cpp.llama_print_system_info()
print(json.dumps({"prefill_tok_s": len(ids) / (t1 - t0), "decode_tok_s": n / (t2 - t1),
                  "system_info": info.decode() if isinstance(info, bytes) else str(info)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    wheels = sorted((cache_dir() / "wheels").glob("llama-cpp-python-*/build.json"))
    if not wheels:
        sys.exit("no wheels built by setup.sh under " + str(cache_dir() / "wheels"))
    model = resolve_gguf("default")
    from importlib.resources import files

    sample = files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt")
    variants = []
    for build in wheels:
        record = json.loads(build.read_text())
        target = build.parent / "unpacked"
        if not target.exists():
            whl = next(build.parent.glob("*.whl"))
            zipfile.ZipFile(whl).extractall(target)
        variants.append((record["variant"], record, target))
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for _ in range(args.rounds):
        for name, _record, target in variants:
            out = subprocess.run([sys.executable, "-c", CHILD, str(target), str(model), str(args.tokens), str(sample)],
                                 capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"default model, {args.tokens}-token prefill, 64-token decode, flash attention, {args.rounds} rounds")
    print("| build | prefill tok/s | decode tok/s |\n|---|---|---|")
    for name, runs in results.items():
        pre = " / ".join(f"{r['prefill_tok_s']:.1f}" for r in runs)
        dec = " / ".join(f"{r['decode_tok_s']:.1f}" for r in runs)
        print(f"| {name} | {pre} | {dec} |")


if __name__ == "__main__":
    main()

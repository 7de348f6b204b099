"""Install-time checks of the llama.cpp binding: does it run on this CPU, and what was built.

``python -m memorag.doctor smoke`` evaluates a few hundred tokens of a GGUF model in a
*child process*. A binding compiled for instructions this CPU mishandles dies by a signal
(issue 8: a native build segfaults on Xeons with AMX); in a child that is one clear line
and a non-zero exit from setup, not a crash at the user's first question.

``python -m memorag.doctor info`` prints the instruction sets the binding was built with
(``llama_print_system_info``) and the build record setup left in the venv.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

# The child imports nothing of memorag, so that what it exercises is the binding alone.
_CHILD = r"""
import sys, time
import llama_cpp
path, n_tokens = sys.argv[1], int(sys.argv[2])
llm = llama_cpp.Llama(path, n_ctx=max(1024, n_tokens + 64), n_threads=None, flash_attn=True, verbose=False)
text = ("It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. ") * 64
tokens = llm.tokenize(text.encode())[:n_tokens]
t0 = time.perf_counter()
llm.eval(tokens)
t1 = time.perf_counter()
out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
t2 = time.perf_counter()
print(f"{len(tokens)} {t1 - t0:.3f} {t2 - t1:.3f} {out['choices'][0]['text']!r}")
"""

REBUILD_HINT = (
    "rebuild with a more conservative instruction set, e.g. "
    "`MEMORAG_LLAMA_VARIANT=avx2 bash scripts/setup.sh` (or avx, sse42)"
)


def build_record() -> dict | None:
    """The build record setup.sh copied into the venv, if any."""
    path = Path(sys.prefix) / "memorag-llama-build.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def system_info() -> str:
    """llama.cpp's own report of the instruction sets compiled into the binding."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def enabled_features(info: str) -> set[str]:
    """Feature names marked ``= 1`` in a system-info string (``AVX2 = 1 | ...``)."""
    features = set()
    for part in info.replace("\n", "|").split("|"):
        if "=" in part:
            name, _, value = part.partition("=")
            name = name.split(":")[-1].strip()
            if value.strip() == "1" and name:
                features.add(name)
    return features


def smoke(model: str = "default", n_tokens: int = 300, variant: str | None = None,
          timeout: float = 600.0) -> int:
    """Run the child check; print one line; return the exit code for setup."""
    from memorag.models.registry import resolve_gguf

    what = f"llama.cpp binding{f' ({variant} build)' if variant else ''}"
    path = resolve_gguf(model)
    if path is None:
        print(f"error: smoke check needs a GGUF model; {model!r} is not one", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(n_tokens)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"error: smoke check: the {what} did not finish {n_tokens} tokens in {timeout:.0f} s; "
              f"{REBUILD_HINT}", file=sys.stderr)
        return 1
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        print(f"error: smoke check: the {what} crashed ({name}) evaluating {n_tokens} tokens of "
              f"{path.name} on this CPU; {REBUILD_HINT}", file=sys.stderr)
        return 1
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"error: smoke check: the {what} failed (exit {proc.returncode}): {last}", file=sys.stderr)
        return 1
    try:
        n, prefill_s, _decode_s, _text = proc.stdout.strip().splitlines()[-1].split(" ", 3)
        rate = f", {int(n) / max(float(prefill_s), 1e-9):.0f} tok/s prefill"
    except ValueError:
        rate = ""
    print(f"== smoke check: {what} evaluated {n_tokens} tokens of {path.name} "
          f"in {time.perf_counter() - t0:.1f} s{rate}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memorag.doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_smoke = sub.add_parser("smoke", help="evaluate a few hundred tokens in a child process")
    p_smoke.add_argument("--model", default="default")
    p_smoke.add_argument("--tokens", type=int, default=300)
    p_smoke.add_argument("--variant", default=None, help="the build variant, for the message")
    sub.add_parser("info", help="print the binding's instruction sets and build record")
    args = parser.parse_args(argv)
    if args.command == "smoke":
        return smoke(args.model, args.tokens, args.variant)
    record = build_record()
    print(json.dumps(record) if record else "no build record (binding not installed by scripts/setup.sh)")
    print(system_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())

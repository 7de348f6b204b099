"""How long setup's llama-cpp-python compile takes with and without llama.cpp's common library.

llama-cpp-python forces llama.cpp's common library (and cpp-httplib) into its build; the
binding never loads either. setup.sh skips them (scripts/llama_skip_common.cmake). This
builds the wheel both ways from the same sdist, with the flags setup.sh chooses for this CPU,
one after the other, and records the seconds, the objects compiled and the libraries in each
wheel. Run it alone: the compile uses every core.

Usage: python bench/bench_llama_build.py [--version 0.3.36] [--sdist FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build_flags():
    spec = importlib.util.spec_from_file_location("llama_build_flags", ROOT / "scripts" / "llama_build_flags.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def objects_by_target(log: str) -> dict[str, int]:
    """Compiled objects per CMake target, from a verbose build log (``-o .../NAME.dir/...o``)."""
    found = re.findall(r"-o \S*?CMakeFiles/([\w.+-]+)\.dir/\S+\.o\b", log)
    return dict(sorted(Counter(found).items()))


def build(sdist: Path, cmake_args: str, out_dir: Path) -> dict:
    env = dict(os.environ, CMAKE_ARGS=cmake_args, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "-v",
                           str(sdist), "-w", str(out_dir)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the build failed ({cmake_args}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wheel = next(out_dir.glob("llama_cpp_python-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        libs = sorted({Path(n).name.split(".so")[0] for n in z.namelist() if n.startswith("llama_cpp/lib/")})
    objects = objects_by_target(done.stdout + done.stderr)
    return {"seconds": round(seconds, 1), "objects": sum(objects.values()), "objects_by_target": objects,
            "libraries": libs, "wheel_bytes": wheel.stat().st_size}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default="0.3.36")
    ap.add_argument("--sdist", type=Path, help="a downloaded llama-cpp-python sdist (default: fetched from PyPI)")
    ap.add_argument("--out", type=Path, default=Path("docs/results/llama_build_common.json"))
    args = ap.parse_args()
    flags = _build_flags()
    chosen = flags.choose(args.version)
    include = shlex.quote(f"-DCMAKE_PROJECT_INCLUDE={flags.SKIP_COMMON}")
    if include not in chosen["CMAKE_ARGS"].split():
        sys.exit("setup's flags no longer skip the common library; nothing to compare")
    as_shipped = " ".join(a for a in chosen["CMAKE_ARGS"].split() if a != include)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sdist = args.sdist
        if sdist is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                            f"llama-cpp-python=={args.version}", "-d", str(work)], check=True)
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        runs = {}
        for name, cmake_args in (("common (as llama-cpp-python builds it)", as_shipped),
                                 ("no common (setup.sh)", chosen["CMAKE_ARGS"])):
            print(f"== building: {name}", flush=True)
            (work / name).mkdir()
            runs[name] = build(sdist, cmake_args, work / name) | {"cmake_args": cmake_args}
            print(f"   {runs[name]['seconds']} s, {runs[name]['objects']} objects", flush=True)
    base, skip = runs.values()
    result = {
        "llama_cpp_python": args.version, "variant": chosen["VARIANT"], "cpu": _cpu_name(),
        "cores": os.cpu_count(), "builds": runs,
        "seconds_saved": round(base["seconds"] - skip["seconds"], 1),
        "ratio": round(skip["seconds"] / base["seconds"], 3),
        "command": " ".join(["python bench/bench_llama_build.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "builds"}, indent=1))


if __name__ == "__main__":
    main()

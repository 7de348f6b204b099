#!/usr/bin/env python3
"""Choose how llama-cpp-python is compiled for the CPU this machine will run it on.

Standard library only: setup.sh runs it with the system Python before the venv exists.

Why not the default build: llama.cpp's CMake build is *native* (-march=native), so it
compiles for every extension of the build CPU. On Intel Xeons with AMX that build
segfaults in the first decode (issue 8, llama-cpp-python 0.3.36), and CI machines without
AMX never notice. So we build with GGML_NATIVE=OFF and name each instruction set
explicitly, from this list of tiers:

  avx512  AVX2 + FMA + F16C + BMI2 + AVX-512 F/CD/VL/DQ/BW (+ VBMI, VNNI, BF16 where present)
  avx2    AVX2 + FMA + F16C + BMI2 (+ AVX-VNNI where present)
  avx     AVX (+ F16C where present): pre-2013 x86-64
  sse42   SSE 4.2 only

AMX is never enabled (the crash above). Measured on a Sapphire Rapids Xeon, 2 threads:
the avx512 tier prefills ~1.4x faster than avx2 (issue 8; docs/benchmarks.md), so the
fastest tier the CPU supports is chosen. The wheel is cached under a key made of the
llama-cpp-python version and these flags, so a wheel built with other flags (or for
another CPU) is never reused silently.

Every build also skips llama.cpp's common library, which llama-cpp-python forces on and the
binding never loads (scripts/llama_skip_common.cmake says how and why;
docs/results/llama_build_common.json measures the compile with and without it).

Usage: llama_build_flags.py VERSION  -> prints shell assignments VARIANT=... CMAKE_ARGS=... KEY=...
Environment: MEMORAG_LLAMA_VARIANT forces a tier (e.g. avx2 on a CPU that has AVX-512);
MEMORAG_LLAMA_CMAKE_ARGS appends extra CMake arguments (they become part of the key).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
from pathlib import Path

TIERS = ("avx512", "avx2", "avx", "sse42")

# cpuinfo flag -> CMake option, per tier. Required flags decide whether a tier fits;
# optional ones are switched on only where the CPU has them.
_REQUIRED = {
    "avx512": ("avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl",
               "avx512dq", "avx512bw"),
    "avx2": ("avx", "avx2", "fma", "f16c", "bmi2"),
    "avx": ("avx",),
    "sse42": ("sse4_2",),
}
_OPTIONAL = {
    "avx512": {"avx512vbmi": "GGML_AVX512_VBMI", "avx512_vnni": "GGML_AVX512_VNNI",
               "avx512_bf16": "GGML_AVX512_BF16"},
    "avx2": {"avx_vnni": "GGML_AVX_VNNI"},
    "avx": {"f16c": "GGML_F16C"},
    "sse42": {},
}
_BASE = {
    "avx512": {"GGML_SSE42": "ON", "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_FMA": "ON",
               "GGML_F16C": "ON", "GGML_BMI2": "ON", "GGML_AVX512": "ON"},
    "avx2": {"GGML_SSE42": "ON", "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_FMA": "ON",
             "GGML_F16C": "ON", "GGML_BMI2": "ON"},
    "avx": {"GGML_SSE42": "ON", "GGML_AVX": "ON", "GGML_AVX2": "OFF", "GGML_FMA": "OFF",
            "GGML_F16C": "OFF", "GGML_BMI2": "OFF"},
    "sse42": {"GGML_SSE42": "ON", "GGML_AVX": "OFF", "GGML_AVX2": "OFF", "GGML_FMA": "OFF",
              "GGML_F16C": "OFF", "GGML_BMI2": "OFF"},
}
# Always off: AMX crashes (issue 8); the options below are named so that no default of a
# future llama.cpp can switch them on behind our back.
_NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
SKIP_COMMON = Path(__file__).resolve().parent / "llama_skip_common.cmake"


def cpu_flags(cpuinfo_text: str | None = None) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            return set()
    for line in cpuinfo_text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def best_tier(flags: set[str]) -> str:
    for tier in TIERS:
        if all(f in flags for f in _REQUIRED[tier]):
            return tier
    return "sse42"


def cmake_options(tier: str, flags: set[str]) -> dict[str, str]:
    if tier not in TIERS:
        raise SystemExit(f"error: MEMORAG_LLAMA_VARIANT={tier!r} is not one of {', '.join(TIERS)}")
    options = {"LLAVA_BUILD": "OFF", "GGML_NATIVE": "OFF"}
    options.update(_BASE[tier])
    for flag, option in _OPTIONAL[tier].items():
        if flag in flags:
            options[option] = "ON"
    for option in _NEVER:
        options[option] = "OFF"
    return options


def choose(version: str, machine: str | None = None, cpuinfo_text: str | None = None,
           env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) if env is None else env
    machine = machine or platform.machine()
    extra = env.get("MEMORAG_LLAMA_CMAKE_ARGS", "").strip()
    if machine not in ("x86_64", "AMD64", "amd64"):
        # Other architectures: a portable (non-native) build of the baseline ISA.
        variant = "portable-" + machine.lower()
        args = ["-DLLAVA_BUILD=OFF", "-DGGML_NATIVE=OFF"]
    else:
        flags = cpu_flags(cpuinfo_text)
        variant = env.get("MEMORAG_LLAMA_VARIANT", "").strip() or best_tier(flags)
        if variant not in TIERS:
            raise SystemExit(f"error: MEMORAG_LLAMA_VARIANT={variant!r} is not one of "
                             f"{', '.join(TIERS)}")
        args = [f"-D{k}={v}" for k, v in cmake_options(variant, flags).items()]
    # The include file is named by its path, which differs between clones; the key names it
    # by its content, so clones on one machine share the cached wheel.
    args.append(shlex.quote(f"-DCMAKE_PROJECT_INCLUDE={SKIP_COMMON}"))  # scikit-build-core shlex-splits CMAKE_ARGS
    keyed = args[:-1] + [f"skip-common:{hashlib.sha256(SKIP_COMMON.read_bytes()).hexdigest()}"]
    if extra:
        args += shlex.split(extra)
        keyed += shlex.split(extra)
    cmake_args = " ".join(args)
    key = hashlib.sha256(f"{version}\n{' '.join(keyed)}".encode()).hexdigest()[:12]
    return {"VARIANT": variant, "CMAKE_ARGS": cmake_args, "KEY": key}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: llama_build_flags.py VERSION", file=sys.stderr)
        return 2
    for name, value in choose(argv[1]).items():
        print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

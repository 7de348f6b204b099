"""The llama.cpp binding setup builds: portable flags per CPU tier, never AMX, and a smoke
check that turns a crashing binding into one clear line (issue 8)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llama_build_flags", ROOT / "scripts" / "llama_build_flags.py")
flags_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flags_mod)

SAPPHIRE_RAPIDS = ("flags : fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi2 avx2 avx512f avx512dq avx512cd "
                   "avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8")
HASWELL = "flags : fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi2 avx2"
SANDY_BRIDGE = "flags : fpu sse sse2 ssse3 sse4_1 sse4_2 avx"
OLD = "flags : fpu sse sse2 ssse3 sse4_1 sse4_2"


def _opts(cmake_args: str) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in cmake_args.split())


@pytest.mark.unit
@pytest.mark.parametrize("cpuinfo,tier", [(SAPPHIRE_RAPIDS, "avx512"), (HASWELL, "avx2"),
                                          (SANDY_BRIDGE, "avx"), (OLD, "sse42")])
def test_tier_follows_the_cpu_and_never_enables_amx_or_native(cpuinfo, tier):
    chosen = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=cpuinfo, env={})
    opts = _opts(chosen["CMAKE_ARGS"])
    assert chosen["VARIANT"] == tier
    assert opts["GGML_NATIVE"] == "OFF"
    assert all(opts[o] == "OFF" for o in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))
    assert (opts.get("GGML_AVX512") == "ON") == (tier == "avx512")
    assert (opts.get("GGML_AVX2") == "ON") == (tier in ("avx512", "avx2"))


@pytest.mark.unit
def test_optional_extensions_only_where_the_cpu_has_them():
    no_vbmi = SAPPHIRE_RAPIDS.replace(" avx512vbmi", "")
    opts = _opts(flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=no_vbmi, env={})["CMAKE_ARGS"])
    assert "GGML_AVX512_VBMI" not in opts and opts["GGML_AVX512_VNNI"] == "ON"


@pytest.mark.unit
def test_cache_key_changes_with_flags_version_and_override():
    a = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=SAPPHIRE_RAPIDS, env={})
    forced = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=SAPPHIRE_RAPIDS,
                              env={"MEMORAG_LLAMA_VARIANT": "avx2"})
    extra = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=SAPPHIRE_RAPIDS,
                             env={"MEMORAG_LLAMA_CMAKE_ARGS": "-DGGML_OPENMP=OFF"})
    other_version = flags_mod.choose("0.3.37", machine="x86_64", cpuinfo_text=SAPPHIRE_RAPIDS, env={})
    assert forced["VARIANT"] == "avx2"
    assert len({a["KEY"], forced["KEY"], extra["KEY"], other_version["KEY"]}) == 4
    with pytest.raises(SystemExit, match="not one of"):
        flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=HASWELL, env={"MEMORAG_LLAMA_VARIANT": "amx"})


# cmake option -> the name llama_print_system_info() gives the feature
_FEATURE = {"GGML_AVX": "AVX", "GGML_AVX2": "AVX2", "GGML_FMA": "FMA", "GGML_F16C": "F16C", "GGML_BMI2": "BMI2",
            "GGML_AVX512": "AVX512", "GGML_AVX512_VBMI": "AVX512_VBMI", "GGML_AVX512_VNNI": "AVX512_VNNI",
            "GGML_AVX512_BF16": "AVX512_BF16", "GGML_AVX_VNNI": "AVX_VNNI"}


def test_installed_binding_lists_only_the_chosen_instruction_set():
    """What setup installed is what it chose for this CPU, whatever the build machine had."""
    from memorag.doctor import build_record, enabled_features, system_info

    record = build_record()
    if record is None:
        pytest.skip("binding not installed by scripts/setup.sh (no build record in the venv)")
    features = enabled_features(system_info())
    opts = _opts(record["cmake_args"])
    assert not any(f.startswith("AMX") for f in features), features
    for option, feature in _FEATURE.items():
        assert (feature in features) == (opts.get(option) == "ON"), (feature, features, record)
    # and the recorded choice is the one this CPU gets now
    assert record["variant"] == flags_mod.choose(record["version"])["VARIANT"] or os.environ.get("MEMORAG_LLAMA_VARIANT")


@pytest.mark.integration  # starts a process that dies by a signal
def test_smoke_check_fails_cleanly_when_the_binding_dies_by_a_signal(tmp_path):
    # A stand-in for a binding compiled with instructions this CPU mishandles: it dies by
    # SIGSEGV as the AMX build did. (Real crashes cannot be produced on demand.)
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent("""
        import os, signal
        class Llama:
            def __init__(self, *a, **k):
                pass
            def tokenize(self, b):
                return list(range(400))
            def eval(self, tokens):
                os.kill(os.getpid(), signal.SIGSEGV)
    """))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "memorag.doctor", "smoke", "--variant", "avx512"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "crashed (SIGSEGV)" in lines[0] and "MEMORAG_LLAMA_VARIANT=avx2" in lines[0]
    assert "Traceback" not in proc.stderr


def test_smoke_check_passes_on_the_real_binding():
    proc = subprocess.run([sys.executable, "-m", "memorag.doctor", "smoke", "--tokens", "200"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "evaluated 200 tokens" in proc.stdout


@pytest.mark.unit
def test_every_build_skips_the_common_library_and_the_key_ignores_where_the_clone_is(tmp_path, monkeypatch):
    """llama-cpp-python forces llama.cpp's common library on; the include file turns it off
    again. Two clones at different paths name different include paths but share one key, so
    the second clone reuses the first one's wheel; a changed include file is another key."""
    chosen = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=HASWELL, env={})
    opts = _opts(chosen["CMAKE_ARGS"])
    include = Path(opts["CMAKE_PROJECT_INCLUDE"])
    assert include == flags_mod.SKIP_COMMON and "LLAMA_BUILD_COMMON OFF" in include.read_text()
    elsewhere = tmp_path / "other clone" / "llama_skip_common.cmake"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(include.read_bytes())
    monkeypatch.setattr(flags_mod, "SKIP_COMMON", elsewhere)
    moved = flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=HASWELL, env={})
    assert moved["KEY"] == chosen["KEY"] and moved["CMAKE_ARGS"] != chosen["CMAKE_ARGS"]
    import shlex

    # a path with a space survives scikit-build-core's shlex split of CMAKE_ARGS
    assert f"-DCMAKE_PROJECT_INCLUDE={elsewhere}" in shlex.split(moved["CMAKE_ARGS"])
    elsewhere.write_text(include.read_text() + "\n# changed\n")
    assert flags_mod.choose("0.3.36", machine="x86_64", cpuinfo_text=HASWELL, env={})["KEY"] != chosen["KEY"]

"""Merge a LoRA adapter into its base model and export the result as a quantized GGUF.

Three steps: (1) peft merges the adapter into the dequantized base weights and
transformers saves a plain model directory; (2) llama.cpp's own converter,
``convert_hf_to_gguf.py``, writes an f16 GGUF; (3) ``llama_cpp.llama_model_quantize``
(llama.cpp's C API, from the installed llama-cpp-python) quantizes it (Q4_K_M, the
default memory model's type, or Q8_0...). The file loads with ``Memory("path.gguf")``, and
as for any GGUF its fingerprint (size + first/last MiB) goes into every save manifest.

The converter is not part of memorag. It ships in the llama-cpp-python source
distribution (vendor/llama.cpp, with its own gguf-py): :func:`fetch_converter` runs
``pip download --no-deps --no-binary :all: llama-cpp-python==<installed version>`` and
unpacks only ``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/`` into the cache
(``~/.cache/memorag/llama.cpp/<version>``). ``MEMORAG_LLAMA_CPP_DIR`` may point at any
llama.cpp checkout instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memorag.errors import BackendError, InputError
from memorag.models.packaged import cache_dir

CONVERTER = "convert_hf_to_gguf.py"
LORA_CONVERTER = "convert_lora_to_gguf.py"  # imports CONVERTER's model classes, so both are unpacked
ENV_DIR = "MEMORAG_LLAMA_CPP_DIR"
# What the converter needs from the sdist: the script, its model classes, its gguf-py.
_NEEDED = (CONVERTER, LORA_CONVERTER, "conversion/", "gguf-py/")
QUANT_TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")


def llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama_cpp_python")
    except Exception:
        raise BackendError("llama-cpp-python is not installed: `pip install 'memorag[llamacpp]'`.") from None


def converter_dir(version: str | None = None) -> Path:
    """Where :func:`fetch_converter` keeps the converter for ``version`` (default: the installed one)."""
    return cache_dir() / "llama.cpp" / (version or llama_cpp_version())


def find_converter(explicit: str | Path | None = None) -> Path:
    """The path of ``convert_hf_to_gguf.py``: ``explicit`` (the script or its directory),
    else ``$MEMORAG_LLAMA_CPP_DIR``, else the cache; a clear error if none has it."""
    candidates = [Path(p).expanduser() for p in (explicit, os.environ.get(ENV_DIR)) if p]
    for c in candidates:
        script = c if c.name == CONVERTER else c / CONVERTER
        if script.is_file():
            return script
        raise InputError(f"No {CONVERTER} at {c}.")
    script = converter_dir() / CONVERTER
    if script.is_file():
        return script
    raise InputError(
        f"llama.cpp's {CONVERTER} is not here ({script}). Get it with `memorag train fetch-converter` (downloads "
        f"the llama-cpp-python {llama_cpp_version()} source from PyPI, ~75 MB, and keeps only the converter), or "
        f"set {ENV_DIR} to a llama.cpp checkout.")


def fetch_converter(version: str | None = None, *, log: Callable[[str], None] = print) -> Path:
    """Download the llama-cpp-python sdist with pip and unpack the converter into the cache."""
    version = version or llama_cpp_version()
    target = converter_dir(version)
    if (target / CONVERTER).is_file() and (target / LORA_CONVERTER).is_file():
        return target / CONVERTER
    with tempfile.TemporaryDirectory(prefix="memorag-sdist-") as tmp:
        log(f"downloading the llama-cpp-python {version} source distribution from PyPI")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "-q", "-d", tmp, f"llama-cpp-python=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise BackendError(f"pip could not download the llama-cpp-python {version} sdist: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        staging = Path(tempfile.mkdtemp(prefix=".converter-", dir=_mkdir(target.parent)))
        try:
            with tarfile.open(archives[0]) as tar:
                for member in tar.getmembers():
                    rel = member.name.split("/vendor/llama.cpp/", 1)
                    if len(rel) != 2 or not rel[1].startswith(_NEEDED) or not (member.isfile() or member.isdir()):
                        continue
                    member.name = rel[1]
                    # The "data" filter refuses absolute paths, links out of the tree and special files.
                    tar.extract(member, staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            if not (staging / CONVERTER).is_file():
                raise BackendError(f"The llama-cpp-python {version} sdist holds no vendor/llama.cpp/{CONVERTER}.")
            (staging / "source.json").write_text(json.dumps({"sdist": archives[0].name}), encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            staging.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log(f"converter ready: {target / CONVERTER}")
    return target / CONVERTER


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def merge(base: str, adapter_dir: str | Path, out_dir: str | Path, *,
          model_and_tokenizer: tuple[Any, Any] | None = None) -> Path:
    """Merge the LoRA adapter into ``base`` and save a transformers directory (safetensors)."""
    from memorag.training import require_train_extra

    require_train_extra()
    import torch
    from peft import PeftModel

    adapter = Path(adapter_dir).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"No LoRA adapter at {adapter} (missing adapter_config.json).")
    if model_and_tokenizer is None:
        from memorag.training.lora import load_base

        tokenizer, model, _ = load_base(base, dtype=torch.float32)
    else:
        model, tokenizer = model_and_tokenizer
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    # A base read from a GGUF keeps transformers' gguf "quantizer", which refuses
    # save_pretrained; its weights were dequantized on loading, so they save as plain tensors.
    merged.hf_quantizer = None
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def convert(model_dir: str | Path, outfile: str | Path, *, outtype: str = "f16", converter: str | Path | None = None,
            log: Callable[[str], None] = print) -> Path:
    """Run llama.cpp's converter on a transformers directory; returns the GGUF path."""
    script = find_converter(converter)
    out = Path(outfile).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(script), str(Path(model_dir).expanduser()), "--outfile", str(out), "--outtype", outtype]
    log("converting: " + " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BackendError(f"llama.cpp's converter failed on {model_dir} (exit {done.returncode}):\n{tail}")
    return out


def quantize(src: str | Path, dst: str | Path, qtype: str = "Q4_K_M", *, threads: int | None = None) -> Path:
    """Quantize a GGUF through llama.cpp's C API (``llama_model_quantize``)."""
    qtype = qtype.upper()
    if qtype not in QUANT_TYPES:
        raise InputError(f"Unknown quantization {qtype!r}: choose one of {', '.join(QUANT_TYPES)}.")
    try:
        import llama_cpp
    except ImportError:
        raise BackendError("Quantizing needs llama-cpp-python: `pip install 'memorag[llamacpp]'`.") from None
    ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + qtype)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    out = Path(dst).expanduser()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0 or not out.is_file():
        raise BackendError(f"llama.cpp could not quantize {src} to {qtype} (code {rc}).")
    return out


def export(base: str, adapter_dir: str | Path, outfile: str | Path, *, qtype: str = "Q4_K_M",
           converter: str | Path | None = None, keep_intermediate: bool = False,
           model_and_tokenizer: tuple[Any, Any] | None = None, log: Callable[[str], None] = print) -> Path:
    """Adapter + base -> merged transformers dir -> f16 GGUF -> ``qtype`` GGUF at ``outfile``."""
    out = Path(outfile).expanduser()
    if out.suffix.lower() != ".gguf":
        raise InputError(f"The exported model must be a .gguf file; got {out}.")
    if qtype.upper() not in QUANT_TYPES:
        raise InputError(f"Unknown quantization {qtype!r}: choose one of {', '.join(QUANT_TYPES)}.")
    find_converter(converter)  # fail before the merge, not after it
    work = out.with_name(out.stem + ".export")
    merged = merge(base, adapter_dir, work / "merged", model_and_tokenizer=model_and_tokenizer)
    log(f"merged model saved in {merged}")
    f16 = convert(merged, work / "model-f16.gguf", converter=converter, log=log)
    if qtype.upper() == "F16":
        f16.replace(out)
    else:
        log(f"quantizing to {qtype.upper()}")
        quantize(f16, out, qtype)
    if not keep_intermediate:
        shutil.rmtree(work, ignore_errors=True)
    from memorag.llm.llamacpp import file_fingerprint

    log(f"wrote {out} ({out.stat().st_size / 2**20:.0f} MiB, fingerprint {file_fingerprint(out)})")
    return out


ADAPTER_TYPES = ("F16", "F32", "Q8_0")


def export_adapter(base: str, adapter_dir: str | Path, outfile: str | Path, *, outtype: str = "F16",
                   converter: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The LoRA adapter alone as a llama.cpp adapter GGUF (``convert_lora_to_gguf.py``).

    llama.cpp applies it on top of the quantized base at run time (``llama_adapter_lora_init``),
    so what ships is a few MB instead of a merged model. The converter reads only the base's
    configuration: it is written from the GGUF's metadata, no weights are loaded.
    """
    from memorag.training import require_train_extra

    require_train_extra()
    out = Path(outfile).expanduser()
    if out.suffix.lower() != ".gguf":
        raise InputError(f"The adapter must be written to a .gguf file; got {out}.")
    if outtype.upper() not in ADAPTER_TYPES:
        raise InputError(f"Unknown adapter type {outtype!r}: choose one of {', '.join(ADAPTER_TYPES)}.")
    adapter = Path(adapter_dir).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"No LoRA adapter at {adapter} (missing adapter_config.json).")
    script = find_converter(converter).with_name(LORA_CONVERTER)
    if not script.is_file():
        raise InputError(f"No {LORA_CONVERTER} beside the converter ({script}); run `memorag train fetch-converter`.")
    from transformers import AutoConfig, AutoTokenizer

    from memorag.training.lora import base_source

    directory, kwargs, _ = base_source(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="memorag-base-config-") as tmp:
        config = AutoConfig.from_pretrained(directory, **kwargs)
        if not getattr(config, "architectures", None):
            # A configuration read from GGUF metadata names no architecture, and the converter
            # picks its model class by that name: the causal-LM class of the model type.
            from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

            config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
        config.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(directory, **kwargs).save_pretrained(tmp)
        cmd = [sys.executable, str(script), str(adapter), "--base", tmp, "--outfile", str(out),
               "--outtype", outtype.lower()]
        log("converting: " + " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BackendError(f"llama.cpp's LoRA converter failed on {adapter} (exit {done.returncode}):\n{tail}")
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out

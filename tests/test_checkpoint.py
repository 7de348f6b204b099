"""Resumable memorize on the fakes (no model): a run interrupted in the embedding stage or
in the memory pass leaves checkpoints; the next run of the same document redoes only the
missing work (counted), builds the same document, and ignores checkpoints that are
damaged or belong to something else. The real kill -9 on llama.cpp is in test_resume.py."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from memorag import MemoRAG
from memorag.checkpoint import Checkpoints, default_root
from memorag.errors import InputError
from memorag.index.faiss_index import FaissIndex
from memorag.pipeline import format_stats
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

BATCH = 4  # passages per embedding batch
STEP = 64  # tokens per prefill batch of the scripted model
EVERY = 128  # tokens between two memory checkpoints (two prefill batches)

DOC = "\n\n".join(
    f"In year {1800 + i} the harbour master of Kelmouth, {name}, counted {i * 7 % 97} herring boats "
    f"and wrote the number in the {colour} ledger kept in the tide office."
    for i, (name, colour) in enumerate(zip(["Ada Wren", "Bram Holt", "Cyra Mott", "Dov Pell"] * 30,
                                           ["red", "green", "blue", "grey", "black"] * 24)))
QUESTION = "How many herring boats did Cyra Mott count in year 1810?"


class Killed(Exception):
    """Stands for a kill: raised in the middle of a stage."""


def new_pipe() -> MemoRAG:
    retriever = Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64, batch_size=BATCH)
    return MemoRAG.from_parts(ScriptedLLM(batch_tokens=STEP, context_window=32768), retriever)


def view(pipe: MemoRAG) -> dict:
    """What a user gets from the memorized document."""
    ans = pipe.ask(QUESTION, max_new_tokens=64)
    return {"answer": ans.answer, "clues": ans.clues.lines() if ans.clues else None,
            "evidence": [(h.chunk_id, round(h.score, 6)) for h in ans.evidence],
            "vectors": pipe.retriever.index.search(pipe.embedder.embed([QUESTION], is_query=True), 10)[1].tolist(),
            "prefix_tokens": pipe.memory.llm.prefix_tokens}


@pytest.fixture
def root(tmp_path):
    return tmp_path / "ckpt"


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted run without checkpoints, and its batch counts."""
    pipe = new_pipe()
    pipe.memorize(DOC, progress=False, resume=False)
    n_embed = pipe.embedder.call_counts["embed"]
    n_prefill = pipe.memory.llm.call_counts["prefill_batch"]
    assert n_embed >= 10 and n_prefill >= 20  # enough batches for the counts below to mean something
    return view(pipe), n_embed, n_prefill


def kill_in_embedding(root, after: int) -> None:
    pipe = new_pipe()
    pipe.embedder.fail("embed", Killed(), after=after)
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))


def kill_in_memory_pass(root, after: int) -> None:
    pipe = new_pipe()
    pipe.memory.llm.fail("prefill_batch", Killed(), after=after)
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))


def rerun(root, **kw) -> tuple[MemoRAG, dict]:
    pipe = new_pipe()
    stats = pipe.memorize(DOC, resume=Checkpoints(root, every_tokens=EVERY), **{"progress": False, **kw})
    return pipe, stats


def test_killed_embedding_resumes_with_only_the_missing_batches(root, reference):
    ref_view, n_embed, n_prefill = reference
    kill_in_embedding(root, after=7)  # batches 0-6 done, the kill lands in batch 7
    pipe, stats = rerun(root)
    assert pipe.embedder.call_counts["embed"] == n_embed - 7
    assert stats["resumed"]["index"]["done"] == 7 * BATCH
    assert "memory" not in stats["resumed"]  # the kill came before the memory pass
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill
    assert view(pipe) == ref_view  # same vectors, same index, same answers
    assert not root.exists() or list(root.iterdir()) == []  # deleted once the memorize succeeded


def test_killed_memory_pass_resumes_from_the_newest_checkpoint(root, reference):
    ref_view, n_embed, n_prefill = reference
    kill_in_memory_pass(root, after=11)  # 11 batches read: the newest checkpoint holds 10 (640 tokens)
    pipe, stats = rerun(root)
    assert stats["resumed"]["memory"]["done"] == 10 * STEP
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill - 10
    assert pipe.embedder.call_counts.get("embed", 0) == 0  # the embedding stage had finished
    assert stats["resumed"]["index"]["percent"] == 100
    assert view(pipe) == ref_view
    assert list(root.iterdir()) == []


def test_a_second_kill_keeps_what_the_first_resume_added(root, reference):
    _, _, n_prefill = reference
    kill_in_memory_pass(root, after=5)  # checkpoint at 4 batches
    pipe = new_pipe()
    pipe.memory.llm.fail("prefill_batch", Killed(), after=9)  # resumed at 4, reads 9 more: checkpoint at 12
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    pipe, stats = rerun(root)
    assert stats["resumed"]["memory"]["done"] == 12 * STEP
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill - 12
    assert list(root.iterdir()) == []


def test_only_the_newest_memory_state_is_kept(root):
    kill_in_memory_pass(root, after=9)
    [d] = root.glob("memory-*")
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "state-000000512.bin", "state-000000512.json"]


def corrupt_batches(root) -> list[str]:
    """Damage three batch files in three ways; returns what was done."""
    [d] = root.glob("embed-*")
    files = sorted(d.glob("*.npy"))
    data = bytearray(files[1].read_bytes())
    data[-5] ^= 0x40
    files[1].write_bytes(bytes(data))  # a flipped bit in the vectors
    files[3].write_bytes(files[3].read_bytes()[:100])  # truncated
    # An object array (a pickle inside the .npy), given a name whose checksum matches.
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    evil = buf.getvalue()
    files[5].unlink()
    (d / f"{files[5].name[:6]}-{hashlib.sha256(evil).hexdigest()}.npy").write_bytes(evil)
    return ["bit flip", "truncated", "pickle"]


def test_damaged_embedding_batches_are_recomputed_never_trusted(root, reference):
    ref_view, n_embed, _ = reference
    kill_in_embedding(root, after=8)
    corrupt_batches(root)
    pipe, stats = rerun(root)
    assert pipe.embedder.call_counts["embed"] == n_embed - 8 + 3  # the three damaged ones again
    assert stats["resumed"]["index"]["done"] == 1 * BATCH  # batch 0 is whole; batch 1 is not
    assert view(pipe) == ref_view


def test_a_batch_of_the_wrong_shape_or_type_is_recomputed(root, reference):
    ref_view, n_embed, _ = reference
    kill_in_embedding(root, after=4)
    [d] = root.glob("embed-*")
    import hashlib
    import io

    for i, arr in [(0, np.zeros((BATCH, 7), dtype=np.float32)), (2, np.zeros((BATCH, 256), dtype=np.float64)),
                   (3, np.full((BATCH, 256), np.nan, dtype=np.float32))]:
        for old in d.glob(f"{i:06d}-*.npy"):
            old.unlink()
        buf = io.BytesIO()
        np.save(buf, arr)
        (d / f"{i:06d}-{hashlib.sha256(buf.getvalue()).hexdigest()}.npy").write_bytes(buf.getvalue())
    pipe, _ = rerun(root)
    assert pipe.embedder.call_counts["embed"] == n_embed - 4 + 3
    assert view(pipe) == ref_view


def test_embedding_checkpoints_of_other_settings_are_not_used(root, reference):
    _, n_embed, _ = reference
    kill_in_embedding(root, after=6)
    pipe = MemoRAG.from_parts(ScriptedLLM(batch_tokens=STEP, context_window=32768),
                              Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64, batch_size=BATCH + 1))
    pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    assert "resumed" not in pipe.stats
    other = MemoRAG.from_parts(ScriptedLLM(batch_tokens=STEP, context_window=32768),
                               Retriever(HashEmbedder(dimension=128), FaissIndex, chunk_tokens=64, batch_size=BATCH))
    other.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    assert "resumed" not in other.stats
    # A different document with the same settings neither.
    third = new_pipe()
    third.memorize(DOC + "\n\nOne more line about the tide office.", progress=False,
                   resume=Checkpoints(root, every_tokens=EVERY))
    assert "resumed" not in third.stats
    assert third.embedder.call_counts["embed"] >= n_embed


def test_an_edited_embedding_manifest_voids_the_checkpoint(root, reference):
    _, n_embed, _ = reference
    kill_in_embedding(root, after=6)
    [d] = root.glob("embed-*")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["passages"] += 1
    (d / "manifest.json").write_text(json.dumps(manifest))
    pipe, stats = rerun(root)
    assert "resumed" not in stats and pipe.embedder.call_counts["embed"] == n_embed


@pytest.mark.parametrize("damage", ["state bytes", "prefix hash", "token count", "size", "missing bin",
                                    "garbage json", "model"])
def test_damaged_memory_checkpoints_are_ignored(root, reference, damage):
    ref_view, _, n_prefill = reference
    kill_in_memory_pass(root, after=9)  # newest checkpoint: 8 batches
    [d] = root.glob("memory-*")
    meta_path, bin_path = d / "state-000000512.json", d / "state-000000512.bin"
    meta = json.loads(meta_path.read_text())
    if damage == "state bytes":
        bin_path.write_bytes(bin_path.read_bytes().replace(b'"tokens": 512', b'"tokens": 513'))
    elif damage == "prefix hash":
        meta["prefix_sha256"] = "0" * 64
    elif damage == "token count":
        meta["n_tokens"] = 256
    elif damage == "size":
        bin_path.write_bytes(bin_path.read_bytes() + b" ")
    elif damage == "missing bin":
        bin_path.unlink()
    elif damage == "garbage json":
        meta_path.write_text("{not json")
    elif damage == "model":  # a checkpoint dir of another model, renamed into this key
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["model"]["fingerprint"] = "another"
        (d / "manifest.json").write_text(json.dumps(manifest))
    if damage not in ("garbage json", "state bytes", "size", "missing bin", "model"):
        meta_path.write_text(json.dumps(meta))
    pipe, stats = rerun(root)
    assert "memory" not in stats.get("resumed", {})
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill  # read from the start
    assert view(pipe) == ref_view


def test_a_state_the_backend_refuses_is_read_again(root, reference, caplog):
    """Checks passed but the model cannot use it (the scripted model compares the state with
    the tokens it reads, as llama.cpp checks its state format): read from the start."""
    ref_view, _, n_prefill = reference
    kill_in_memory_pass(root, after=9)
    [d] = root.glob("memory-*")
    meta_path, bin_path = d / "state-000000512.json", d / "state-000000512.bin"
    import hashlib

    forged = b'{"tokens": 512, "ids": "forged"}'
    bin_path.write_bytes(forged)
    meta = json.loads(meta_path.read_text())
    meta.update(bytes=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="memorag.checkpoint"):
        pipe, stats = rerun(root)
    assert "refused by the backend" in caplog.text
    assert "memory" not in stats.get("resumed", {})
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill
    assert view(pipe) == ref_view


def test_resume_false_neither_reads_nor_writes(root, reference):
    _, n_embed, n_prefill = reference
    kill_in_memory_pass(root, after=9)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    pipe = new_pipe()
    pipe.memory.llm.fail("prefill_batch", Killed(), after=15)
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False, resume=False)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    pipe = new_pipe()
    pipe.memorize(DOC, progress=False, resume=False)
    assert pipe.embedder.call_counts["embed"] == n_embed and pipe.memory.llm.call_counts["prefill_batch"] == n_prefill
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # left alone, not deleted


def test_progress_says_where_it_resumed(root, capsys):
    kill_in_memory_pass(root, after=9)
    seen = []
    rerun(root, progress=lambda stage, done, total: seen.append((stage, done, total)))
    memory = [(d, t) for s, d, t in seen if s == "memory"]
    assert memory[0][0] == 8 * STEP  # the first report is the resumed position, not 0
    kill_in_memory_pass(root, after=9)
    _, stats = rerun(root, progress=True)
    err = capsys.readouterr().err
    total = stats["resumed"]["memory"]["total"]
    assert f"memory: resumed from {round(100 * 512 / total, 1):g}% (512 of {total:,} tokens" in err
    assert "index: resumed from 100%" in err
    assert "resumed" in format_stats(stats) and "memory from" in format_stats(stats)


def test_checkpoints_are_deleted_only_after_the_save_succeeded(root, tmp_path, monkeypatch, reference):
    _, _, n_prefill = reference
    kill_in_memory_pass(root, after=9)
    pipe = new_pipe()

    def failing_save(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(pipe.retriever, "save", failing_save)
        with pytest.raises(OSError):
            pipe.memorize(DOC, save_dir=tmp_path / "state", progress=False,
                          resume=Checkpoints(root, every_tokens=EVERY))
    # Kept: the work is not saved anywhere yet. That run went on from 8 batches to the end,
    # so its newest checkpoint is the last interval before the end.
    [state] = root.glob("memory-*/state-*.json")
    newest = json.loads(state.read_text())["n_tokens"]
    assert newest > 8 * STEP and newest + EVERY >= n_prefill * STEP - STEP
    pipe = new_pipe()
    stats = pipe.memorize(DOC, save_dir=tmp_path / "state", progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    assert stats["resumed"]["memory"]["done"] == newest
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill - newest // STEP
    assert list(root.iterdir()) == []
    assert (tmp_path / "state" / "manifest.json").is_file()


def test_an_unwritable_checkpoint_root_does_not_fail_the_memorize(tmp_path, reference, caplog):
    ref_view, _, _ = reference
    root = tmp_path / "a file"
    root.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="memorag.checkpoint"):
        pipe = new_pipe()
        stats = pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    assert "checkpoints turned off" in caplog.text and "checkpoint_error" in stats
    assert view(pipe) == ref_view


def test_stale_checkpoint_dirs_are_pruned(root):
    import os
    import time

    kill_in_memory_pass(root, after=9)
    old = sorted(root.iterdir())
    assert len(old) == 2  # the embedding batches and the memory state
    week_ago = time.time() - 8 * 86400
    for d in old:
        os.utime(d, (week_ago, week_ago))
    pipe = new_pipe()  # another document's run creates its dir, and prunes the stale ones
    pipe.embedder.fail("embed", Killed(), after=3)
    with pytest.raises(Killed):
        pipe.memorize(DOC + "\n\nA last line.", progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    [new] = root.iterdir()
    assert new not in old and len(list(new.glob("*.npy"))) == 3


def test_default_root_and_bad_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMORAG_CHECKPOINT_DIR", str(tmp_path / "x"))
    assert default_root() == tmp_path / "x" and Checkpoints().root == tmp_path / "x"
    monkeypatch.delenv("MEMORAG_CHECKPOINT_DIR")
    monkeypatch.setenv("MEMORAG_CACHE_DIR", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "checkpoints"
    for bad in (0, -5, 1.5, True, "2048"):
        with pytest.raises(InputError):
            Checkpoints(every_tokens=bad)
    with pytest.raises(InputError):
        new_pipe().memorize(DOC, progress=False, resume="yes")


def test_default_resume_uses_the_default_root(monkeypatch, tmp_path, reference):
    _, _, n_prefill = reference
    monkeypatch.setenv("MEMORAG_CHECKPOINT_DIR", str(tmp_path / "env-root"))
    pipe = new_pipe()
    pipe.memory.llm.fail("prefill_batch", Killed(), after=n_prefill - 1)
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False)  # resume=True: default root, default interval (2048 tokens)
    [d] = (tmp_path / "env-root").glob("memory-*")
    [state] = d.glob("state-*.json")
    saved = json.loads(state.read_text())["n_tokens"]
    assert saved > 0 and saved % 2048 == 0
    pipe = new_pipe()
    stats = pipe.memorize(DOC, progress=False)
    assert stats["resumed"]["memory"]["done"] == saved
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill - saved // STEP


def test_overlapped_indexing_resumes_both_stages(root, reference):
    """overlap_indexing embeds in a thread during the memory pass: both stages checkpoint."""
    ref_view, n_embed, n_prefill = reference

    def overlapped() -> MemoRAG:
        retriever = Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64, batch_size=BATCH)
        return MemoRAG.from_parts(ScriptedLLM(batch_tokens=STEP, context_window=32768), retriever,
                                  overlap_indexing=True)

    pipe = overlapped()
    pipe.memory.llm.fail("prefill_batch", Killed(), after=9)
    with pytest.raises(Killed):
        pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    embedded = pipe.embedder.call_counts.get("embed", 0)  # the thread may or may not have finished
    pipe = overlapped()
    stats = pipe.memorize(DOC, progress=False, resume=Checkpoints(root, every_tokens=EVERY))
    assert stats["resumed"]["memory"]["done"] == 8 * STEP
    assert pipe.memory.llm.call_counts["prefill_batch"] == n_prefill - 8
    assert pipe.embedder.call_counts.get("embed", 0) == n_embed - embedded
    assert view(pipe) == ref_view

"""Calls of the original MemoRAG research API (issue 8): each works, or fails with one clear
memorag error. The model tests reuse the session's default LLM and embedder."""

import subprocess
import sys
import zipfile

import pytest

import memorag
from memorag import MemoRAG
from memorag.errors import InputError, NotMemorizedError, StateError
from memorag.memory import MEMORY_JSON, Memory
from memorag.retrieval import Retriever
from memorag.testing import ScriptedLLM

QUESTION = "Who is the new tenant of Netherfield Park?"


# ------------------------------------------------------------------ no model needed
@pytest.mark.integration  # imports in a fresh interpreter
def test_all_lists_agent_and_lite_without_importing_them_eagerly():
    assert {"Agent", "MemoRAGLite", "MemoRAG", "Memory"} <= set(memorag.__all__)
    code = (
        "import sys, memorag\n"
        "assert 'memorag.llm.openai_api' not in sys.modules and 'memorag.lite' not in sys.modules\n"
        "assert 'openai' not in sys.modules\n"
        "from memorag import *\n"
        "from memorag import Agent as A\n"
        "assert Agent is A and MemoRAGLite.__name__ == 'MemoRAGLite'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.unit
@pytest.mark.parametrize("size", [8, 0, -1, 15, 64.5, "512"])
def test_too_small_chunk_size_is_an_input_error_before_any_model_loads(size):
    # MemoRAG(...) would load the default models if the check came after them.
    with pytest.raises(InputError, match="at least 16"):
        MemoRAG(retrieval_chunk_size=size)
    with pytest.raises(InputError, match="at least 16"):
        Retriever(embedder=None, index_factory=None, chunk_tokens=size)


@pytest.mark.unit
def test_memory_save_refuses_to_overwrite_a_foreign_file_and_load_explains_it(tmp_path):
    mem = Memory(llm=ScriptedLLM())
    mem.memorize("A short document about the original MemoRAG state files and how they were kept.")
    old = tmp_path / "memory.bin"
    old.write_bytes(b"original MemoRAG state")
    with pytest.raises(InputError, match="is not a memory saved by memorag; not overwriting it"):
        mem.save(old)
    assert old.read_bytes() == b"original MemoRAG state"
    with pytest.raises(StateError, match="not a memory saved by memorag.*original MemoRAG cannot be read"):
        mem.load(old)


# ------------------------------------------------------- on the default models
@pytest.fixture(scope="module")
def memorized(default_llm, embedder, sample_text, tmp_path_factory):
    """A pipeline on the session's models (no second load), memorized and saved."""
    pipe = MemoRAG(default_llm, embedder, customized_gen_model=default_llm)
    assert pipe.memory.llm is default_llm and pipe.embedder is embedder
    save_dir = tmp_path_factory.mktemp("original_api") / "state"
    pipe.memorize(sample_text[:6000], save_dir=save_dir, progress=False)
    return pipe, save_dir


def test_load_print_stats_prints_load_stats_to_stderr(memorized, capsys):
    pipe, save_dir = memorized
    manifest = pipe.load(save_dir, print_stats=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert "load seconds" in out.err and "chunks" in out.err and str(manifest["chunks"]) in out.err
    pipe.load(save_dir)
    assert capsys.readouterr().err == ""  # off by default


def test_mem_model_is_a_read_only_alias_of_memory(memorized):
    pipe, _ = memorized
    assert pipe.mem_model is pipe.memory
    with pytest.raises(AttributeError):
        pipe.mem_model = None
    recalled = pipe.mem_model.recall(QUESTION, max_new_tokens=32)
    assert isinstance(recalled, str)


def test_retrieve_returns_top_ret_hit_chunk_texts(memorized):
    pipe, _ = memorized
    chunks = [c.text for c in pipe.retriever.chunks]
    texts = pipe._retrieve(["Netherfield Park is let at last", "a young man of large fortune"])
    assert len(texts) == min(pipe.ret_hit, len(chunks))
    assert all(isinstance(t, str) and t in chunks for t in texts)
    assert any("Netherfield" in t for t in texts)
    assert pipe._retrieve(QUESTION)[0] in chunks  # one query string works too
    assert pipe._retrieve([]) == []

    empty = MemoRAG.from_parts(pipe.memory, Retriever(pipe.embedder, pipe.retriever.index_factory), pipe.generator)
    with pytest.raises(NotMemorizedError):
        empty._retrieve(QUESTION)


def test_memory_save_and_load_round_trip_with_a_file_like_path(memorized, default_llm, tmp_path):
    pipe, _ = memorized
    path = tmp_path / "cache" / "x" / "memory.bin"
    info = pipe.memory.save(str(path))
    assert path.is_file() and MEMORY_JSON in zipfile.ZipFile(path).namelist()  # one file, as the original
    other = Memory(llm=default_llm)
    loaded = other.load(str(path))
    assert other.memorized and other.context_sha256 == pipe.memory.context_sha256
    assert loaded["state"]["n_tokens"] == info["state"]["n_tokens"]
    pipe.memory.save(path)  # saving again to the same path replaces the state

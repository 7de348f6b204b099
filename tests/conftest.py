"""Shared fixtures. Models are loaded once per session: loading is slow, using is not."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from importlib.resources import files
from typing import NamedTuple

import pytest

# Tests never reach a model hub (there is no network here): fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Memorize checkpoints (memorag.checkpoint) never go to the user's cache: a session dir for
# module- and session-scoped fixtures, and a dir of its own for each test (below).
_CHECKPOINTS = tempfile.mkdtemp(prefix="memorag-test-checkpoints-")
os.environ["MEMORAG_CHECKPOINT_DIR"] = _CHECKPOINTS


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CHECKPOINTS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _checkpoint_root(tmp_path_factory, monkeypatch):
    """Work a test interrupts on purpose must not be resumed by another test."""
    monkeypatch.setenv("MEMORAG_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session")
def sample_text() -> str:
    return files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def embedder():
    from memorag.models.registry import load_embedder

    return load_embedder("default")


@pytest.fixture(scope="session")
def default_llm():
    from memorag.models.registry import load_llm

    return load_llm("default", n_ctx=8192)


@pytest.fixture(scope="session")
def fact_document(sample_text) -> str:
    """The bundled sample with one invented paragraph in its middle (tests/sampledoc.py)."""
    from sampledoc import with_fact

    return with_fact(sample_text)


class Memorized(NamedTuple):
    pipe: object  # memorag.MemoRAG
    save_dir: object  # pathlib.Path
    stats: dict  # what memorize returned
    clues: object  # memorag.memory.Clues for sampledoc.QUESTION, right after memorize


# The session's default pipeline (``default_pipeline``), held only while a test still to run
# asks for it: its three models, their contexts and the judge's states take several GB.
_DEFAULT: dict[str, tuple[Memorized, str]] = {}


@pytest.fixture
def default_pipeline(fact_document, tmp_path_factory) -> Memorized:
    """``MemoRAG()``, every default as `memorag demo` builds it (the 0.5B memory with its
    8K window, the 1.5B generator, the trained judge, MiniLM), having memorized
    ``fact_document`` and saved it: the slowest model work of the suite (~80 s on 2 cores),
    done once per session for tests/test_demo_questions.py and tests/test_e2e_default.py and
    freed after the last test that uses it. A test may ask it anything and load its save dir
    again (the same document), but must not memorize another document into it."""
    if "memorized" not in _DEFAULT:
        from sampledoc import QUESTION

        from memorag import MemoRAG

        save_dir = tmp_path_factory.mktemp("default_pipeline") / "state"
        pipe = MemoRAG()
        stats = pipe.memorize(fact_document, save_dir=save_dir, progress=False)
        clues = pipe.memory.clues(QUESTION)  # right after memorize: tests/test_e2e_default.py compares
        _DEFAULT["memorized"] = Memorized(pipe, save_dir, stats, clues), pipe.memory.context_sha256
    memorized, sha = _DEFAULT["memorized"]
    assert memorized.pipe.document is not None and memorized.pipe.memory.context_sha256 == sha, \
        "a test left another document (or none) in the session's default pipeline"
    return memorized


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    if _DEFAULT and "default_pipeline" in getattr(item, "fixturenames", ()):
        items = item.session.items
        later = items[items.index(item) + 1:]
        if not any("default_pipeline" in getattr(i, "fixturenames", ()) for i in later):
            _DEFAULT.clear()
            gc.collect()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 2-layer random Qwen2 with the default memory model's own tokenizer (read from its
    GGUF by transformers, no download: ~13 s, so built once for tests/test_training.py and
    tests/test_judge_training.py), saved as a transformers directory. Tests read it, never
    write into it."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from memorag.models.registry import resolve_gguf

    gguf = resolve_gguf("default")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gguf(tiny, tmp_path_factory):
    """``tiny`` converted to an f16 GGUF by llama.cpp's converter (memorag.training.export.convert),
    the base the adapter tests load their adapters onto; converted once (~6 s)."""
    from memorag.training.export import convert

    return convert(tiny, tmp_path_factory.mktemp("tiny-gguf") / "tiny-f16.gguf", log=lambda line: None)


def pytest_collection_modifyitems(config, items):
    # A test marked integration itself (its function, or a parametrize / fixture param) is
    # not a unit test even in a module marked unit: it starts processes, servers or an
    # embedded Qdrant, so it runs in the default suite but not in `-m unit`. pytest reads a
    # module's marks from the module node, shared by all its tests, so such a module's unit
    # mark moves onto each of its tests that stays unit.
    is_unit = {item: item.get_closest_marker("unit") is not None
               and not any(m.name == "integration" for m in item.own_markers) for item in items}
    for item in items:
        for node in item.listchain():
            node.own_markers[:] = [m for m in node.own_markers if m.name != "unit"]
    for item in items:
        if is_unit[item]:
            item.add_marker(pytest.mark.unit)
    # Tests that are neither unit (no model) nor e2e/slow (whole runs on the default models)
    # exercise one backend on a real model, or the processes and servers above: mark them so
    # `-m integration` selects them.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("unit", "e2e", "slow")):
            item.add_marker(pytest.mark.integration)

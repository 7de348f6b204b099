"""The original API's ``Memory.save("x/memory.bin")`` writes one file and ``Memory.load`` reads
it back; directories written by older memorag versions (and the ``memory`` entry of a save
dir) still work; a file memorag did not write is never overwritten or unpickled. On the
scripted LLM of memorag.testing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from memorag import MemoRAG
from memorag.errors import InputError, StateError
from memorag.memory import MEMORY_JSON, Memory
from memorag.models.registry import make_index_factory
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

DOC = ("The keeper Edda Quill kept the silver key in a blue porcelain jar. The harbour froze in the winter of the "
       "great storm, and the ferry stayed in port for a month.")
OTHER = "A different document about the bakery and the baker Anselm Rook, who hid the brass ledger."
QUESTION = "Where did Edda Quill keep the silver key?"


def memorized(text: str = DOC) -> Memory:
    mem = Memory(llm=ScriptedLLM())
    mem.memorize(text)
    return mem


def test_save_writes_one_file_that_load_reads_back(tmp_path):
    mem = memorized()
    path = tmp_path / "cache" / "x" / "memory.bin"
    info = mem.save(str(path))
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["memory.bin"]  # no leftovers
    with zipfile.ZipFile(path) as zf:
        assert MEMORY_JSON in zf.namelist() and json.loads(zf.read(MEMORY_JSON)) == info
        assert all(e.compress_type == zipfile.ZIP_STORED for e in zf.infolist())

    other = memorized(OTHER)
    loaded = other.load(path)
    assert loaded == info and other.context_sha256 == mem.context_sha256
    assert other.recall(QUESTION) == mem.recall(QUESTION)  # the same prefix state: the same clues

    mem.memorize(OTHER)
    mem.save(path)  # a memory file is replaced by the new state
    fresh = Memory(llm=ScriptedLLM())
    fresh.load(path)
    assert fresh.context_sha256 == mem.context_sha256 != info["context_sha256"]


def test_a_directory_saved_by_an_older_memorag_still_loads_and_is_saved_in_place(tmp_path):
    mem = memorized()
    old = tmp_path / "memory.bin"
    info = mem.save(old, directory=True)  # the layout older versions wrote for any path
    assert old.is_dir() and (old / MEMORY_JSON).is_file()
    other = memorized(OTHER)
    assert other.load(old) == info and other.context_sha256 == mem.context_sha256
    mem.save(old)  # an existing directory is written as a directory again, never replaced by a file
    assert old.is_dir() and Memory(llm=ScriptedLLM()).load(old)["context_sha256"] == mem.context_sha256


def test_a_path_without_an_extension_is_a_directory_as_in_a_save_dir(tmp_path):
    mem = memorized()
    mem.save(tmp_path / "memory")
    assert (tmp_path / "memory" / MEMORY_JSON).is_file()
    retriever = Retriever(HashEmbedder(), make_index_factory("faiss"), chunk_tokens=48)
    pipe = MemoRAG.from_parts(ScriptedLLM(), retriever)
    pipe.memorize(DOC, save_dir=tmp_path / "save")
    assert (tmp_path / "save" / "memory" / MEMORY_JSON).is_file()  # the save dir layout is unchanged
    pipe.load(tmp_path / "save")
    forced = tmp_path / "forced"
    mem.save(forced, directory=False)
    assert forced.is_file() and Memory(llm=ScriptedLLM()).load(forced)["context_sha256"] == mem.context_sha256


def test_files_memorag_did_not_write_are_refused_and_leave_the_memory_as_it_was(tmp_path):
    mem = memorized()
    before = mem.context_sha256

    def zipped(name: str, entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression) as zf:
            for entry, data in entries.items():
                zf.writestr(entry, data)
        return path

    meta = json.dumps({"format": 1}).encode()
    cases = {
        tmp_path / "pickle.bin": "not a memory saved by memorag",
        zipped("no-meta.bin", {"state.bin": b"x"}): "not a memory saved by memorag",
        zipped("escape.bin", {MEMORY_JSON: meta, "../escape": b"x"}): "entry memorag does not write",
        zipped("nested.bin", {MEMORY_JSON: meta, "sub/state": b"x"}): "entry memorag does not write",
        zipped("hidden.bin", {MEMORY_JSON: meta, ".hidden": b"x"}): "entry memorag does not write",
        zipped("deflated.bin", {MEMORY_JSON: meta}, zipfile.ZIP_DEFLATED): "entry memorag does not write",
        zipped("bad-json.bin", {MEMORY_JSON: b"{not json"}): "is corrupt",
    }
    (tmp_path / "pickle.bin").write_bytes(b"\x80\x04\x95 a pickle from the original MemoRAG")
    for path, message in cases.items():
        with pytest.raises(StateError, match=message):
            mem.load(path)
        assert mem.context_sha256 == before and mem.recall(QUESTION)
    assert not (tmp_path.parent / "escape").exists()

    valid = tmp_path / "valid.bin"
    mem.save(valid)
    data = bytearray(valid.read_bytes())
    at = data.index(b"porcelain")  # inside the stored state: its checksum no longer matches
    data[at:at + 9] = b"PORCELAIN"
    (tmp_path / "flipped.bin").write_bytes(bytes(data))
    with pytest.raises(StateError, match="is corrupt"):
        mem.load(tmp_path / "flipped.bin")
    assert mem.context_sha256 == before


def test_save_never_overwrites_a_foreign_file_or_a_directory_with_a_file(tmp_path):
    mem = memorized()
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes")
    with pytest.raises(InputError, match="not overwriting it"):
        mem.save(foreign)
    assert foreign.read_text() == "my notes"
    (tmp_path / "folder.bin").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        mem.save(tmp_path / "folder.bin", directory=False)
    with pytest.raises(InputError, match="is a file"):
        mem.save(foreign, directory=True)

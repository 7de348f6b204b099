"""The llama.cpp backend on the real default model (small contexts keep this fast)."""

import pytest

from memorag.errors import ContextTooLongError, InputError, StateError
from memorag.memory import Memory

DOC = ("The lighthouse on Varrow Island was kept by Edda Quill from 1871 to 1903. "
       "She logged every passing ship in a green ledger. ") * 20


def test_prefix_state_save_load_gives_identical_greedy_continuation(default_llm, tmp_path):
    msgs = [{"role": "system", "content": "You answer from the document."},
            {"role": "user", "content": "Document:\n" + DOC}]
    n = default_llm.prefill(msgs)
    assert n == default_llm.prefix_tokens > 400
    first = "".join(default_llm.continue_chat("\n\nWho kept the lighthouse?", max_new_tokens=24))
    # A second task moves the KV cache past the prefix; saving must still keep only the prefix.
    other = "".join(default_llm.continue_chat("\n\nSay the first word of the document.", max_new_tokens=8))
    assert "Edda" in first and other and other != first
    info = default_llm.save_prefix(tmp_path)
    assert info["n_tokens"] == n  # the questions' tokens are not part of the saved state

    fresh = default_llm.twin(n_ctx=4096)
    fresh.load_prefix(tmp_path, info)
    assert "".join(fresh.continue_chat("\n\nWho kept the lighthouse?", max_new_tokens=24)) == first

    (tmp_path / info["file"]).write_bytes(b"\x00" * 128)
    with pytest.raises(StateError, match="corrupt"):
        fresh.load_prefix(tmp_path, info)


def test_document_longer_than_window_is_a_clear_error(default_llm):
    small = default_llm.twin(n_ctx=512)
    # Without compression the document must fit the window.
    with pytest.raises(ContextTooLongError, match="window"):
        Memory(llm=small, compression="none").memorize(DOC * 3)
    # With compression, a window too small even for a compressed memory says how big it must be.
    with pytest.raises(InputError, match="too small"):
        Memory(llm=small).memorize(DOC * 3)
    with pytest.raises(InputError, match="compression must be"):
        Memory(llm=small, compression="zip")


def test_memory_tasks_before_memorize_raise(default_llm):
    from memorag.errors import NotMemorizedError

    with pytest.raises(NotMemorizedError):
        Memory(llm=default_llm).recall("who?")

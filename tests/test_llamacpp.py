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


QUOTE_DOC = ("The Varrow lighthouse was built of grey granite in 1869. Edda Quill kept its lamp for thirty-two "
             "years. Her brother Tomas rowed the mail boat to the mainland every Thursday. In 1903 a storm "
             "broke the lantern glass, and the light was moved to Corran Point.")


def test_quote_decoding_writes_only_lines_of_the_document(default_llm):
    """Every line continue_quotes writes stands in the document word for word, even on a
    task that invites free writing (memorag.quoting)."""
    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    for task in ("\n\nQuote the sentences that say who kept the lamp and what happened in 1903, one per line.",
                 "\n\nWrite a poem about the sea."):
        with default_llm.task_adapter("recall"):
            out = "".join(default_llm.continue_quotes(task, max_new_tokens=60))
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        assert lines, task
        for line in lines:
            assert line in QUOTE_DOC, (task, out)
    free = "".join(default_llm.continue_chat("\n\nWrite a poem about the sea.", max_new_tokens=40))
    assert any(line.strip() and line.strip() not in QUOTE_DOC for line in free.splitlines())  # the constraint did it


def test_score_replies_reads_after_the_prefix_and_leaves_it_intact(default_llm):
    """score_replies scores each reply after the memorized prefix and cuts the cache back:
    a line of the document outscores a made-up one, scores repeat exactly, and a greedy
    continuation afterwards equals one made before (bench/pointer_study.py uses it)."""
    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    task = "\n\nQuote the sentence that says what happened in 1903."
    before = "".join(default_llm.continue_chat(task, max_new_tokens=20))
    replies = ["In 1903 a storm broke the lantern glass", "Bananas are grown in the mountains of Peru"]
    with default_llm.task_adapter("recall"):
        first = default_llm.score_replies(task, replies, max_tokens=6)
        again = default_llm.score_replies(task, replies, max_tokens=6)
    assert [len(lp) for lp in first] == [6, 6]
    assert first == again
    assert sum(first[0]) > sum(first[1])
    assert "".join(default_llm.continue_chat(task, max_new_tokens=20)) == before


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


def test_quotes_finished_from_the_document_are_read_into_the_model(default_llm, monkeypatch):
    """With COMPLETE_UNIQUE a quote that names one place is finished from the document, and
    the finished sentence is evaluated into the KV cache (not only pasted into the reply), so
    the model picks its next line after reading the whole quote (memorag.quoting)."""
    import memorag.quoting as quoting

    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    task = "\n\nQuote the sentences that say who kept the lamp and what happened in 1903, one per line."
    monkeypatch.setattr(quoting, "COMPLETE_UNIQUE", True)
    with default_llm.task_adapter("recall"):
        out = "".join(default_llm.continue_quotes(task, max_new_tokens=60))
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert lines and all(line in QUOTE_DOC for line in lines), out
    sentences = [s.strip() + "." for s in QUOTE_DOC.split(".") if s.strip()]
    assert any(line in sentences for line in lines), out  # a quote runs to its sentence's end
    llm = default_llm._llm
    read = llm.detokenize(list(llm.input_ids[: llm.n_tokens])).decode("utf-8", errors="ignore")
    assert read.endswith(out.rstrip("\n")) or out.rstrip("\n") in read, (out, read[-300:])
    # the cache is cut back to the document for the next task
    before = "".join(default_llm.continue_chat("\n\nWho kept the lamp?", max_new_tokens=12))
    again = "".join(default_llm.continue_chat("\n\nWho kept the lamp?", max_new_tokens=12))
    assert before == again


def test_quotes_drafted_from_the_document_are_the_ones_decoded_step_by_step(default_llm, monkeypatch):
    """DRAFT_FROM_DOCUMENT: a begun quote's rest is read from the document in one batch and
    kept as far as the model would have written it itself, so the reply is the step-by-step
    reply, and the KV cache holds exactly the tokens kept (memorag.quoting)."""
    import memorag.quoting as quoting

    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    task = "\n\nQuote the sentences that say who kept the lamp and what happened in 1903, one per line."
    drafts: list[int] = []
    real = type(default_llm)._verify_draft
    monkeypatch.setattr(type(default_llm), "_verify_draft",
                        lambda self, draft, c: (drafts.append(len(draft)), real(self, draft, c))[1])
    replies = {}
    for drafting in (False, True):
        monkeypatch.setattr(quoting, "DRAFT_FROM_DOCUMENT", drafting)
        with default_llm.task_adapter("recall"):
            replies[drafting] = "".join(default_llm.continue_quotes(task, max_new_tokens=60))
        assert bool(drafts) == drafting  # only the drafting run verified drafts
    assert replies[True] == replies[False]
    assert any(line.strip() in QUOTE_DOC for line in replies[True].splitlines() if line.strip())
    llm = default_llm._llm
    read = llm.detokenize(list(llm.input_ids[: llm.n_tokens])).decode("utf-8", errors="ignore")
    assert read.rstrip().endswith(replies[True].rstrip()), (replies[True], read[-200:])  # no rejected draft left


def test_the_recall_instruction_is_read_once_per_document(default_llm):
    """The recall task puts its instruction before the question (memorag.prompts), so the
    memory reads it after the document once; the next question reads only itself and the
    turn's end (what bench/bench_query_latency.py's clue seconds measure)."""
    from memorag.memory import Memory
    from memorag.prompts import prompts_for

    memory = Memory(llm=default_llm)
    memory.memorize(QUOTE_DOC)
    memory.recall_spans("Who kept the lamp?", max_new_tokens=24)
    reads: list[int] = []
    inner = default_llm._llm
    real_eval = inner.eval
    inner.eval = lambda tokens: (reads.append(len(tokens)), real_eval(tokens))[1]
    try:
        question = "What happened in 1903?"
        memory.recall_spans(question, max_new_tokens=24)
    finally:
        del inner.eval
    task = prompts_for("en").recall
    instruction = task[: task.index("{question}")]
    # the first read is the question and the turn's end, not the instruction before it
    assert reads and reads[0] <= default_llm.count_tokens(question) + 8 < default_llm.count_tokens(instruction), reads


def test_the_default_memory_reads_without_flash_attention_and_refuses_the_other_layout(default_llm, tmp_path):
    """The default memory runs with flash attention off (memorag.memory.MEMORY_FLASH_ATTN);
    its state reloads into the same setting with the same recall, and a model with flash
    attention on refuses it by name instead of reading a KV layout it cannot."""
    mem = Memory(n_ctx=2048)
    assert mem.llm.describe()["flash_attn"] is False
    mem.memorize(QUOTE_DOC)
    task = "Who kept the lamp of the Varrow lighthouse?"
    spans = mem.recall_spans(task)
    mem.save(tmp_path / "mem")
    with pytest.raises(StateError, match="saved with flash attention off"):
        Memory(llm=default_llm).load(tmp_path / "mem")
    again = Memory(n_ctx=2048)
    again.load(tmp_path / "mem")
    assert again.recall_spans(task) == spans and spans


def test_a_short_quote_no_top_token_continues_goes_on_in_the_models_own_tokens(default_llm):
    """QUOTE_FOLLOW_DOCUMENT with the real tokenizer: after "David O" the model wants "." (as
    in "David O. Russell"), the document says "David Owen Russell"; the constraint takes the
    document's next token in this model's vocabulary instead of ending the reply."""
    import numpy as np

    doc = "Films\nDavid Owen Russell (born August 20, 1958) is an American film director."
    c = default_llm.quote_constraint(doc)
    for tok in default_llm._tokenize("David O", add_bos=False):
        c.advance(tok)
    assert c.line == b"David O"
    scores = np.full(default_llm._llm.n_vocab(), -50.0, dtype=np.float32)
    stop = default_llm._tokenize(".", add_bos=False)[0]
    scores[stop] = 50.0  # the model wants "." and nothing else in its top tokens continues
    token = c.choose(scores)
    assert c.forced == 1 and not c.is_end(token)
    c.advance(token)
    assert c.line.startswith(b"David Ow") and c.in_source(c.line)


def test_the_contrast_reads_the_null_task_and_puts_the_question_back(default_llm, monkeypatch):
    """QUOTE_CONTRAST on the real model: at a quote's start the look-ahead's runs are scored
    after the recall task for no question, and the KV cache is then the question's prompt and
    the reply again (so what follows is decoded after the question, not the null task)."""
    import memorag.quoting as quoting

    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    task = "\n\nQuote the sentence that says who kept the lamp, one per line.\n\nQuestion: Who kept the lamp?"
    null = "\n\nQuote the sentence that says who kept the lamp, one per line.\n\nQuestion: "
    seen: list[list[list[int]]] = []
    original = quoting.QuoteConstraint.choose_looking_ahead

    def spy(self, scores, peek, width, depth=None, contrast=None):
        if contrast is not None:
            def recording(runs):
                out = contrast(runs)
                seen.append(runs)
                assert len(out) == len(runs) and all(v <= 0 for v in out)  # log-probabilities
                return out
            return original(self, scores, peek, width, depth, recording)
        return original(self, scores, peek, width, depth, contrast)

    monkeypatch.setattr(quoting.QuoteConstraint, "choose_looking_ahead", spy)
    monkeypatch.setattr(quoting, "QUOTE_CONTRAST", 1.0)
    out = "".join(default_llm.continue_quotes(task, max_new_tokens=40, null_suffix=null))
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert lines and all(line in QUOTE_DOC for line in lines), out
    assert seen  # the contrast was read at the first quote's start
    prompt = default_llm._prefix_ids + default_llm._suffix_ids(task)
    held = default_llm._llm.input_ids[: default_llm._llm.n_tokens].tolist()
    assert held[: len(prompt)] == prompt  # the question's prompt, not the null task's
    monkeypatch.setattr(quoting, "QUOTE_CONTRAST", 0.0)
    seen.clear()
    "".join(default_llm.continue_quotes(task, max_new_tokens=40, null_suffix=null))
    assert not seen  # off: no contrast is read


def test_the_same_question_gets_the_same_quotes_whatever_was_asked_before(default_llm, monkeypatch):
    """The question is read in one batch of its own every time (LlamaCppLLM._read_task), so
    asking it again, right away or after another question, gives the memory bit-identical
    logits at the reply's start and the same quotes. (Reusing the cached question and reading
    only its last token gave logits up to a third of a unit apart on this CPU, enough to flip
    a near-tie between two quotes.)"""
    import numpy as np

    import memorag.quoting as quoting

    memory = Memory(llm=default_llm)
    memory.memorize(QUOTE_DOC)
    firsts: list[np.ndarray] = []
    original = quoting.QuoteConstraint.choose_looking_ahead

    def spy(self, scores, peek, width, depth=None, contrast=None):
        if self.lines == 0 and not self.line:
            firsts.append(np.array(scores, dtype=np.float64))
        return original(self, scores, peek, width, depth, contrast)

    monkeypatch.setattr(quoting.QuoteConstraint, "choose_looking_ahead", spy)
    question, other = "Who kept the lamp, and for how long?", "What happened in 1903?"
    runs = []
    for q in (question, question, other, question):
        firsts.clear()
        spans = memory.recall_spans(q, max_new_tokens=32)
        runs.append((spans, firsts[0]))
    (a, la), (b, lb), (_, lo), (c, lc) = runs
    assert a == b == c
    assert np.array_equal(la, lb) and np.array_equal(la, lc)
    assert not np.array_equal(la, lo)  # another question: other logits


def test_quotes_come_from_the_source_given_not_only_the_text_read(default_llm, monkeypatch):
    """continue_quotes(source=...): the constraint is built over that text, which may go on
    where the memorized text does not (the whole document beside the extract the memory read),
    and every line is a piece of it."""
    default_llm.prefill([{"role": "system", "content": "You remember documents."},
                         {"role": "user", "content": "Document:\n" + QUOTE_DOC}])
    source = QUOTE_DOC.replace("Edda Quill kept its lamp", "Edda Quill tended its light")
    built: list[str] = []
    real = default_llm.quote_constraint
    monkeypatch.setattr(default_llm, "quote_constraint", lambda text, min_words=4: (built.append(text),
                                                                                    real(text, min_words))[1])
    task = "\n\nQuote the sentence that says who kept the lamp and for how long, one per line."
    out = "".join(default_llm.continue_quotes(task, max_new_tokens=40, source=source))
    assert built == [source]
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert lines and all(line in source for line in lines), out
    "".join(default_llm.continue_quotes(task, max_new_tokens=8))
    assert "Edda Quill kept its lamp" in built[-1]  # without a source: the memorized document

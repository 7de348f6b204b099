"""Pipeline pieces that need no LLM: generator adapters, prompt filling, argument checks."""

import pytest

from memorag.errors import InputError
from memorag.pipeline import _fill, as_generator


class OnlyGenerate:
    def __init__(self):
        self.prompts = []

    def generate(self, prompt):
        self.prompts.append(prompt)
        return "an answer"


def test_original_style_generate_only_generator_is_adapted():
    model = OnlyGenerate()
    gen = as_generator(model)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Evidence: x\nQuestion: y"}]
    assert "".join(gen.stream_chat(msgs)) == "an answer"
    assert "Question: y" in model.prompts[0]


def test_generator_without_methods_is_refused():
    with pytest.raises(InputError, match="generate"):
        as_generator(object())


def test_fill_leaves_other_braces_alone():
    tpl = 'Use {context} to answer {input}. JSON: {"a": 1}'
    assert _fill(tpl, context="C", input="Q") == 'Use C to answer Q. JSON: {"a": 1}'


class _FailingMemory:
    """Stands in for the memory model to show what happens when its pass fails midway."""

    def __init__(self, started):
        self.started = started

    def memorize(self, context, progress=False):
        self.started.wait(30)  # indexing is under way
        raise KeyboardInterrupt


def test_overlapped_indexing_matches_sequential_and_stops_when_memory_fails(embedder, sample_text, default_llm):
    import threading

    from memorag import MemoRAG

    pipe = MemoRAG(customized_gen_model=default_llm, mem_model_name_or_path="default", n_ctx=8192)
    pipe.memory.llm = default_llm
    doc = sample_text[:8000]
    seq = pipe.memorize(doc, progress=False)
    seq_chunks = [c.text for c in pipe.retriever.chunks]
    pipe.overlap_indexing = True
    ovl = pipe.memorize(doc, progress=False)
    assert [c.text for c in pipe.retriever.chunks] == seq_chunks
    assert ovl["memory_tokens"] == seq["memory_tokens"] and ovl["overlap_indexing"]

    # A failing memory pass stops the embedding thread at its next batch instead of waiting for it.
    started = threading.Event()
    batches = []
    real_embed = pipe.embedder.embed

    def slow_embed(texts, **kw):
        batches.append(len(texts))
        started.set()
        return real_embed(texts, **kw)

    pipe.embedder.embed = slow_embed
    pipe.retriever.batch_size = 1
    pipe.memory = _FailingMemory(started)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipe.memorize(sample_text, progress=False)
    finally:
        pipe.embedder.embed = real_embed
    n_passages = len(pipe.retriever._passages(pipe.retriever.chunks)[0])
    assert len(batches) < n_passages

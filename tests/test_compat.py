"""The original research API's calls (memorag.compat) on the scripted fakes: each does what
the original did on top of memorag's own memorize/ask/retrieve, or fails with one clear error.
(tests/test_original_api.py runs them once more on the default models.)"""

import pytest

from memorag import MemoRAG
from memorag.compat import OriginalAPI, PromptGenerator, as_generator
from memorag.errors import InputError, NotMemorizedError
from memorag.index.faiss_index import FaissIndex
from memorag.memory import Memory
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

DOC_A = ("Ottilie Marsh keeps the lighthouse key. The ferry to the island runs daily. "
         "The mill at the river ground grain for the whole village. ") * 4
DOC_B = ("Bertram Vale keeps the harbour ledger. The bakery opens at dawn. "
         "A storm closed the pass for a week in winter. ") * 4


def make_pipe(**kw) -> tuple[MemoRAG, ScriptedLLM]:
    llm = ScriptedLLM()
    return MemoRAG.from_parts(llm, Retriever(HashEmbedder(), FaissIndex, chunk_tokens=16), **kw), llm


def test_calling_the_pipeline_memorizes_a_new_context_once_then_answers_from_it():
    pipe, llm = make_pipe()
    assert isinstance(pipe, OriginalAPI)
    answer = pipe(DOC_A, "Who keeps the lighthouse key?")
    assert "Ottilie Marsh" in answer and llm.call_counts["prefill"] == 1
    pipe(DOC_A, "Does the ferry run daily?")
    assert llm.call_counts["prefill"] == 1  # the same context is not read again
    pipe(DOC_A, "Does the ferry run daily?", reset_each_call=True)
    assert llm.call_counts["prefill"] == 2
    assert "Bertram Vale" in pipe(DOC_B, "Who keeps the harbour ledger?")
    assert llm.call_counts["prefill"] == 3
    assert "Bertram Vale" in pipe(query="Who keeps the harbour ledger?")  # no context: the current document


def test_calling_without_a_context_before_any_document_is_a_clear_error():
    pipe, _ = make_pipe()
    with pytest.raises(NotMemorizedError, match="context="):
        pipe(query="Who keeps the key?")


def test_private_retrieve_returns_the_top_ret_hit_chunk_texts():
    pipe, _ = make_pipe(ret_hit=2)
    with pytest.raises(NotMemorizedError):
        pipe._retrieve("lighthouse key")
    pipe.memorize(DOC_A, progress=False)
    chunks = [c.text for c in pipe.retriever.chunks]
    texts = pipe._retrieve(["lighthouse key", "ferry island"])
    assert len(texts) == 2 and all(t in chunks for t in texts)
    assert any("lighthouse key" in t for t in texts)
    assert pipe._retrieve("mill river grain")[0] in chunks and "grain" in pipe._retrieve("mill river grain")[0]
    assert pipe._retrieve([]) == []


def test_mem_model_is_a_read_only_name_for_memory():
    pipe, _ = make_pipe()
    assert pipe.mem_model is pipe.memory
    with pytest.raises(AttributeError):
        pipe.mem_model = None


class GenerateOnly:
    def __init__(self, keywords: bool) -> None:
        self.keywords, self.prompts = keywords, []

    def generate(self, prompt, **kwargs):
        if kwargs and not self.keywords:
            raise TypeError("generate() takes no keyword arguments")
        self.prompts.append(prompt)
        return f"answer {len(self.prompts)}"


@pytest.mark.parametrize("keywords", [True, False])
def test_a_generate_only_custom_generator_answers_from_the_flattened_prompt(keywords):
    model = GenerateOnly(keywords)
    gen = as_generator(model)
    assert isinstance(gen, PromptGenerator)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question: y"}]
    assert gen.chat(messages) == "answer 1" and model.prompts[0] == "Be brief.\n\nQuestion: y"
    assert list(gen.stream_chat(messages)) == ["answer 2"]
    llm = ScriptedLLM()
    assert as_generator(llm) is llm  # a chat model is used as it is


def test_loading_arguments_are_refused_for_a_memory_given_as_an_object():
    memory = Memory(llm=ScriptedLLM())
    with pytest.raises(InputError, match=r"load_in_4bit cannot apply when the memory is given as an object"):
        MemoRAG(memory, HashEmbedder(), load_in_4bit=True)
    # the hub options are shared by the pipeline's models: with none loaded from a spec, none takes them
    with pytest.raises(InputError, match=r"cache_dir is for models fetched from the Hugging Face hub.*"
                                         r"memory given as an object; embedder given as an object"):
        MemoRAG(memory, HashEmbedder(), cache_dir="/tmp/models")
    with pytest.raises(InputError, match="n_ctx cannot apply when the memory LLM is given as an object"):
        MemoRAG(ScriptedLLM(), HashEmbedder(), n_ctx=4096)
    pipe = MemoRAG(memory, HashEmbedder())  # nothing to refuse: nothing is loaded either
    assert pipe.memory is memory

"""The default memory's window (registry.DEFAULT_MEMORY_WINDOW): which specs get it, how a
save made with a larger window is reopened, and the one clear error when it cannot fit."""

import pytest

from memorag.memory import Memory
from memorag.models.registry import DEFAULT_MEMORY_WINDOW, default_window
from memorag.pipeline import saved_memory_window, saved_pipeline_kwargs
from memorag.store import StateError
from memorag.testing.fakes import ScriptedLLM

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("spec", [None, "default", " Default ", "default-base", "base"])
def test_the_default_memory_gets_the_default_window(spec):
    assert default_window(spec) == DEFAULT_MEMORY_WINDOW


@pytest.mark.parametrize("spec", ["qwen2.5-1.5b", "model.gguf", "openai:gpt-4o-mini", "default+lora=x.gguf"])
def test_other_memories_keep_their_backends_window(spec):
    assert default_window(spec) is None


def test_a_save_dir_reopens_with_the_window_it_was_made_with():
    models = {"memory": {"spec": "default", "n_ctx": 32768}}
    assert saved_memory_window(models, {}) == {"n_ctx": 32768}
    # a window or another memory model chosen by the caller wins
    assert saved_memory_window(models, {"n_ctx": 4096}) == {}
    assert saved_memory_window(models, {"mem_model_name_or_path": "qwen2.5-1.5b"}) == {}
    assert saved_memory_window({"memory": {"spec": "default"}}, {}) == {}  # older manifests: nothing to reuse
    # other memory models always got the window they get now (and some loaders take none)
    assert saved_memory_window({"memory": {"spec": "scriptedspecs:llm", "n_ctx": 8192}}, {}) == {}


def test_a_memory_larger_than_the_window_is_refused_with_its_size(tmp_path):
    text = " ".join(f"Sentence {i} says the lighthouse keeper counted boats." for i in range(300))
    big = Memory(llm=ScriptedLLM(context_window=16384))
    big.memorize(text)
    big.save(tmp_path / "mem")
    held = big.state.prefix_tokens
    small = Memory(llm=ScriptedLLM(context_window=held - 1))
    small_before = small.state
    with pytest.raises(StateError) as err:
        small.load(tmp_path / "mem")
    assert f"holds {held} tokens" in str(err.value) and "n_ctx=16384" in str(err.value)
    assert small.state is small_before  # nothing half-loaded
    same = Memory(llm=ScriptedLLM(context_window=16384))
    same.load(tmp_path / "mem")
    assert same.state.prefix_tokens == held


class _AttentionLLM(ScriptedLLM):
    """A scripted model that reports a flash-attention setting, as a llama.cpp model does."""

    def __init__(self, flash_attn: bool, **kwargs):
        super().__init__(**kwargs)
        self.flash_attn = flash_attn

    def describe(self) -> dict:
        return {**super().describe(), "flash_attn": self.flash_attn}


def test_a_save_dir_reopens_with_the_flash_attention_it_was_made_with():
    saved_on = {"models": {"memory": {"spec": "default", "flash_attn": True}}}
    assert saved_pipeline_kwargs(saved_on, {})["enable_flash_attn"] is True
    assert saved_pipeline_kwargs(saved_on, {"mem_model_name_or_path": "default"})["enable_flash_attn"] is True
    # the caller's choice wins; another memory model is not given the saved one's setting
    assert saved_pipeline_kwargs(saved_on, {"enable_flash_attn": False})["enable_flash_attn"] is False
    assert "enable_flash_attn" not in saved_pipeline_kwargs(saved_on, {"mem_model_name_or_path": "qwen2.5-1.5b"})
    # a manifest that records none (an API or scripted memory) adds none
    assert "enable_flash_attn" not in saved_pipeline_kwargs({"models": {"memory": {"spec": "default"}}}, {})


def test_a_memory_saved_with_the_other_attention_is_refused_by_name(tmp_path):
    text = " ".join(f"Sentence {i} says the lighthouse keeper counted boats." for i in range(40))
    made = Memory(llm=_AttentionLLM(True))
    made.memorize(text)
    made.save(tmp_path / "mem")
    other = Memory(llm=_AttentionLLM(False))
    with pytest.raises(StateError) as err:
        other.load(tmp_path / "mem")
    assert "saved with flash attention on" in str(err.value) and "from_saved" in str(err.value)
    assert other.state is None  # nothing half-loaded
    same = Memory(llm=_AttentionLLM(True))
    same.load(tmp_path / "mem")
    assert same.state.prefix_tokens == made.state.prefix_tokens

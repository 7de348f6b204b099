"""The transformers backend on the CPU with a tiny randomly initialised model and a
tokenizer trained here (no hub): the KV memory survives save/load exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from memorag import MemoRAG  # noqa: E402
from memorag.errors import StateError  # noqa: E402
from memorag.llm.transformers_backend import TransformersLLM  # noqa: E402
from memorag.memory import Memory  # noqa: E402

CORPUS = [
    "The lighthouse keeper Edda Quill logged every ship in a green ledger.",
    "Tobias Quill founded the island school in 1880.",
    "Question answer document memory clue recall the of and a in to.",
] * 20
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    d = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token="<unk>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=fast.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=4096,
                      eos_token_id=fast.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


def test_kv_memory_round_trip_gives_identical_greedy_output(tiny_model_dir, tmp_path):
    llm = TransformersLLM(str(tiny_model_dir))
    mem = Memory(llm=llm)
    mem.memorize(" ".join(CORPUS[:30]))
    first = "".join(llm.continue_chat("\n\nQuestion: who founded the school?", max_new_tokens=12))
    assert first  # the random model says something
    # The task's tokens were cropped off: asking again gives the same continuation.
    assert "".join(llm.continue_chat("\n\nQuestion: who founded the school?", max_new_tokens=12)) == first
    info = mem.save(tmp_path / "mem")
    assert (tmp_path / "mem" / "kv_cache.safetensors").is_file()
    assert info["state"]["n_tokens"] == llm.prefix_tokens

    fresh = TransformersLLM(str(tiny_model_dir))
    Memory(llm=fresh).load(tmp_path / "mem")
    assert "".join(fresh.continue_chat("\n\nQuestion: who founded the school?", max_new_tokens=12)) == first

    (tmp_path / "mem" / "kv_cache.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(StateError, match="corrupt"):
        Memory(llm=fresh).load(tmp_path / "mem")


def test_pipeline_memorize_save_load_ask_on_transformers(tiny_model_dir, tmp_path):
    pipe = MemoRAG(mem_model_name_or_path=str(tiny_model_dir))
    pipe.memorize(" ".join(CORPUS), save_dir=tmp_path / "state", progress=False)
    before = "".join(pipe.memory.llm.continue_chat("\n\nrecall the ledger", max_new_tokens=10))
    again = MemoRAG.from_saved(tmp_path / "state")
    assert again.memory.llm.describe()["backend"] == "transformers"
    assert "".join(again.memory.llm.continue_chat("\n\nrecall the ledger", max_new_tokens=10)) == before
    streamed: list[str] = []
    ans = again.ask("Who kept the ledger?", max_new_tokens=8, on_token=streamed.append)
    assert "".join(streamed).strip() == ans.answer and ans.evidence

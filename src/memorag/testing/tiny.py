"""A tiny Hugging Face causal LM made on the spot (no download) for backend tests.

Two layers of width 64 with random weights and a byte-level BPE tokenizer trained on a
few sentences: it says nothing sensible, but it is a real transformers model with a chat
template, so the transformers backend's prefix state can be tested in seconds offline.
Needs the ``hf`` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The lighthouse keeper Edda Quill logged every ship in a green ledger.",
    "Tobias Quill founded the island school in 1880.",
    "Question answer document memory clue recall the of and a in to.",
] * 20
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_transformers_model(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model and its tokenizer into ``directory``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token="<unk>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(d)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=fast.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=4096,
                      eos_token_id=fast.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d

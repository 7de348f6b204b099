"""bench/attention_study.py's probe on the real default model: the attention weights it
computes from llama.cpp's flash-attention inputs are distributions over the cached tokens,
one per head and task token for every layer, and they put the most weight on the paragraph
a question is about."""

import importlib.util
from pathlib import Path

import numpy as np

PARAGRAPHS = [
    "The harbour town of Velmoor exports salted cod and amber to the northern isles.",
    "Miriam Oakes was a painter who moved to Velmoor in 1921 and married a ship's captain.",
    "The railway reached the valley in 1880, bringing coal from the eastern mines.",
    "A famous violinist, Tobias Renn, was born in the mountain village of Kessel.",
    "The cathedral's bells were cast in bronze by a foundry in Lyon.",
]


def _study():
    path = Path(__file__).resolve().parent.parent / "bench" / "attention_study.py"
    spec = importlib.util.spec_from_file_location("attention_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reads_each_layers_attention_and_it_finds_the_paragraph_asked_about():
    study = _study()
    probe = study.AttentionProbe()
    original = probe.install()
    try:
        from memorag.models.registry import load_llm

        llm = load_llm("default", n_ctx=1024)
    finally:
        probe._lc.llama_context_default_params = original
    llm.prefill([{"role": "user", "content": "Read this document.\n\n" + "\n\n".join(PARAGRAPHS)}])
    n = llm.prefix_tokens
    offsets, text = study.token_offsets(llm)
    owner = np.full(n, -1)
    for j, para in enumerate(PARAGRAPHS):
        start = text.find(para.encode())
        assert start >= 0
        owner[[i for i, o in enumerate(offsets) if start <= o < start + len(para.encode())]] = j

    suffix = llm._suffix_ids("Question: Who did the painter marry?")
    probe.active = True
    llm._llm.eval(suffix)
    probe.active = False
    llm._truncate_to_prefix()

    assert sorted(probe.layers) == list(range(24))  # Qwen2.5-0.5B has 24 layers
    for w in probe.layers.values():
        heads, tokens, cells = w.shape
        assert tokens == len(suffix) and cells >= n + len(suffix)
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-4)
        # causal: a task token gives no weight to the task tokens after it
        assert float(w[:, 0, n + 1 :].max()) < 1e-6
    later = sum(probe.layers[layer][:, :, :n].mean((0, 1)) for layer in range(12, 24))
    mass = [float(later[owner == j].sum()) for j in range(len(PARAGRAPHS))]
    assert int(np.argmax(mass)) == 1, mass

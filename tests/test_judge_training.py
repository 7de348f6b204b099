"""The query-likelihood judge adapter (`memorag train judge`): its data, its loss, and that
llama.cpp scores with it exactly as it was trained (adapter on the question only)."""

from __future__ import annotations

import pytest
from test_training import needs_data, needs_train

from memorag.errors import InputError
from memorag.eval.datasets import TUNING_LIMIT


@pytest.mark.unit
@needs_data
def test_judge_data_puts_each_gold_paragraph_beside_its_own_distractors(tmp_path):
    from memorag.eval.datasets import hotpotqa_records
    from memorag.training.judge import build_judge, read_judge, write_judge

    examples, split = build_judge(12, 4, negatives=3, seed=1)
    assert len(examples) == 16 and split["examples"] == 16
    assert all(1000 <= i < TUNING_LIMIT for i in split["hotpotqa_indices"])
    records = hotpotqa_records()
    for ex in examples:
        assert ex.gold and len(ex.passages) == len(ex.gold) + 3
        assert all(len(p) <= 700 for p in ex.passages)  # the judge's window (plans.likelihood_chars)
        if ex.source == "hotpotqa":
            q = records[int(ex.id.split("-")[1])]
            assert ex.question == q["question"].strip()
            paragraphs = dict(q["context"])
            support = [paragraphs[t][i].strip()[:60] for t, i in q["supporting_facts"]]
            # a gold passage is the judge's window of its paragraph that holds a supporting
            # sentence (a long paragraph is cut, as plans.paragraphs cuts it at run time)
            for i, passage in enumerate(ex.passages):
                assert any(s in passage for s in support) == (i in ex.gold)
    write_judge(examples, split, tmp_path)
    assert [e.to_json() for e in read_judge(tmp_path)] == [e.to_json() for e in examples]
    again, _ = build_judge(12, 4, negatives=3, seed=1)
    assert [e.to_json() for e in again] == [e.to_json() for e in examples]
    with pytest.raises(InputError):
        build_judge(5, 0, hotpotqa_range=(0, TUNING_LIMIT + 1))
    (tmp_path / "judge.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match="not a judge example"):
        read_judge(tmp_path)


@pytest.mark.unit
@needs_train
def test_listwise_loss_ranks_each_gold_above_the_distractors_only():
    import torch

    from memorag.training.judge import listwise_loss

    good = listwise_loss(torch.tensor([-1.0, -1.2, -2.0, -2.5]), [0, 1], 0.1)
    bad = listwise_loss(torch.tensor([-2.0, -1.2, -1.0, -2.5]), [0, 1], 0.1)
    assert float(good) < float(bad)
    # two gold passages do not compete: moving one gold past the other changes nothing
    a = listwise_loss(torch.tensor([-1.0, -1.1, -3.0]), [0, 1], 0.1)
    b = listwise_loss(torch.tensor([-1.1, -1.0, -3.0]), [0, 1], 0.1)
    assert float(a) == pytest.approx(float(b))


def _toy_judge_examples():
    from memorag.training.judge import JudgeExample

    passages = ["Varn Point lighthouse\nThe lighthouse at Varn Point was built in 1871 by Ada Crane.",
                "Tidewell\nTidewell is a fishing village known for its smoked herring.",
                "Marrow Hill\nMarrow Hill rises above the moor; sheep graze its slopes.",
                "Orla Finch\nOrla Finch painted the harbour at dawn for thirty years."]
    return [JudgeExample(id="t0", source="test", question="Who built the lighthouse at Varn Point?",
                         passages=passages, gold=[0]),
            JudgeExample(id="t1", source="test", question="What is Tidewell known for?",
                         passages=passages[1:] + passages[:1], gold=[0])]


@needs_train
def test_judge_adapter_trains_and_llama_cpp_scores_the_question_with_it(tiny, tiny_gguf, tmp_path):
    """A few steps raise the gold passage's score; exported, the adapter is applied by
    llama.cpp to the question only, and its scores are the trained model's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from memorag.llm.llamacpp import LlamaCppLLM
    from memorag.pipeline import load_judge
    from memorag.training.export import export_adapter, find_converter
    from memorag.training.judge import JudgeTrainConfig, encode_judge, passage_scores, train_judge

    find_converter()
    examples = _toy_judge_examples()
    config = JudgeTrainConfig(steps=6, questions_per_step=2, learning_rate=2e-2, warmup_steps=0, checkpoint_every=0)
    result = train_judge(examples, str(tiny), tmp_path / "out", config, log=lambda line: None)
    assert result.losses[-1] < result.losses[0]

    adapter = export_adapter(str(tiny), tmp_path / "out" / "adapter", tmp_path / "judge-lora.gguf", log=lambda line: None)
    base_gguf = tiny_gguf  # tiny converted by llama.cpp's converter (tests/conftest.py)
    judge = load_judge(f"{base_gguf}+lora={adapter}")
    plain = LlamaCppLLM(base_gguf, n_ctx=1024)
    recall_only = LlamaCppLLM(base_gguf, n_ctx=1024, adapter=adapter)  # a memory's adapter: not for judging

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), tmp_path / "out" / "adapter").eval()
    ex = examples[0]
    encs = [encode_judge(tokenizer, ex, i) for i in range(len(ex.passages))]
    with torch.no_grad():
        trained = [float(s) for s in passage_scores(model, encs, tokenizer.eos_token_id)]

    def scores(llm):
        out = []
        for i in range(len(ex.passages)):
            lp = llm.continuation_logprobs(ex.messages(i), ex.question)
            out.append(sum(lp) / len(lp))
        return out

    judged, base = scores(judge), scores(plain)
    assert judged == pytest.approx(trained, abs=0.05)  # f16 GGUF against the fp32 model
    assert max(abs(a - b) for a, b in zip(judged, base)) > 0.2  # the adapter does act
    assert scores(recall_only) == pytest.approx(base, abs=1e-6)
    assert scores(judge) == pytest.approx(judged, abs=1e-6)  # no adapter-computed token reused across calls
    assert judge.describe()["adapter"]["tasks"] == ["judge"]

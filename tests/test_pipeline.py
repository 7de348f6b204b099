"""Pipeline pieces that need no LLM: generator adapters, prompt filling, argument checks.
(Overlapped indexing and failed memorizes: tests/test_unit_pipeline.py.)"""

import pytest

from memorag.errors import InputError
from memorag.pipeline import as_generator
from memorag.prompts import fill

pytestmark = pytest.mark.unit


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
    assert fill(tpl, context="C", input="Q") == 'Use C to answer Q. JSON: {"a": 1}'

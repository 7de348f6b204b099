"""``memorag eval --param NAME=VALUE``: query plan parameters for a run (issue 24), on the
scripted fakes: an override reaches the plan and changes its evidence, is recorded in the
results (and the resume key) only when given, and a bad one is one clear error before any
model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_unit_pipeline import DOC_A, Q_A

from memorag import MemoRAG
from memorag.config import PASSAGE_CHARS
from memorag.errors import InputError
from memorag.eval.methods import MethodRunner, method_plans
from memorag.eval.runner import run
from memorag.index.faiss_index import FaissIndex
from memorag.plans import check_plan_params, parse_plan_params
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

FAKES = {"mem_model": "scriptedspecs:windowed_llm", "gen_model": "scriptedspecs:llm", "ret_model": "scriptedspecs:embedder"}


def _pipe() -> MemoRAG:
    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM())
    pipe.memorize(DOC_A, progress=False)
    return pipe


@pytest.mark.parametrize("method,param", [("likelihood", "likelihood_depth"), ("rerank", "rerank_depth")])
def test_an_override_changes_the_evidence_the_plan_finds(method, param):
    pipe = _pipe()
    plain = MethodRunner(pipe, top_k=3).retrieve(method, Q_A, DOC_A)
    assert len(plain.evidence) == 3 and plain.found.plan.judged
    shallow = MethodRunner(pipe, top_k=3, plan_params={param: 1}).retrieve(method, Q_A, DOC_A)
    # one first-round candidate: the judge reads one chunk, and only it is evidence
    top = pipe.retriever.search([Q_A], 1, lexical=True)[0]
    assert [h.chunk_id for h in shallow.found.hits] == [top.chunk_id] and shallow.evidence == [top.text]


def test_the_memorag_method_gets_the_overrides_as_ask_would():
    pipe = _pipe()
    runner = MethodRunner(pipe, top_k=3, plan_params={"likelihood_weight": 100.0, "follow_hops": 1})
    params = runner.parts("memorag").plan.params
    assert runner.parts("memorag").plan.name == pipe.query_plan == "recall"
    assert params.likelihood_weight == 100.0 and params.follow_hops == 1 and params.lexical is pipe.hybrid
    # the same setting through the Python API gives the same plan parameters
    same = MemoRAG.from_parts(pipe.memory, pipe.retriever, pipe.generator,
                              plan_params={"likelihood_weight": 100, "follow_hops": 1})
    asked, evaluated = same.answering().plan, runner.parts("memorag").plan
    assert (asked.name, asked.params) == (evaluated.name, evaluated.params)


def test_parsing_types_values_by_the_field():
    assert parse_plan_params(["rerank_depth=20", "likelihood_weight=1", "lexical=false", "rrf_k=none"]) == \
        {"rerank_depth": 20, "likelihood_weight": 1.0, "lexical": False, "rrf_k": None}
    checked = check_plan_params(["question", "rerank"], parse_plan_params(["rerank_depth=20", "lexical=false"]))
    assert checked == {"rerank_depth": 20, "lexical": False}
    assert method_plans(["dense", "hybrid", "memorag", "likelihood"], "recall") == ["question", "recall", "likelihood"]


@pytest.mark.parametrize("items,plans,message", [
    (["rerank_depth"], ["rerank"], "NAME=VALUE"),
    (["depth=3"], ["rerank"], "unknown plan parameter 'depth'"),
    (["rerank_depth=lots"], ["rerank"], "rerank_depth must be a whole number"),
    (["rerank_depth=2.5"], ["rerank"], "rerank_depth must be a whole number"),
    (["rerank_depth=0"], ["rerank"], "rerank_depth must be >= 1"),
    (["rerank_weight=nan"], ["rerank"], "rerank_weight must be a number"),
    (["min_coverage=1.5"], ["grounded"], "min_coverage must be between 0 and 1"),
    (["lexical=maybe"], ["question"], "lexical must be true or false"),
    (["rerank_depth=20"], ["question", "likelihood"], "rerank_depth is not read by plan 'question' or 'likelihood'"),
    (["rerank_depth=20"], [], "not read by any plan chosen"),
    (["language=zh"], ["question"], "language follows the document"),
    (["rerank_depth=2", "rerank_depth=3"], ["rerank"], "given twice"),
])
def test_bad_overrides_are_refused(items, plans, message):
    with pytest.raises(InputError, match=message):
        check_plan_params(plans, parse_plan_params(items))


def test_every_bad_entry_is_named_in_one_error():
    with pytest.raises(InputError) as err:
        check_plan_params("rerank", {"depth": 3, "rerank_weight": "high"})
    assert "depth" in str(err.value) and "rerank_weight must be a number" in str(err.value)


def _lines(path) -> int:
    return len(path.read_text().splitlines())


def test_eval_records_overrides_and_resumes_runs_made_without_them(tmp_path):
    out = tmp_path / "results.json"
    partial = out.with_suffix(".partial.jsonl")
    kw = dict(limit=2, haystack_tokens=600, questions_per_haystack=2, seed=1, top_k=2, retrieval_only=True,
              output=out, state_dir=tmp_path / "state", progress=False, chunk_tokens=64, **FAKES)
    methods = ["hybrid", "likelihood"]
    first = run("vartrack", methods, **kw)
    assert "plan_params" not in first["config"] and _lines(partial) == 4
    run("vartrack", methods, **kw)
    assert _lines(partial) == 4  # no --param: the same resume key, every row reused
    tuned = run("vartrack", methods, plan_params={"likelihood_depth": 1}, **kw)
    assert tuned["config"]["plan_params"] == {"likelihood_depth": 1}
    assert json.loads(out.read_text())["config"]["plan_params"] == {"likelihood_depth": 1}
    assert _lines(partial) == 8  # another setting: run again, not read from the rows above
    run("vartrack", methods, plan_params={"likelihood_depth": 1}, **kw)
    assert _lines(partial) == 8  # and it resumes under its own key


def test_a_bad_param_is_refused_before_any_model_loads(tmp_path):
    with pytest.raises(InputError, match="rerank_depth is not read"):
        run("vartrack", ["hybrid"], plan_params={"rerank_depth": 20}, output=tmp_path / "r.json",
            mem_model=str(tmp_path / "missing.gguf"), retrieval_only=True)
    assert not (tmp_path / "r.partial.jsonl").exists()


@pytest.mark.integration  # runs the CLI in subprocesses
@pytest.mark.parametrize("args,message", [
    (["--param", "rerank_depth=20"], "rerank_depth is not read by plan 'question'"),
    (["--param", "rerank_depth"], "NAME=VALUE"),
    (["--param", "no_such=1"], "unknown plan parameter 'no_such'"),
    (["--methods", "rerank", "--param", "rerank_depth=lots"], "rerank_depth must be a whole number"),
])
def test_the_cli_gives_one_clear_line(tmp_path, args, message):
    argv = ["vartrack", "--methods", "hybrid", "--retrieval-only", "--mem-model", str(tmp_path / "missing.gguf"),
            "--output", str(tmp_path / "r.json"), *args]
    proc = subprocess.run([sys.executable, "-m", "memorag.cli", "eval", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_eval_replays_the_clues_of_a_stored_run(tmp_path):
    kw = dict(limit=2, haystack_tokens=600, questions_per_haystack=2, seed=1, top_k=2, retrieval_only=True,
              state_dir=tmp_path / "state", progress=False, chunk_tokens=64, **FAKES)
    made = run("vartrack", ["grounded"], output=tmp_path / "made.json", **kw)
    rows = made["questions"]
    stored = {"config": made["config"], "questions": [
        {**r, "method": "memorag+answer", "clues": [f"replayed clue for {r['id']}"]} for r in rows]}
    (tmp_path / "stored.json").write_text(json.dumps(stored))
    replayed = run("vartrack", ["grounded", "clues"], output=tmp_path / "replayed.json",
                   clues_from=tmp_path / "stored.json", **kw)
    assert replayed["config"]["clues_from"]["method"] == "memorag+answer"
    for r in replayed["questions"]:  # the stored lines, not the memory's own, went to both plans
        assert r["clues"] == [f"replayed clue for {r['id']}"]
    assert all(r["clues"] != [f"replayed clue for {r['id']}"] for r in rows)
    with pytest.raises(InputError, match="no rows of method 'memorag'"):
        run("vartrack", ["grounded"], output=tmp_path / "x.json", clues_from=tmp_path / "stored.json",
            clues_method="memorag", **kw)
    with pytest.raises(InputError, match="has no memorag\\+answer clues for 2 of these questions"):
        run("vartrack", ["grounded"], output=tmp_path / "x.json", clues_from=tmp_path / "stored.json",
            **{**kw, "seed": 2})


def test_eval_answers_from_excerpts_when_asked(tmp_path):
    kw = dict(limit=2, haystack_tokens=600, questions_per_haystack=2, seed=1, top_k=2, output=tmp_path / "r.json",
              state_dir=tmp_path / "state", progress=False, chunk_tokens=64, **FAKES)
    with pytest.raises(InputError, match="--retrieval-only generates nothing"):
        run("vartrack", ["hybrid"], retrieval_only=True, evidence="excerpts", **kw)
    with pytest.raises(InputError, match="evidence must be one of chunks, excerpts"):
        run("vartrack", ["hybrid"], evidence="sentences", **kw)
    result = run("vartrack", ["hybrid"], evidence="excerpts", **kw)
    assert result["config"]["evidence"] == "excerpts" and result["methods"]["hybrid"]["n"] == 2
    # the default reading (lead) is recorded when answers are made; whole chunks, the reading of
    # runs made before the option, and a retrieval-only run (nothing read) record none
    # recorded with its width, so a run is never resumed with another
    assert run("vartrack", ["hybrid"], **{**kw, "output": tmp_path / "d.json"})["config"]["evidence"] == \
        f"lead:{PASSAGE_CHARS}"
    assert run("vartrack", ["hybrid"], evidence="lead:600",
               **{**kw, "output": tmp_path / "w.json"})["config"]["evidence"] == "lead:600"
    with pytest.raises(InputError, match="takes no width"):
        run("vartrack", ["hybrid"], evidence="chunks:600", **kw)
    # the default spelled out is the default: allowed with --retrieval-only
    assert "evidence" not in run("vartrack", ["hybrid"], retrieval_only=True, evidence=f"lead:{PASSAGE_CHARS}",
                                 **{**kw, "output": tmp_path / "r.json"})["config"]
    assert "evidence" not in run("vartrack", ["hybrid"], evidence="chunks", **{**kw, "output": tmp_path / "c.json"})["config"]
    assert "evidence" not in run("vartrack", ["hybrid"], retrieval_only=True, **{**kw, "output": tmp_path / "o.json"})["config"]


def test_max_haystacks_reports_the_first_haystacks_of_a_longer_run(tmp_path):
    """A long run cut short: --max-haystacks evaluates only its first haystacks and reuses
    their rows, because the haystacks (and the resume key) stay those of the whole run."""
    out = tmp_path / "results.json"
    partial = out.with_suffix(".partial.jsonl")
    kw = dict(limit=4, haystack_tokens=600, questions_per_haystack=2, seed=1, top_k=2, retrieval_only=True,
              output=out, state_dir=tmp_path / "state", progress=False, chunk_tokens=64, **FAKES)
    first = run("vartrack", ["hybrid"], max_haystacks=1, **kw)
    assert first["haystacks_evaluated"] == 1 and len(first["questions"]) == 2 and _lines(partial) == 2
    whole = run("vartrack", ["hybrid"], **kw)
    assert "haystacks_evaluated" not in whole and len(whole["questions"]) == 4
    assert _lines(partial) == 4  # the first haystack's rows were reused, the second's added
    again = run("vartrack", ["hybrid"], max_haystacks=1, **kw)
    assert _lines(partial) == 4 and {r["id"] for r in again["questions"]} == {r["id"] for r in first["questions"]}

"""bench/ scripts load real models when run, so the unit tier only reads them: importing
one must run nothing (every script keeps its work in ``main()`` behind a ``__main__``
guard), and the studies' shared results writer must write what their tables print."""

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))
TOP_LEVEL_OK = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def _is_path_setup(node: ast.stmt) -> bool:
    """``sys.path.insert(...)``: where a script finds its sibling or test helpers."""
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "sys.path.insert")


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_importing_a_bench_script_runs_nothing(script):
    body = ast.parse(script.read_text(encoding="utf-8")).body
    loose = [f"line {node.lineno}: {type(node).__name__}" for node in body
             if not isinstance(node, TOP_LEVEL_OK) and not _is_main_guard(node) and not _is_path_setup(node)
             and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert loose == []


def _load_bench(name: str):
    """A bench script as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def study_results():
    return _load_bench("study_results")


def test_study_results_json_holds_the_means_the_table_prints(study_results, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/entity_study.py", "run.json", "--out", "x.json"])
    means = study_results.mean_scores({"question": [(1.0, 1.0), (0.5, 0.0)], "clues": [(0.0, 0.0)], "empty": []}, 5)
    assert means == {"question": {"recall@5": 0.75, "all_gold@5": 0.5}, "clues": {"recall@5": 0.0, "all_gold@5": 0.0}}
    study_results.print_table(means, 5, header="plan")
    assert "| question | 0.750 | 0.500 |" in capsys.readouterr().out

    out = tmp_path / "study.json"
    args = argparse.Namespace(results=["run.json"], out=str(out))
    study_results.write_results(str(out), "entity_study", args, questions=2, k=5, variants=means)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["study"] == "entity_study" and written["variants"] == means and written["questions"] == 2
    assert written["command"] == "python bench/entity_study.py run.json --out x.json"
    assert written["args"]["results"] == ["run.json"]


def test_study_results_writes_nothing_without_out(study_results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_results.write_results("", "entity_study", object(), variants={})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def answer_diff():
    return _load_bench("answer_diff")


def _row(qid, method, ids):
    return {"id": qid, "method": method, "evidence_ids": ids, "recall": 0.5}


def test_answer_diff_answers_only_where_the_evidence_differs(answer_diff):
    rows = [_row("q1", "likelihood", [3, 1]), _row("q1", "memorag", [3, 1]),
            _row("q2", "likelihood", [3, 1]), _row("q2", "memorag", [1, 3]),  # same chunks, other order: a new prompt
            _row("q3", "likelihood", [2]), _row("q3", "memorag", [5]), _row("q3", "hybrid", [2])]
    pairs = answer_diff.differing(rows, "likelihood", "memorag")
    assert [(ra["id"], ra["method"], rb["method"]) for ra, rb in pairs] == \
        [("q2", "likelihood", "memorag"), ("q3", "likelihood", "memorag")]
    answered = [{"f1_likelihood": 0.5, "f1_memorag": 1.0}, {"f1_likelihood": 0.4, "f1_memorag": 0.0}]
    summary = answer_diff.summarize(answered, 3, "likelihood", "memorag")
    # the difference is over every question of the run: equal evidence adds zero
    assert summary["f1_memorag_minus_likelihood_over_all"] == round((0.5 - 0.4) / 3, 4)
    assert (summary["differing"], summary["better"], summary["worse"]) == (2, 1, 1)


def test_answer_diff_refuses_rows_it_cannot_compare(answer_diff):
    with pytest.raises(SystemExit, match="no memorag row"):
        answer_diff.differing([_row("q1", "likelihood", [1])], "likelihood", "memorag")
    with pytest.raises(SystemExit, match="no evidence_ids"):
        answer_diff.differing([_row("q1", "likelihood", None), _row("q1", "memorag", [1])], "likelihood", "memorag")


def _clue_row(qid, spans, quoted, recall):
    return {"id": qid, "spans": spans, "gold_quoted": quoted, "grounded": {"recall@5": recall, "all_gold@5": 0.0}}


def test_clue_study_diff_counts_questions_each_way(tmp_path):
    diff = _load_bench("clue_study_diff")
    before = [_clue_row("q1", ["a"], [True, False], 0.5), _clue_row("q2", ["b"], [False], 1.0),
              _clue_row("q3", ["c"], [False, False], 0.5)]
    after = [_clue_row("q1", ["a"], [True, False], 0.5), _clue_row("q2", ["x"], [True], 0.5),
             _clue_row("q3", ["d"], [False, False], 1.0)]
    counts = diff.compare(before, after)
    assert counts["same_spans"] == 1 and (counts["gold_quoted_better"], counts["gold_quoted_worse"]) == (1, 0)
    assert (counts["grounded_recall_better"], counts["grounded_recall_worse"]) == (1, 1)
    assert (counts["gold_quoted_before"], counts["gold_quoted_after"], counts["gold_sentences"]) == (1, 2, 5)
    with pytest.raises(SystemExit, match="different questions"):
        diff.compare(before, after[::-1])
    both = tmp_path / "two.json"
    both.write_text(json.dumps({"models": {"a": {"rows": before}, "b": {"rows": after}}}), encoding="utf-8")
    with pytest.raises(SystemExit, match="pick one with --model"):
        diff.rows_of(both, None)
    assert diff.rows_of(both, "b") == after


@pytest.mark.unit
def test_llama_build_bench_counts_the_objects_of_each_target():
    bench = _load_bench("bench_llama_build")
    log = "\n".join([
        "/usr/bin/c++ -O3 -o vendor/llama.cpp/src/CMakeFiles/llama.dir/llama.cpp.o -c /x/llama.cpp",
        "/usr/bin/c++ -o vendor/llama.cpp/common/CMakeFiles/llama-common.dir/arg.cpp.o -c /x/arg.cpp",
        "/usr/bin/c++ -o vendor/llama.cpp/common/CMakeFiles/llama-common.dir/chat.cpp.o -c /x/chat.cpp",
        "/usr/bin/cc -o vendor/llama.cpp/ggml/src/CMakeFiles/ggml-cpu.dir/ggml-cpu/ggml-cpu.c.o -c /x/ggml-cpu.c",
        "[ 50%] Linking CXX shared library bin/libllama.so",  # no object: not counted
    ])
    assert bench.objects_by_target(log) == {"ggml-cpu": 1, "llama": 1, "llama-common": 2}


def test_bridge_controls_put_a_memory_free_pick_second():
    """bench/bridge_controls.py: the memory-free controls make the memory_bridge move (a chunk
    outside the judge's top k put second) with chunks picked by search or by rare-word links
    from the judge's top sentence; a pick keeps the list's length and the judge's first."""
    controls = _load_bench("bridge_controls")
    assert controls.insert_second([4, 7, 1, 9, 2], 5) == [4, 5, 7, 1, 9]
    assert controls.insert_second([4, 7, 1], None) == [4, 7, 1]
    assert controls.first_outside([4, 8, 3], {4, 7}) == 8 and controls.first_outside([4], {4}) is None

    from memorag.index.faiss_index import FaissIndex
    from memorag.retrieval import Retriever
    from memorag.testing import HashEmbedder

    paras = ["Kiss and Tell is a 1945 comedy film starring Shirley Temple as Corliss Archer.",
             "Shirley Temple served as Chief of Protocol of the United States under Gerald Ford.",
             "The Lewiston Maineiacs were a junior ice hockey team in Maine.",
             "Ottilie Marsh keeps the lighthouse key for the ferry company."]
    r = Retriever(HashEmbedder(), FaissIndex, chunk_tokens=24)
    r.build("\n\n".join(paras))
    question = "What position did the actress who played Corliss Archer hold?"
    picks = controls.control_picks(r, question, [0])
    protocol = next(i for i, c in enumerate(r.chunks) if "Protocol" in c.text)
    assert picks["links"] == protocol  # "Shirley Temple" is rare and not a question word
    assert all(p != 0 for p in picks.values())  # never the judge's own top chunk
    # the memory's move replayed from recorded quotes, by the plan's own rule: a quote the
    # top sentence links to moves; one it does not link to moves nothing
    assert controls.memory_pick(r, question, [0], [paras[1]], 1) == protocol
    assert controls.memory_pick(r, question, [0], [paras[3]], 1) is None

"""Contract suites: what every vector index, embedder and LLM backend must do.

Each suite is a tuple of check functions that raise ``AssertionError`` (with a message)
when a backend breaks the contract. A test module parametrizes over checks and backends::

    @pytest.mark.parametrize("check", VECTOR_INDEX_CHECKS, ids=check_id)
    def test_faiss(check, tmp_path):
        check(FaissIndex, tmp_path)

and :func:`run_checks` runs a whole suite and returns the failures, e.g. to show that a
deliberately broken backend is caught. The suites need no pytest.

- ``VECTOR_INDEX_CHECKS``: ``check(make_index, tmp_path)``, ``make_index()`` -> a new empty index.
- ``EMBEDDER_CHECKS``: ``check(embedder)``.
- ``LLM_PREFIX_CHECKS``: ``check(llm, tmp_path)``, ``llm`` with no prefix yet; checks that
  need a second instance make one with ``llm.twin()``.
- ``EXTENDABLE_PREFIX_CHECKS``: ``check(llm, tmp_path)`` as ``LLM_PREFIX_CHECKS``, for an
  LLM that is also a :class:`memorag.llm.base.ExtendablePrefix`.
- ``JUDGE_CHECKS``: ``check(judge)``, a :class:`memorag.llm.base.Judge` (what the judging
  query plans score evidence with).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from memorag.errors import StateError

Check = Callable[..., None]


def check_id(check: Check) -> str:
    return check.__name__


def run_checks(checks: Iterable[Check], *args: Any) -> dict[str, str]:
    """Run every check with ``args``; return ``{check name: failure}`` for those that failed."""
    failures = {}
    for check in checks:
        try:
            check(*args)
        except AssertionError as exc:
            failures[check.__name__] = str(exc) or "assertion failed"
    return failures


def _raises(exc_type: type[BaseException], fn: Callable[[], Any], what: str) -> BaseException:
    try:
        fn()
    except exc_type as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the wrong type is the finding
        raise AssertionError(f"{what}: raised {type(exc).__name__} ({exc}), expected {exc_type.__name__}") from exc
    raise AssertionError(f"{what}: did not raise {exc_type.__name__}")


def _json_able(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable: {exc}") from None


# ------------------------------------------------------------------- vector index
def _unit_vectors(n: int, dim: int = 24, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _check_result(scores: np.ndarray, ids: np.ndarray, n_queries: int, k: int) -> None:
    assert scores.shape == (n_queries, k), f"scores shape {scores.shape}, expected {(n_queries, k)}"
    assert ids.shape == (n_queries, k), f"ids shape {ids.shape}, expected {(n_queries, k)} (pad to k with -1)"
    assert scores.dtype == np.float32, f"scores dtype {scores.dtype}, expected float32"
    assert ids.dtype == np.int64, f"ids dtype {ids.dtype}, expected int64"


def index_empty_search_is_padded(make_index: Callable[[], Any], tmp_path: Path) -> None:
    index = make_index()
    assert len(index) == 0, "a new index is not empty"
    scores, ids = index.search(_unit_vectors(2), 3)
    _check_result(scores, ids, 2, 3)
    assert (ids == -1).all() and np.isneginf(scores).all(), "an empty index must return only padding (-1, -inf)"


def index_ids_follow_insertion_order_across_adds(make_index: Callable[[], Any], tmp_path: Path) -> None:
    vectors = _unit_vectors(40)
    index = make_index()
    index.add(vectors[:25])
    index.add(vectors[25:])
    assert len(index) == 40, f"len is {len(index)} after adding 40 vectors"
    scores, ids = index.search(vectors[[0, 24, 25, 39]], 1)
    assert ids[:, 0].tolist() == [0, 24, 25, 39], f"each vector should find itself first, got {ids[:, 0].tolist()}"
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4), f"self-similarity should be 1, got {scores[:, 0]}"


def index_matches_exact_inner_product_search(make_index: Callable[[], Any], tmp_path: Path) -> None:
    vectors, queries = _unit_vectors(200), _unit_vectors(6, seed=1)
    index = make_index()
    index.add(vectors)
    scores, ids = index.search(queries, 10)
    _check_result(scores, ids, 6, 10)
    exact = queries @ vectors.T
    want = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert (ids == want).all(), "ids differ from exact inner-product ranking"
    assert np.allclose(scores, np.take_along_axis(exact, want, axis=1), atol=1e-4), "scores are not inner products"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores are not in non-increasing order"


def index_pads_when_k_exceeds_size(make_index: Callable[[], Any], tmp_path: Path) -> None:
    vectors = _unit_vectors(5)
    index = make_index()
    index.add(vectors)
    scores, ids = index.search(vectors[:2], 8)
    _check_result(scores, ids, 2, 8)
    for row in range(2):
        assert sorted(ids[row, :5].tolist()) == list(range(5)), f"row {row}: the first 5 ids should be all 5 vectors"
        assert (ids[row, 5:] == -1).all(), f"row {row}: padding ids should be -1, got {ids[row, 5:]}"
        assert np.isneginf(scores[row, 5:]).all(), f"row {row}: padding scores should be -inf, got {scores[row, 5:]}"


def index_save_load_round_trip(make_index: Callable[[], Any], tmp_path: Path) -> None:
    vectors, queries = _unit_vectors(60), _unit_vectors(3, seed=2)
    index = make_index()
    index.add(vectors)
    directory = Path(tmp_path) / "index-round-trip"
    directory.mkdir(parents=True, exist_ok=True)
    info = index.save(directory)
    _json_able(info, "save()'s description")
    again = make_index()
    again.load(directory, json.loads(json.dumps(info)))
    assert len(again) == 60, f"a loaded index holds {len(again)} vectors, expected 60"
    s1, i1 = index.search(queries, 7)
    s2, i2 = again.search(queries, 7)
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5), "search results changed after save/load"


def index_rejects_non_matrix_input(make_index: Callable[[], Any], tmp_path: Path) -> None:
    _raises(ValueError, lambda: make_index().add(np.zeros(8, dtype=np.float32)), "add(1-D array)")


VECTOR_INDEX_CHECKS: tuple[Check, ...] = (
    index_empty_search_is_padded, index_ids_follow_insertion_order_across_adds,
    index_matches_exact_inner_product_search, index_pads_when_k_exceeds_size, index_save_load_round_trip,
    index_rejects_non_matrix_input,
)


# ----------------------------------------------------------------------- embedder
TEXTS = ["The lighthouse keeper logged every ship in a green ledger.",
         "Tobias founded the island school in 1880.",
         "灯塔看守人把每一艘船都记在绿色的账本里。"]


def embedder_shape_dtype_and_norm(embedder: Any) -> None:
    for is_query in (False, True):
        v = embedder.embed(TEXTS, is_query=is_query)
        assert v.shape == (3, embedder.dimension), f"shape {v.shape}, expected {(3, embedder.dimension)}"
        assert v.dtype == np.float32, f"dtype {v.dtype}, expected float32"
        assert np.isfinite(v).all(), "non-finite values"
        norms = np.linalg.norm(v, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-3), f"rows are not L2-normalised: {norms}"


def embedder_deterministic_and_batch_independent(embedder: Any) -> None:
    a = embedder.embed(TEXTS)
    b = embedder.embed(TEXTS)
    assert np.allclose(a, b, atol=1e-6), "the same texts gave different vectors"
    alone = embedder.embed(TEXTS[1:2])
    assert np.allclose(alone[0], a[1], atol=1e-4), "a text's vector depends on the other texts in its batch"


def embedder_empty_input(embedder: Any) -> None:
    for is_query in (False, True):
        v = embedder.embed([], is_query=is_query)
        assert v.shape == (0, embedder.dimension), f"embed([]) has shape {v.shape}, expected (0, {embedder.dimension})"
        assert v.dtype == np.float32, f"embed([]) dtype {v.dtype}"


def embedder_related_texts_are_closer(embedder: Any) -> None:
    v = embedder.embed(["the green ledger of ships", *TEXTS[:2]], is_query=False)
    assert v[0] @ v[1] > v[0] @ v[2], "a text is closer to an unrelated text than to one sharing its words"


def embedder_tokenizer_and_description(embedder: Any) -> None:
    assert isinstance(embedder.max_tokens, int) and embedder.max_tokens > 0, "max_tokens must be a positive int"
    ids = embedder.tokenizer().encode(TEXTS[0]).ids
    assert len(ids) >= 5, f"the tokenizer found {len(ids)} tokens in a 10-word sentence"
    info = embedder.describe()
    _json_able(info, "describe()")
    assert info.get("spec") == embedder.spec and info.get("backend"), "describe() needs 'backend' and the 'spec'"


EMBEDDER_CHECKS: tuple[Check, ...] = (
    embedder_shape_dtype_and_norm, embedder_deterministic_and_batch_independent, embedder_empty_input,
    embedder_related_texts_are_closer, embedder_tokenizer_and_description,
)


# ---------------------------------------------------------------- LLM prefix state
DOC_A = ("The lighthouse keeper Edda Quill logged every ship in a green ledger. "
         "Her brother Tobias Quill founded the island school in 1880. ") * 3
DOC_B = "The baker Anselm Rook hid the brass ledger under the flour barrels in the old mill. " * 3
TASK = "\n\nQuestion: who kept the ledger?"
MAX_NEW = 12


def _prefix(doc: str) -> list[dict]:
    return [{"role": "system", "content": "You remember documents."},
            {"role": "user", "content": "Here is a document.\n\n" + doc}]


def _continue(llm: Any, task: str = TASK) -> str:
    return "".join(llm.continue_chat(task, max_new_tokens=MAX_NEW))


class _Stop(Exception):
    pass


def llm_no_prefix_until_prefill(llm: Any, tmp_path: Path) -> None:
    assert llm.prefix_tokens == 0, "a fresh instance already has a prefix"
    _raises(StateError, lambda: _continue(llm), "continue_chat before prefill")
    _raises(StateError, lambda: llm.save_prefix(Path(tmp_path)), "save_prefix before prefill")


def llm_prefill_counts_and_repeats(llm: Any, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    n = llm.prefill(_prefix(DOC_A), progress=lambda done, total: calls.append((done, total)))
    assert isinstance(n, int) and n == llm.prefix_tokens > 0, f"prefill returned {n}, prefix_tokens {llm.prefix_tokens}"
    assert n >= llm.count_tokens(DOC_A), "the prefix has fewer tokens than the document in it"
    assert calls and calls[-1][0] == calls[-1][1], f"progress did not end at done == total: {calls[-3:]}"
    first = _continue(llm)
    assert first.strip(), "greedy continuation is empty"
    assert _continue(llm) == first, "a task changed the prefix: the same task answered differently the second time"
    assert llm.prefix_tokens == n, "the task's tokens stayed in the prefix"


def llm_save_load_round_trip(llm: Any, tmp_path: Path) -> None:
    n = llm.prefill(_prefix(DOC_A))
    first = _continue(llm)
    directory = Path(tmp_path) / "prefix"
    directory.mkdir(parents=True, exist_ok=True)
    info = llm.save_prefix(directory)
    _json_able(info, "save_prefix()'s description")
    other = llm.twin()
    other.load_prefix(directory, json.loads(json.dumps(info)))
    assert other.prefix_tokens == n, f"loaded prefix has {other.prefix_tokens} tokens, saved {n}"
    assert _continue(other) == first, "generation after load_prefix differs from before save_prefix"
    assert _continue(llm) == first, "save_prefix changed the saved instance's prefix"


def llm_corrupt_saved_prefix_is_a_state_error(llm: Any, tmp_path: Path) -> None:
    llm.prefill(_prefix(DOC_A))
    directory = Path(tmp_path) / "corrupt"
    directory.mkdir(parents=True, exist_ok=True)
    info = llm.save_prefix(directory)
    for f in directory.iterdir():
        f.write_bytes(b"\x00 not a saved prefix")
    other = llm.twin()
    _raises(StateError, lambda: other.load_prefix(directory, info), "load_prefix of a corrupt file")
    assert other.prefix_tokens == 0, "a failed load left a prefix behind"


def llm_snapshot_restore_undoes_prefill(llm: Any, tmp_path: Path) -> None:
    n_a = llm.prefill(_prefix(DOC_A))
    out_a = _continue(llm)
    snapshot = llm.snapshot_prefix()
    assert snapshot is not None, "snapshot_prefix returned None while a prefix is held"
    llm.prefill(_prefix(DOC_B))
    assert llm.prefix_tokens != n_a or _continue(llm) != out_a or DOC_A == DOC_B, "prefill of B did not replace A"
    llm.restore_prefix(snapshot)
    assert llm.prefix_tokens == n_a and _continue(llm) == out_a, "restore_prefix did not bring back A"

    def interrupt(done: int, total: int) -> None:
        raise _Stop

    try:  # a prefill that fails midway, as Ctrl-C would
        llm.prefill(_prefix(DOC_B * 3), progress=interrupt)
    except _Stop:
        pass
    else:
        raise AssertionError("an exception from the progress callback did not propagate out of prefill")
    llm.restore_prefix(snapshot)
    assert llm.prefix_tokens == n_a and _continue(llm) == out_a, "restore_prefix after a failed prefill did not bring back A"
    llm.restore_prefix(None)
    assert llm.prefix_tokens == 0, "restore_prefix(None) left a prefix"
    _raises(StateError, lambda: _continue(llm), "continue_chat after restore_prefix(None)")
    assert llm.snapshot_prefix() is None, "snapshot_prefix without a prefix should be None"


def llm_twin_has_its_own_state(llm: Any, tmp_path: Path) -> None:
    llm.prefill(_prefix(DOC_A))
    out = _continue(llm)
    twin = llm.twin()
    assert twin.prefix_tokens == 0, "twin() copied the prefix"
    messages = [{"role": "user", "content": "Name a colour."}]
    streamed = "".join(twin.stream_chat(messages, max_new_tokens=MAX_NEW))
    assert streamed == twin.chat(messages, max_new_tokens=MAX_NEW), "stream_chat and chat disagree (greedy)"
    twin.prefill(_prefix(DOC_B))
    assert _continue(llm) == out, "using the twin changed the original's prefix state"


def llm_describe(llm: Any, tmp_path: Path) -> None:
    info = llm.describe()
    _json_able(info, "describe()")
    assert info.get("backend") and info.get("spec") == llm.spec, "describe() needs 'backend' and the 'spec'"
    assert isinstance(llm.context_window, int) and llm.context_window > 256, "context_window must be an int > 256"
    short = llm.count_tokens("one two three four")
    assert llm.count_tokens("one two three four " * 10) > short > 0, "count_tokens miscounts"


LLM_PREFIX_CHECKS: tuple[Check, ...] = (
    llm_no_prefix_until_prefill, llm_prefill_counts_and_repeats, llm_save_load_round_trip,
    llm_corrupt_saved_prefix_is_a_state_error, llm_snapshot_restore_undoes_prefill, llm_twin_has_its_own_state,
    llm_describe,
)


# ---------------------------------------------------------------- extendable prefix
MORE = " The ferry Saint Brendan carried the green ledger to the mainland in 1901."


def extend_before_prefill_is_a_state_error(llm: Any, tmp_path: Path) -> None:
    _raises(StateError, lambda: llm.extend_prefix(MORE), "extend_prefix before prefill")


def extend_reads_only_the_new_tokens(llm: Any, tmp_path: Path) -> None:
    from memorag.llm.base import ExtendablePrefix

    assert isinstance(llm, ExtendablePrefix), "needs extend_prefix(text, progress=...)"
    n = llm.prefill(_prefix(DOC_A))
    calls: list[tuple[int, int]] = []
    m = llm.extend_prefix(MORE, progress=lambda done, total: calls.append((done, total)))
    assert isinstance(m, int) and 0 < m <= llm.count_tokens(MORE) + 2, \
        f"extend_prefix read {m} tokens for a text of {llm.count_tokens(MORE)}: not only the new part"
    assert llm.prefix_tokens == n + m, f"prefix has {llm.prefix_tokens} tokens, expected {n} + {m}"
    assert calls and calls[-1][0] == calls[-1][1], f"progress did not end at done == total: {calls[-3:]}"
    first = _continue(llm)
    assert first.strip() and _continue(llm) == first, "a task on the extended prefix changed it"


def extend_is_undone_by_restore_and_kept_by_save(llm: Any, tmp_path: Path) -> None:
    n = llm.prefill(_prefix(DOC_A))
    before = _continue(llm)
    snapshot = llm.snapshot_prefix()
    llm.extend_prefix(MORE)
    extended, n_extended = _continue(llm), llm.prefix_tokens
    directory = Path(tmp_path) / "extended"
    directory.mkdir(parents=True, exist_ok=True)
    info = llm.save_prefix(directory)
    llm.restore_prefix(snapshot)
    assert llm.prefix_tokens == n and _continue(llm) == before, "restore_prefix did not undo extend_prefix"
    other = llm.twin()
    other.load_prefix(directory, json.loads(json.dumps(info)))
    assert other.prefix_tokens == n_extended and _continue(other) == extended, \
        "the saved extended prefix does not answer as it did before saving"


EXTENDABLE_PREFIX_CHECKS: tuple[Check, ...] = (
    extend_before_prefill_is_a_state_error, extend_reads_only_the_new_tokens,
    extend_is_undone_by_restore_and_kept_by_save,
)


# ---------------------------------------------------------------- judge
JUDGE_QUESTION = "Who logged every ship in a green ledger?"
JUDGE_RELEVANT = "The lighthouse keeper Edda Quill logged every ship in a green ledger."
JUDGE_UNRELATED = "The baker hid the brass kettle under the flour barrels in the old mill."


def _likelihood_messages(passage: str) -> list[dict]:
    return [{"role": "user", "content": f"Passage: {passage}\n\nWrite a question that this passage answers."}]


def _yes_no_messages(passage: str) -> list[dict]:
    return [{"role": "system", "content": "You decide whether a passage helps answer a question. Reply yes or no."},
            {"role": "user", "content": f"Question: {JUDGE_QUESTION}\n\nPassage: {passage}\n\n"
                                        "Does the passage help answer the question? Yes or no?"}]


def judge_is_a_judge(judge: Any) -> None:
    from memorag.llm.base import Judge

    assert isinstance(judge, Judge), "needs continuation_logprobs(messages, text) and yes_probability(messages)"


def judge_logprobs_are_per_token_and_repeatable(judge: Any) -> None:
    lp = judge.continuation_logprobs(_likelihood_messages(JUDGE_RELEVANT), JUDGE_QUESTION)
    assert isinstance(lp, list) and lp and all(isinstance(x, float) for x in lp), f"not a list of floats: {lp!r}"
    assert all(x <= 1e-6 for x in lp), f"a log-probability above 0: {max(lp)}"
    again = judge.continuation_logprobs(_likelihood_messages(JUDGE_RELEVANT), JUDGE_QUESTION)
    # Equal up to numeric noise: llama.cpp reusing its cached prompt evaluates the last tokens
    # in a smaller batch than the first time (another summation order over a quantized model
    # and an f16 KV cache); a few hundredths of a nat per token were seen on the default model.
    assert len(again) == len(lp) and all(abs(a - b) <= 0.1 for a, b in zip(again, lp)), \
        f"the same passage and question scored differently the second time: {lp} then {again}"


def judge_question_is_likelier_after_the_passage_that_answers_it(judge: Any) -> None:
    def mean(passage: str) -> float:
        lp = judge.continuation_logprobs(_likelihood_messages(passage), JUDGE_QUESTION)
        return sum(lp) / len(lp)

    assert mean(JUDGE_RELEVANT) > mean(JUDGE_UNRELATED), "the answering passage did not make the question likelier"


def judge_scores_many_passages_as_it_scores_each(judge: Any) -> None:
    """Scoring a question after many passages at once (``continuation_logprobs_many``, which
    the judging plans use when a judge has it) gives each passage the score it gets alone."""
    from memorag.llm.base import score_continuations

    passages = [JUDGE_UNRELATED, JUDGE_RELEVANT, "The ferry to the island leaves at noon on Sundays.",
                JUDGE_RELEVANT + " She kept it for forty years."]
    many = score_continuations(judge, [_likelihood_messages(p) for p in passages], JUDGE_QUESTION)
    alone = [judge.continuation_logprobs(_likelihood_messages(p), JUDGE_QUESTION) for p in passages]
    assert [len(x) for x in many] == [len(x) for x in alone], f"token counts differ: {many} vs {alone}"
    # Per token within the repeat check's noise; per passage (the mean the plans rank by)
    # closer still, and the same order.
    assert all(abs(a - b) <= 0.25 for x, y in zip(many, alone) for a, b in zip(x, y)), f"{many} vs {alone}"
    means = [sum(x) / len(x) for x in many]
    alone_means = [sum(x) / len(x) for x in alone]
    assert all(abs(a - b) <= 0.05 for a, b in zip(means, alone_means)), f"means {means} vs {alone_means}"
    assert sorted(range(len(means)), key=means.__getitem__) == sorted(range(len(means)), key=alone_means.__getitem__), \
        f"ranked differently together ({means}) and alone ({alone_means})"


def judge_yes_probability_is_a_probability_that_prefers_the_answer(judge: Any) -> None:
    relevant = judge.yes_probability(_yes_no_messages(JUDGE_RELEVANT))
    unrelated = judge.yes_probability(_yes_no_messages(JUDGE_UNRELATED))
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in (relevant, unrelated)), \
        f"yes_probability must be a float in [0, 1]; got {relevant!r}, {unrelated!r}"
    assert relevant > unrelated, f"P(yes) {relevant:.3f} for the answering passage, {unrelated:.3f} for an unrelated one"


JUDGE_CHECKS: tuple[Check, ...] = (
    judge_is_a_judge, judge_logprobs_are_per_token_and_repeatable,
    judge_question_is_likelier_after_the_passage_that_answers_it,
    judge_scores_many_passages_as_it_scores_each,
    judge_yes_probability_is_a_probability_that_prefers_the_answer,
)

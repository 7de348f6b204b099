"""The configuration tree (memorag.config.MemoragConfig): no option in it is silently ignored
(issue 22). The walk sets every leaf of the tree, one at a time, to a value other than its
default, builds each front-end that leaf configures from the tree (a MemoRAG, a Collection,
the service's Engine, the HTTP service's Settings and app, eval's runner keywords) on the
scripted fakes, and asserts the value reached the component, or that the tree refuses the
combination with one InputError naming the leaf's dotted path. A leaf added later without
a case here, or without wiring, fails the walk."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memorag import MemoRAG
from memorag.cli import app as cli_app
from memorag.collection import Collection
from memorag.config import (
    MemoragConfig,
    PipelineOptions,
    config_from_mapping,
    config_to_mapping,
    field_docs,
    load_config,
    with_values,
)
from memorag.engine import Engine
from memorag.errors import InputError
from memorag.index.faiss_index import FaissIndex
from memorag.models import registry
from memorag.plans import PLAN_PARAMS, PlanParams, plan_options, register_plan
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

HAS_SERVICE = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "httpx"))

BUILT_IN_PLANS = ("question", "likelihood", "recall", "rerank", "memorag", "clues", "grounded", "feedback")
LOADS: list[tuple[str, dict]] = []  # (spec, the loading options the loader got), in load order
INDEXES: dict[str, Any] = {}  # index spec's rest -> the factory its loader made


def _spy(ctx, question, clues, k, params):
    return ctx.retriever.search([question], k, lexical=params.lexical)


# a plan that reads every parameter, so each can be set and seen to reach the plan
register_plan("test-tree-spy", _spy, clues=("spans",), options=PLAN_PARAMS)


@pytest.fixture(autouse=True)
def walk_schemes(monkeypatch):
    """Model specs for the walk: fakes whose loaders record the options they were given."""
    for table in ("_LLM_SCHEMES", "_EMBEDDER_SCHEMES", "_INDEX_SCHEMES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))

    def llm(rest: str, *, n_ctx: int | None = None, flash_attn: bool | None = None, load_in_4bit: bool = False,
            cache_dir: str | None = None) -> ScriptedLLM:
        LOADS.append((f"walk:{rest}", {"n_ctx": n_ctx, "flash_attn": flash_attn, "load_in_4bit": load_in_4bit,
                                       "cache_dir": cache_dir}))
        return ScriptedLLM(spec=f"walk:{rest}", context_window=n_ctx or 8192)

    def embedder(rest: str, *, cache_dir: str | None = None) -> HashEmbedder:
        LOADS.append((f"walkemb:{rest}", {"cache_dir": cache_dir}))
        return HashEmbedder(int(rest), spec=f"walkemb:{rest}")

    def index(rest: str):
        return INDEXES.setdefault(rest, type(f"WalkIndex_{rest}", (FaissIndex,), {}))

    registry.register_llm("walk", llm)
    registry.register_embedder("walkemb", embedder)
    registry.register_index("walkidx", index)
    LOADS.clear()


# Every tree the walk builds starts here: fakes for every model.
BASE = {"models": {"memory": "walk:memory", "generator": "walk:generator", "embedder": "walkemb:64"}}


def _base(tmp_path: Path) -> MemoragConfig:
    return with_values(config_from_mapping(BASE), {"collection.store": str(tmp_path / "store")})


def _loaded(spec: str) -> dict:
    return [options for s, options in LOADS if s == spec][-1]


# ------------------------------------------------------------------ the front-ends, built from a tree
def build_pipeline(config: MemoragConfig, tmp_path: Path) -> MemoRAG:
    return MemoRAG(**config.pipeline_kwargs())


def build_collection(config: MemoragConfig, tmp_path: Path) -> Collection:
    return Collection(config.collection.store, **config.collection_kwargs())


def build_engine(config: MemoragConfig, tmp_path: Path) -> Engine:
    return Engine(config.collection.store, **config.engine_kwargs())


def build_app(config: MemoragConfig, tmp_path: Path, token: str | None = None):
    from memorag.service import Settings, create_app

    return create_app(Settings.from_config(config, token=token))


def collection_pipe(config: MemoragConfig, tmp_path: Path) -> MemoRAG:
    return build_collection(config, tmp_path).pipe


def engine_pipe(config: MemoragConfig, tmp_path: Path) -> MemoRAG:
    return build_engine(config, tmp_path)._answering().pipe


def service_pipe(config: MemoragConfig, tmp_path: Path) -> MemoRAG:
    return build_app(config, tmp_path).state.engine._answering().pipe


# The front-ends that make a pipeline from the tree's models, memory, retrieval, plan and
# evidence sections (eval's runner is walked below, by its keywords).
PIPELINE_FRONT_ENDS = {"MemoRAG": build_pipeline, "Collection": collection_pipe, "Engine": engine_pipe,
                       **({"service": service_pipe} if HAS_SERVICE else {})}


# ------------------------------------------------------------------ what each leaf does
# path -> (a value other than the default, what the built pipeline shows of it)
PIPELINE_CASES: dict[str, tuple[Any, Any]] = {
    "models.memory": ("walk:other-memory", lambda p: p.memory.llm.spec),
    "models.generator": ("walk:other-generator", lambda p: p.generator.spec),
    "models.embedder": ("walkemb:32", lambda p: p.embedder.spec),
    "models.judge": ("walk:judge", lambda p: getattr(p.judge, "spec", p.judge)),
    "models.n_ctx": (4096, lambda p: p.memory.llm.context_window),
    "models.flash_attn": (True, lambda p: _loaded(p.memory.llm.spec)["flash_attn"]),
    "models.load_in_4bit": (True, lambda p: _loaded(p.memory.llm.spec)["load_in_4bit"]),
    # every model loaded from a spec gets it: the memory, the embedder and the generator
    "models.cache_dir": ("/tmp/walk-hub", lambda p: {_loaded(s)["cache_dir"] for s in
                                                    (p.memory.llm.spec, p.embedder.spec, p.generator.spec)}),
    "memory.compression": ("gist", lambda p: p.memory.compression),
    "memory.beacon_ratio": (4.0, lambda p: p.memory.beacon_ratio),
    "memory.quote_recall": (False, lambda p: p.memory.quote_recall),
    "memory.quote_from": ("memory", lambda p: p.memory.quote_from),
    "retrieval.chunk_tokens": (128, lambda p: p.retriever.chunk_tokens),
    "retrieval.top_k": (5, lambda p: p.answering().top_k),
    "retrieval.index": ("walkidx:b", lambda p: p.retriever.index_factory.__name__),
    "retrieval.hybrid": (False, lambda p: p.answering().plan.params.lexical),
    "retrieval.overlap_indexing": (True, lambda p: p.overlap_indexing),
    "plan.name": ("rerank", lambda p: p.answering().plan.name),
    "evidence.render": ("excerpts", lambda p: type(p.answering().evidence).__name__.lower()),
    "evidence.cite": (True, lambda p: p.answering().prompt.cite),
    "evidence.order": ("rank", lambda p: p.answering().prompt.order),
}
# what the probe shows when it differs from the value set
PIPELINE_EXPECT = {"models.cache_dir": {"/tmp/walk-hub"}, "retrieval.index": "WalkIndex_b"}


def _service_probe(config: MemoragConfig, tmp_path: Path, monkeypatch) -> dict[str, Any]:
    """What the running service got: uvicorn's host and port, the body cap, the engine's
    options, whether it warmed up, how often it scans for jobs."""
    import uvicorn
    from fastapi.testclient import TestClient

    from memorag.service import BodySizeLimit, Settings, serve

    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw, app=app))
    serve(Settings.from_config(config, token="a-walk-token-of-32-characters-xx"))
    app = ran["app"]
    engine = app.state.engine
    scans: list[float] = []
    engine.watch_jobs = scans.append  # the lifespan asks the engine to scan every job_scan_seconds
    with TestClient(app):
        warmed = engine._warm_up is not None
    body = next(m for m in app.user_middleware if m.cls is BodySizeLimit)
    return {"host": ran["host"], "port": ran["port"], "max_body_mb": getattr(body, "kwargs", None) or body.options,
            "read_only": engine.read_only, "warm_up": warmed, "max_queue": engine.max_queue,
            "job_scan_seconds": scans[0]}


def _collections(config: MemoragConfig, tmp_path: Path) -> list[Collection]:
    """The collections the tree makes: Collection itself and the engine's answering one."""
    return [build_collection(config, tmp_path), build_engine(config, tmp_path)._answering()]


COLLECTION_CASES: dict[str, tuple[Any, Any]] = {
    "collection.store": ("other-store", lambda c: c.store.root.name),
    "collection.route_top": (3, lambda c: c.route_top),
    "collection.routing": ("top3-sum", lambda c: c.routing),
    "collection.max_memories": (7, lambda c: c.memories.max_documents),
    "collection.max_memory_bytes": (10**6, lambda c: c.memories.max_bytes),
}

SERVICE_CASES: dict[str, Any] = {
    "service.host": "0.0.0.0", "service.port": 8123, "service.max_body_mb": 1.0, "service.read_only": True,
    "service.warm_up": False, "service.max_queue": 5, "service.job_scan_seconds": 0.5,
}
SERVICE_EXPECT = {"service.max_body_mb": {"max_bytes": 1024 * 1024}}

# eval's runner keyword for each leaf it takes (the runner records each in its results)
EVAL_KEYWORDS = {
    "models.memory": "mem_model", "models.generator": "gen_model", "models.embedder": "ret_model",
    "models.judge": "judge", "models.n_ctx": "memory_window", "memory.compression": "compression",
    "memory.quote_recall": "quote_recall", "memory.quote_from": "quote_from", "retrieval.top_k": "top_k", "retrieval.chunk_tokens": "chunk_tokens",
    "plan.name": "query_plan", "evidence.render": "evidence", "evidence.order": "evidence_order",
}
# ... and those it refuses: options of a pipeline the eval runner cannot set
EVAL_REFUSED = ("models.flash_attn", "models.judge_states_mb", "models.load_in_4bit", "models.cache_dir", "memory.beacon_ratio",
                "retrieval.index", "retrieval.hybrid", "retrieval.overlap_indexing", "evidence.cite")


def _leaf_paths(cls: type = MemoragConfig, prefix: str = "") -> list[str]:
    """Every leaf of the tree by its dotted path, found by walking the dataclass fields."""
    out: list[str] = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(_leaf_paths(type(value), f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


LEAVES = _leaf_paths()


def _other_value(kind: str, default: Any) -> Any:
    """A valid value other than ``default`` for a PlanParams field of type ``kind``."""
    if kind == "bool":
        return not default
    if kind.startswith("int"):
        return 7 if default != 7 else 8
    return 0.5 if default != 0.5 else 0.25


# ------------------------------------------------------------------ the walk
@pytest.mark.parametrize("path", LEAVES)
def test_every_leaf_takes_effect_or_is_refused(path, tmp_path, monkeypatch):
    base = _base(tmp_path)
    section = path.split(".")[0]
    if path.startswith("plan.params."):
        check_plan_parameter(path.removeprefix("plan.params."), base, tmp_path)
    elif path in PIPELINE_CASES:
        value, probe = PIPELINE_CASES[path]
        expected = PIPELINE_EXPECT.get(path, value)
        config = with_values(base, {path: value})
        for front_end, build in PIPELINE_FRONT_ENDS.items():
            assert probe(build(base, tmp_path)) != expected, f"{path}: the probe cannot tell ({front_end})"
            assert probe(build(config, tmp_path)) == expected, f"{path} did not reach {front_end}'s pipeline"
        if path == "models.cache_dir":
            check_hub_option_refused(value, base, tmp_path)
        check_eval(path, value, base, config)
    elif path in COLLECTION_CASES:
        value, probe = COLLECTION_CASES[path]
        if path == "collection.store":
            value = str(tmp_path / value)
        expected = Path(value).name if path == "collection.store" else value
        config = with_values(base, {path: value})
        for before, after in zip(_collections(base, tmp_path), _collections(config, tmp_path), strict=True):
            assert probe(before) != expected and probe(after) == expected, path
    elif path == "collection.routing_index":
        check_routing_index(base, tmp_path)
    elif path == "models.judge_states_mb":
        check_judge_states_mb(base, tmp_path)
    elif section == "service":
        assert path in SERVICE_CASES, f"leaf {path!r} has no case in tests/test_config_tree.py"
        if not HAS_SERVICE:
            pytest.skip("the service needs fastapi, uvicorn and httpx")
        name = path.removeprefix("service.")
        expected = SERVICE_EXPECT.get(path, SERVICE_CASES[path])
        assert _service_probe(base, tmp_path, monkeypatch)[name] != expected
        assert _service_probe(with_values(base, {path: SERVICE_CASES[path]}), tmp_path, monkeypatch)[name] \
            == expected, f"{path} did not reach the service"
    else:
        pytest.fail(f"leaf {path!r} has no case in tests/test_config_tree.py: wire it and add one")


def check_plan_parameter(name: str, base: MemoragConfig, tmp_path: Path) -> None:
    path = f"plan.params.{name}"
    if name == "language":  # follows the document
        with pytest.raises(InputError, match=r"plan\.params\.language: .*language follows the document"):
            with_values(base, {"plan.name": "test-tree-spy", path: "zh"})
        return
    if name == "lexical":  # one setting, one place: retrieval.hybrid (walked above)
        with pytest.raises(InputError, match=r"plan\.params\.lexical: is set by retrieval\.hybrid"):
            with_values(base, {"plan.name": "test-tree-spy", path: False})
        return
    kind = {f.name: f.type for f in dataclasses.fields(PlanParams)}[name]
    value = _other_value(kind, getattr(PlanParams(), name))
    config = with_values(base, {"plan.name": "test-tree-spy", path: value})
    for front_end, build in PIPELINE_FRONT_ENDS.items():
        assert getattr(build(config, tmp_path).answering().plan.params, name) == value, \
            f"{path} did not reach the plan of {front_end}'s pipeline"
    assert config.eval_kwargs()["plan_params"] == {name: value}  # eval's runner gets it too
    # under a plan that does not read it, it is refused (rrf_k and the like are read by every plan)
    ignoring = next((p for p in BUILT_IN_PLANS if name not in plan_options(p)), None)
    if ignoring is not None:
        with pytest.raises(InputError, match=rf"plan\.params\.{name}: {name} is not read by plan '{ignoring}'"):
            with_values(base, {"plan.name": ignoring, path: value})


def check_hub_option_refused(value: Any, base: MemoragConfig, tmp_path: Path) -> None:
    """models.cache_dir is shared by the models fetched from the Hugging Face hub: with none
    of them (GGUF files, the packaged embedder) it would do nothing, and every front-end
    refuses it before loading a model (the GGUF files do not exist: a load would fail)."""
    config = with_values(base, {"models.memory": str(tmp_path / "memory.gguf"),
                                "models.generator": str(tmp_path / "generator.gguf"),
                                "models.embedder": "default", "models.cache_dir": value})
    LOADS.clear()
    for front_end, build in PIPELINE_FRONT_ENDS.items():
        with pytest.raises(InputError, match=r"cache_dir is for models fetched from the Hugging Face hub .*: "
                                             r"memory '.*memory\.gguf' \(a GGUF file read from disk\)"):
            build(config, tmp_path)
        assert not LOADS, f"{front_end} loaded a model before refusing models.cache_dir"


def check_eval(path: str, value: Any, base: MemoragConfig, config: MemoragConfig) -> None:
    if path in EVAL_REFUSED:
        with pytest.raises(InputError, match=f"memorag eval does not use {re.escape(path)}"):
            config.eval_kwargs()
        base.eval_kwargs()  # the default is no refusal
        return
    keyword = EVAL_KEYWORDS[path]
    assert base.eval_kwargs()[keyword] != value and config.eval_kwargs()[keyword] == value, path


def check_judge_states_mb(base: MemoragConfig, tmp_path: Path) -> None:
    """A single document's pipeline takes it; a store's front-ends keep no judge states
    (memorag.judge_states) and refuse a setting they would drop; eval refuses it too."""
    path = "models.judge_states_mb"
    config = with_values(base, {path: 7})
    assert build_pipeline(base, tmp_path).judge_states_mb != 7
    assert build_pipeline(config, tmp_path).judge_states_mb == 7
    for front_end, build in PIPELINE_FRONT_ENDS.items():
        if front_end == "MemoRAG":
            continue
        assert build(base, tmp_path).judge_states_mb == 0, front_end
        with pytest.raises(InputError, match="judge_states_mb"):
            build(config, tmp_path)
    check_eval(path, 7, base, config)


def check_routing_index(base: MemoragConfig, tmp_path: Path) -> None:
    """``ram`` pins a store to routing in RAM: the store records it, and the store then refuses
    a process that asks for another routing index. The default follows the store."""
    config = with_values(base, {"collection.routing_index": "qdrant::memory:"})
    if importlib.util.find_spec("qdrant_client") is not None:
        for coll in _collections(config, tmp_path):
            assert coll.routing_index is not None
        assert all(c.routing_index is None for c in _collections(with_values(base, {
            "collection.store": str(tmp_path / "other")}), tmp_path))
    else:  # it reached the store's routing, which needs Qdrant
        from memorag.errors import ModelNotFoundError

        with pytest.raises(ModelNotFoundError, match="qdrant"):
            build_collection(config, tmp_path)
        with pytest.raises(ModelNotFoundError, match="qdrant"):
            build_engine(config, tmp_path)._answering()


def test_the_walk_covers_every_leaf_and_the_options_of_the_front_ends():
    cased = {*PIPELINE_CASES, *COLLECTION_CASES, *SERVICE_CASES, "collection.routing_index", "models.judge_states_mb"}
    assert {p for p in LEAVES if not p.startswith("plan.params.")} == cased
    assert {p.removeprefix("plan.params.") for p in LEAVES if p.startswith("plan.params.")} == \
        {f.name for f in dataclasses.fields(PlanParams)}
    # every pipeline option (PipelineOptions) has its place in the tree
    placed = {"ret_hit": "retrieval.top_k", "question_weight": "plan.params.question_weight",
              "clue_weight": "plan.params.clue_weight", "hybrid": "retrieval.hybrid",
              "overlap_indexing": "retrieval.overlap_indexing", "query_plan": "plan.name",
              "follow_hops": "plan.params.follow_hops", "evidence": "evidence.render", "cite": "evidence.cite",
              "evidence_order": "evidence.order", "plan_params": "plan.params.rerank_depth",
              "judge_states_mb": "models.judge_states_mb"}
    assert set(placed) == {f.name for f in dataclasses.fields(PipelineOptions)}
    assert all(p in LEAVES for p in placed.values())
    # every leaf but the plan's parameters says in one line what it does
    assert all(doc and "\n" not in doc for _, _, _, doc in field_docs())


# ------------------------------------------------------------------ refusals
def test_an_unknown_key_is_refused_with_its_dotted_path():
    with pytest.raises(InputError, match=r"plan\.params\.rerank_dpth: unknown key \(choose from question_weight"):
        config_from_mapping({"plan": {"name": "rerank", "params": {"rerank_dpth": 20}}})
    with pytest.raises(InputError, match=r"retrieval\.topk: unknown key \(choose from chunk_tokens, top_k"):
        config_from_mapping({"retrieval": {"topk": 5}})
    with pytest.raises(InputError, match=r"modles: unknown key"):
        config_from_mapping({"modles": {}})


def test_a_wrong_type_or_range_is_refused_with_its_dotted_path():
    with pytest.raises(InputError, match=r"retrieval\.top_k: must be a whole number; got '5'"):
        config_from_mapping({"retrieval": {"top_k": "5"}})
    with pytest.raises(InputError, match=r"retrieval\.hybrid: must be true or false; got 1"):
        config_from_mapping({"retrieval": {"hybrid": 1}})
    with pytest.raises(InputError, match=r"plan\.params\.rerank_depth: must be a whole number; got 2\.5"):
        config_from_mapping({"plan": {"name": "rerank", "params": {"rerank_depth": 2.5}}})
    with pytest.raises(InputError, match=r"retrieval\.top_k: must be >= 1; got 0"):
        config_from_mapping({"retrieval": {"top_k": 0}})
    with pytest.raises(InputError, match=r"memory\.compression: must be one of extractive, gist, none"):
        config_from_mapping({"memory": {"compression": "zip"}})
    with pytest.raises(InputError, match=r"plan\.name: Unknown query plan 'recal'"):
        config_from_mapping({"plan": {"name": "recal"}})
    with pytest.raises(InputError, match=r"evidence\.render: 'chunks' takes no width"):
        config_from_mapping({"evidence": {"render": "chunks:400"}})
    assert config_from_mapping({"evidence": {"render": "lead:600"}}).pipeline_kwargs()["evidence"] == "lead:600"
    with pytest.raises(InputError, match=r"service: must be a table of settings"):
        config_from_mapping({"service": 8000})
    # every problem in one error
    with pytest.raises(InputError, match=r"retrieval\.top_k: .*; service\.port: must be a TCP port"):
        config_from_mapping({"retrieval": {"top_k": 0}, "service": {"port": 70000}})
    # what only a combination makes wrong
    with pytest.raises(InputError, match=r"memory\.beacon_ratio: .*memory\.compression is 'none'"):
        config_from_mapping({"memory": {"compression": "none", "beacon_ratio": 4}})
    # the tree made in code is checked the same way
    with pytest.raises(InputError, match=r"plan\.params\.rerank_depth: rerank_depth is not read by plan 'recall'"):
        MemoragConfig(plan=dataclasses.replace(MemoragConfig().plan, params=PlanParams(rerank_depth=20)))
    assert config_from_mapping({"memory": {"beacon_ratio": 4}}).memory.beacon_ratio == 4.0  # int -> float


def test_files_read_back_into_the_same_tree(tmp_path):
    config = config_from_mapping({"plan": {"name": "rerank", "params": {"rerank_depth": 20}},
                                  "retrieval": {"top_k": 5}, "service": {"port": 9000}})
    data = config_to_mapping(config)
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert load_config(tmp_path / "c.json") == config
    (tmp_path / "c.toml").write_text('[plan]\nname = "rerank"\n[plan.params]\nrerank_depth = 20\n'
                                     '[retrieval]\ntop_k = 5\n[service]\nport = 9000\n')
    assert load_config(tmp_path / "c.toml") == config
    (tmp_path / "bad.toml").write_text("[plan\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(InputError, match=r"\.toml or \.json"):
        load_config(tmp_path / "c.yaml")


def test_judge_none_means_no_judge(tmp_path):
    config = with_values(_base(tmp_path), {"models.judge": "none"})
    assert build_pipeline(config, tmp_path).judge is None
    assert engine_pipe(config, tmp_path).judge is None
    assert config.eval_kwargs()["judge"] == "none"


# ------------------------------------------------------------------ the command line reads the tree
def test_the_command_line_reads_a_config_file_and_its_flags_go_over_it(tmp_path, monkeypatch):
    import memorag.eval.runner as runner

    got: dict[str, Any] = {}

    def fake_run(dataset, methods, **kwargs):
        got.update(kwargs)
        return {"methods": {}}

    monkeypatch.setattr(runner, "run", fake_run)
    (tmp_path / "c.toml").write_text('[models]\nmemory = "walk:memory"\n[retrieval]\ntop_k = 4\n'
                                     '[plan]\nname = "rerank"\n[plan.params]\nrerank_depth = 20\n')
    cli = CliRunner()
    out = cli.invoke(cli_app, ["eval", "needle", "--config", str(tmp_path / "c.toml"), "--param",
                               "rerank_weight=3", "--output", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    assert got["mem_model"] == "walk:memory" and got["top_k"] == 4 and got["query_plan"] == "rerank"
    assert got["plan_params"] == {"rerank_depth": 20, "rerank_weight": 3.0}
    out = cli.invoke(cli_app, ["eval", "needle", "--config", str(tmp_path / "c.toml"), "--top-k", "6",
                               "--output", str(tmp_path / "r.json")])
    assert out.exit_code == 0 and got["top_k"] == 6  # a flag given goes over the file
    out = cli.invoke(cli_app, ["eval", "needle", "--output", str(tmp_path / "r.json")])
    assert out.exit_code == 0 and got["top_k"] == 5 and got["plan_params"] == {}  # no file: eval's own defaults
    (tmp_path / "bad.json").write_text(json.dumps({"retrieval": {"top_k": 0}}))
    out = cli.invoke(cli_app, ["ask", "--store", str(tmp_path), "q?", "--config", str(tmp_path / "bad.json")])
    assert out.exit_code == 1 and "retrieval.top_k: must be >= 1" in out.output
    (tmp_path / "hub.json").write_text(json.dumps({"models": {"cache_dir": "/x"}}))
    out = cli.invoke(cli_app, ["eval", "needle", "--config", str(tmp_path / "hub.json")])
    assert out.exit_code == 1 and "memorag eval does not use models.cache_dir" in out.output

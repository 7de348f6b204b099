"""The factory (memorag.models.registry) and the validated options (memorag.config): outside
backends by registration or dotted path, and arguments that cannot apply refused, not dropped."""

from __future__ import annotations

import pytest

from memorag import MemoRAG
from memorag.config import PipelineOptions
from memorag.errors import InputError
from memorag.index.faiss_index import FaissIndex
from memorag.memory import Memory
from memorag.models import registry
from memorag.models.registry import load_embedder, load_llm, make_index_factory
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

DOC = ("The lighthouse keeper Edda Quill kept the silver key in a blue porcelain jar. " +
       "Gulls circled the harbour while the boats came home with herring. " * 30)


@pytest.fixture
def schemes(monkeypatch):
    """Register test schemes for one test only."""
    for table in ("_LLM_SCHEMES", "_EMBEDDER_SCHEMES", "_INDEX_SCHEMES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    made: list[str] = []

    def scripted(rest: str, *, n_ctx: int | None = None) -> ScriptedLLM:
        made.append(rest)
        return ScriptedLLM(spec=f"scripted:{rest}", context_window=n_ctx or 8192)

    registry.register_llm("scripted", scripted)
    registry.register_embedder("hash", lambda rest: HashEmbedder(int(rest or 256), spec=f"hash:{rest}"))
    registry.register_index("flat", lambda rest: FaissIndex)
    return made


def test_the_embedder_loads_beside_the_llms_and_errors_still_surface(schemes, monkeypatch):
    """MemoRAG() loads the embedder in a thread while the LLMs load (start-up time:
    bench/bench_startup.py); the pipeline gets the same embedder either way, and a loader's
    error is raised from the constructor as it is, the memory's first when both fail."""
    import threading

    import memorag.pipeline
    from memorag.errors import ModelNotFoundError

    where: dict[str, str] = {}

    def embedder(rest: str) -> HashEmbedder:
        where["embedder"] = threading.current_thread().name
        if rest == "missing":
            raise ModelNotFoundError("no embedder called missing")
        return HashEmbedder(64, spec=f"threaded:{rest}")

    def memory(rest: str, *, n_ctx: int | None = None) -> ScriptedLLM:
        where["memory"] = threading.current_thread().name
        if rest == "missing":
            raise ModelNotFoundError("no memory called missing")
        return ScriptedLLM(spec=f"where:{rest}")

    registry.register_embedder("threaded", embedder)
    registry.register_llm("where", memory)
    pipe = MemoRAG("where:m", "threaded:e", index="flat")
    assert pipe.embedder.spec == "threaded:e" and pipe.memory.llm.spec == "where:m"
    assert where["embedder"].startswith("memorag-embedder") and where["memory"] == threading.current_thread().name
    with pytest.raises(ModelNotFoundError, match="no embedder called missing"):
        MemoRAG("where:m", "threaded:missing", index="flat")
    with pytest.raises(ModelNotFoundError, match="no memory called missing"):
        MemoRAG("where:missing", "threaded:missing", index="flat")
    monkeypatch.setattr(memorag.pipeline, "PARALLEL_LOAD", False)
    assert MemoRAG("where:m", "threaded:e", index="flat").embedder.spec == "threaded:e"
    assert where["embedder"] == threading.current_thread().name  # one after the other, in this thread


def test_registered_schemes_build_a_whole_pipeline_from_spec_strings(schemes, tmp_path):
    pipe = MemoRAG("scripted:memory", "hash:128", index="flat", n_ctx=4096)
    assert pipe.memory.llm.context_window == 4096  # n_ctx reached the registered loader
    assert pipe.embedder.dimension == 128 and isinstance(pipe.generator, ScriptedLLM)
    pipe.memorize(DOC, save_dir=tmp_path / "s", progress=False)
    answer = pipe.ask("Where did Edda Quill keep the silver key?").answer
    # from_saved rebuilds the same parts from the specs recorded in the manifest.
    again = MemoRAG.from_saved(tmp_path / "s", index="flat")
    assert again.memory.llm.spec == "scripted:memory" and again.embedder.spec == "hash:128"
    assert again.ask("Where did Edda Quill keep the silver key?").answer == answer
    assert schemes == ["memory", "memory"]


def test_an_option_a_registered_loader_does_not_take_is_refused(schemes):
    with pytest.raises(InputError, match="load_in_4bit cannot apply to 'scripted:x'"):
        load_llm("scripted:x", load_in_4bit=True)
    with pytest.raises(InputError, match="cache_dir"):
        load_embedder("hash:64", cache_dir="/tmp/hf")


def test_dotted_paths_name_outside_classes_and_functions():
    llm = load_llm("memorag.testing.fakes:ScriptedLLM")
    assert isinstance(llm, ScriptedLLM)
    with pytest.raises(InputError, match="n_ctx cannot apply"):
        load_llm("memorag.testing.fakes:ScriptedLLM", n_ctx=4096)
    assert isinstance(load_embedder("memorag.testing:HashEmbedder"), HashEmbedder)
    assert make_index_factory("memorag.index.faiss_index:FaissIndex") is FaissIndex
    with pytest.raises(InputError, match="Cannot import"):
        load_llm("memorag.no_such_module:Thing")
    with pytest.raises(InputError, match="Cannot import"):
        make_index_factory("memorag.index.faiss_index:NoSuchIndex")


def test_a_dotted_query_plan_is_imported_and_used():
    name = "memorag.plans:_question"
    pipe = MemoRAG.from_parts(ScriptedLLM(), registry_retriever(), query_plan=name)
    pipe.memorize(DOC, progress=False)
    assert pipe.query_plan == name and pipe.ask("Where is the silver key?").evidence
    assert pipe.ask("Where is the silver key?").clues.lines() == []  # plan "question"'s kinds came along
    with pytest.raises(InputError, match="which clue kinds"):  # a function that does not say is refused
        PipelineOptions(query_plan="memorag.plans:names_in")
    with pytest.raises(InputError, match="query plan"):
        PipelineOptions(query_plan="no_such_plan")


def registry_retriever():
    from memorag.retrieval import Retriever

    return Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64)


def test_backend_options_that_cannot_apply_are_refused(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InputError, match="load_in_4bit.*GGUF"):
        load_llm(str(gguf), load_in_4bit=True)
    with pytest.raises(InputError, match="flash_attn cannot apply.*transformers"):
        load_llm("hf:some/model", flash_attn=True)
    with pytest.raises(InputError, match="no_such_option cannot apply"):
        load_llm(str(gguf), no_such_option=1)


def test_n_ctx_reaches_an_openai_compatible_backend():
    pytest.importorskip("openai")
    agent = load_llm("openai:m@http://127.0.0.1:9/v1", n_ctx=2048)  # no request is made
    assert agent.context_window == 2048
    with pytest.raises(InputError, match="flash_attn, load_in_4bit cannot apply"):
        load_llm("openai:m@http://127.0.0.1:9/v1", flash_attn=True, load_in_4bit=True)


@pytest.mark.parametrize("kwargs,message", [
    ({"ret_hit": 0}, "ret_hit"), ({"ret_hit": "3"}, "ret_hit"), ({"ret_hit": True}, "ret_hit"),
    ({"question_weight": 0}, "question_weight"), ({"clue_weight": -1.0}, "clue_weight"),
    ({"clue_weight": float("nan")}, "clue_weight"), ({"hybrid": "yes"}, "hybrid"),
    ({"query_plan": "nonsense"}, "query plan"), ({"compression": "zip"}, "compression"),
])
def test_bad_pipeline_options_are_refused_before_any_model_loads(kwargs, message):
    # With the default spec strings, getting past validation would load the default models.
    with pytest.raises(InputError, match=message):
        MemoRAG(**kwargs)


def test_load_in_4bit_with_the_default_gguf_memory_is_refused_up_front():
    with pytest.raises(InputError, match="load_in_4bit"):
        MemoRAG(load_in_4bit=True)


@pytest.mark.parametrize("kwargs,message", [
    ({"compression": "zip"}, "compression"), ({"beacon_ratio": 0.5}, "beacon_ratio"),
    ({"beacon_ratio": "4"}, "beacon_ratio"),
])
def test_memory_checks_its_options_before_loading_a_model(kwargs, message):
    with pytest.raises(InputError, match=message):
        Memory("default", **kwargs)  # getting past the check would load the default model


def test_memory_refuses_loading_options_with_a_model_object():
    with pytest.raises(InputError, match="n_ctx cannot apply"):
        Memory(llm=ScriptedLLM(), n_ctx=4096)
    assert Memory(llm=ScriptedLLM(), beacon_ratio=8).beacon_ratio == 8  # the memory's own option applies


def test_memory_specs_name_the_base_the_shipped_adapter_or_an_adapter_file(tmp_path, monkeypatch):
    """``default-base`` is the untrained default memory; ``SPEC+lora=FILE`` adds an adapter
    file to a GGUF spec (refused for other backends, and for a missing file); the shipped
    adapter is checked against its sha256 before use."""
    from memorag.errors import ModelNotFoundError

    assert registry.split_adapter("default-base") == (registry.DEFAULT_MEMORY_MODEL, None)
    assert registry.split_adapter("qwen2.5-1.5b") == ("qwen2.5-1.5b", None)
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF")
    adapter = tmp_path / "recall.gguf"
    adapter.write_bytes(b"GGUF adapter")
    assert registry.split_adapter(f"{base}+lora={adapter}") == (str(base), adapter)
    with pytest.raises(ModelNotFoundError, match="adapter file not found"):
        registry.split_adapter(f"{base}+lora={tmp_path / 'missing.gguf'}")
    with pytest.raises(InputError, match="applies to a GGUF model only"):
        registry.split_adapter(f"openai:gpt-4o+lora={adapter}")
    if registry.DEFAULT_MEMORY_ADAPTER_SHA256:
        shipped = registry.shipped_adapter()
        assert shipped is not None and shipped.name == registry.DEFAULT_MEMORY_ADAPTER
        assert registry.split_adapter("default") == ("default", shipped)
        monkeypatch.setattr(registry, "DEFAULT_MEMORY_ADAPTER_SHA256", "0" * 64)
        with pytest.raises(ModelNotFoundError, match="sha256"):
            registry.shipped_adapter()


def test_the_judge_spec_is_the_memory_base_with_the_shipped_judge_adapter(monkeypatch):
    """``judge-0.5b``: the default memory's base weights with the judge adapter, which ships
    checked against its sha256; `default` as a judge means it."""
    from memorag.errors import ModelNotFoundError
    from memorag.pipeline import pipeline_models

    shipped = registry.shipped_judge_adapter()
    assert shipped is not None and shipped.name == registry.DEFAULT_JUDGE_ADAPTER
    assert registry.split_adapter(registry.DEFAULT_JUDGE) == (registry.DEFAULT_MEMORY_MODEL, shipped)
    assert registry._names_gguf(registry.DEFAULT_JUDGE)
    assert shipped != registry.shipped_adapter()  # not the memory's recall adapter
    assert pipeline_models("default", "default", judge="default")["judge"] == registry.DEFAULT_JUDGE
    monkeypatch.setattr(registry, "DEFAULT_JUDGE_ADAPTER_SHA256", "0" * 64)
    with pytest.raises(ModelNotFoundError, match="judge's adapter .* sha256"):
        registry.shipped_judge_adapter()


# ------------------------------------------------------------------ the Hugging Face download options
@pytest.fixture
def hub_schemes(schemes):
    """Beside ``schemes``: a loader standing for a Hugging Face hub model (it takes both hub
    options), one taking cache_dir only, and what each got."""
    got: dict[str, dict] = {}

    def hub_llm(rest: str, *, cache_dir: str | None = None, access_token: str | None = None) -> ScriptedLLM:
        got[f"hubllm:{rest}"] = {"cache_dir": cache_dir, "access_token": access_token}
        return ScriptedLLM(spec=f"hubllm:{rest}")

    def hub_embedder(rest: str, *, cache_dir: str | None = None) -> HashEmbedder:
        got[f"hubemb:{rest}"] = {"cache_dir": cache_dir}
        return HashEmbedder(int(rest), spec=f"hubemb:{rest}")

    registry.register_llm("hubllm", hub_llm)
    registry.register_embedder("hubemb", hub_embedder)
    return got


@pytest.mark.parametrize("spec,embedder,takes", [
    ("default", False, False), ("default-base", False, False), ("qwen2.5-1.5b", False, False),
    ("/models/any.gguf", False, False), ("gguf:/models/any", False, False),
    ("openai:gpt-4o@http://127.0.0.1:9/v1", False, False), ("deepseek:deepseek-chat", False, False),
    ("hf:Qwen/Qwen2.5-0.5B-Instruct", False, True), ("Qwen/Qwen2.5-0.5B-Instruct", False, True),
    ("memorag.testing.fakes:ScriptedLLM", False, False),  # a dotted class that does not take it
    ("default", True, False), ("minilm", True, False), ("e5-small", True, False),
    ("BAAI/bge-small-en-v1.5", True, True), ("memorag.testing:HashEmbedder", True, False),
])
def test_which_specs_take_the_hub_options(spec, embedder, takes):
    for option in registry.HUB_OPTIONS:
        assert registry.takes_hub_option(spec, option, embedder=embedder) is takes, (spec, option)


def test_a_local_transformers_dir_and_registered_loaders_take_what_they_accept(hub_schemes, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert registry.takes_hub_option(str(tmp_path), "cache_dir")  # loaded by transformers, which gets them
    assert registry.takes_hub_option("hubllm:m", "access_token")
    assert not registry.takes_hub_option("scripted:m", "cache_dir")  # its loader takes n_ctx only
    assert registry.takes_hub_option("hubemb:64", "cache_dir", embedder=True)
    assert not registry.takes_hub_option("hubemb:64", "access_token", embedder=True)
    with pytest.raises(InputError, match="not a hub option"):
        registry.takes_hub_option("default", "n_ctx")


@pytest.mark.parametrize("option", ["cache_dir", "access_token"])
def test_a_loader_that_cannot_use_a_hub_option_refuses_it(option, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for spec in ("default", "qwen2.5-1.5b", str(gguf)):  # refused before packaged weights are assembled
        with pytest.raises(InputError, match=f"{option} cannot apply to .*a GGUF model"):
            load_llm(spec, **{option: "x"})
    with pytest.raises(InputError, match=f"{option} cannot apply to 'default': it is an embedder packaged"):
        load_embedder("default", **{option: "x"})
    pytest.importorskip("openai")
    with pytest.raises(InputError, match=f"{option} cannot apply .*OpenAI-compatible server"):
        load_llm("openai:m@http://127.0.0.1:9/v1", **{option: "x"})


def test_a_pipeline_shares_the_hub_options_with_the_models_that_take_them(hub_schemes, tmp_path):
    # a hub embedder beside a memory that cannot take cache_dir: the embedder gets it, the memory is not refused it
    pipe = MemoRAG("scripted:m", "hubemb:64", index="flat", cache_dir=str(tmp_path))
    assert hub_schemes["hubemb:64"] == {"cache_dir": str(tmp_path)} and pipe.memory.llm.spec == "scripted:m"
    # a hub generator and judge beside a GGUF-less memory: each gets both
    pipe = MemoRAG("scripted:m", "hash:64", gen_model_name_or_path="hubllm:gen", judge="hubllm:judge",
                   index="flat", cache_dir="/c", access_token="t")
    assert hub_schemes["hubllm:gen"] == hub_schemes["hubllm:judge"] == {"cache_dir": "/c", "access_token": "t"}
    assert pipe.generator.spec == "hubllm:gen" and pipe.judge.spec == "hubllm:judge"


def test_a_hub_option_no_model_of_the_pipeline_takes_is_refused_before_any_load(hub_schemes):
    # the default models are GGUF files and a packaged embedder: getting past the check would load them
    with pytest.raises(InputError, match=r"cache_dir is for models fetched from the Hugging Face hub .*no model "
                                         r"loaded here takes it: memory 'default' \(a GGUF model memorag ships\); "
                                         r"embedder 'default' \(an embedder packaged with memorag\); generator "
                                         r"'qwen2\.5-1\.5b' \(a GGUF model memorag ships\)\. Drop it"):
        MemoRAG(cache_dir="/hub")
    with pytest.raises(InputError, match=r"cache_dir and access_token are for .*judge 'judge-0\.5b' \(a GGUF model memorag ships\)"):
        MemoRAG(judge="default", cache_dir="/hub", access_token="t")
    # one option is taken (the hub embedder's cache_dir), the other by nothing: that one is refused
    with pytest.raises(InputError, match=r"^access_token is for .*memory 'scripted:m' \(its loader does not take "
                                         r"it\); embedder 'hubemb:64'"):
        MemoRAG("scripted:m", "hubemb:64", index="flat", cache_dir="/hub", access_token="t")
    assert hub_schemes == {}  # nothing was loaded


def test_a_memorize_only_pipeline_keeps_the_hub_options_of_its_configuration(hub_schemes, tmp_path):
    """A store's memorize-only pipeline (`memorag add`, the service's builder) loads no
    generator or judge: the hub options meant for them are neither refused nor passed on."""
    from memorag.collection import Collection
    from memorag.engine import Engine

    coll = Collection(tmp_path / "store", build_only=True, mem_model_name_or_path="scripted:m",
                      ret_model_name_or_path="hash:64", gen_model_name_or_path="hubllm:gen", index="flat",
                      cache_dir="/hub")
    assert coll.pipe.embedder.spec == "hash:64" and "hubllm:gen" not in hub_schemes  # the generator is not loaded
    engine = Engine(tmp_path / "store2", mem_model="scripted:m", ret_model="hash:64", judge="hubllm:judge",
                    index="flat", cache_dir="/hub")
    try:
        builder = engine._building_collection()
        assert builder.pipe.judge is None and hub_schemes == {}
        assert engine._answering().pipe.judge.spec == "hubllm:judge"
        assert hub_schemes["hubllm:judge"] == {"cache_dir": "/hub", "access_token": None}
    finally:
        engine.close(wait=True)
    # the whole configuration is checked when the engine is made, before any model loads
    with pytest.raises(InputError, match=r"cache_dir is for .*memory 'scripted:m'"):
        Engine(tmp_path / "store3", mem_model="scripted:m", ret_model="hash:64", index="flat", cache_dir="/hub")


def test_a_gguf_scheme_names_a_gguf_file_by_any_name(tmp_path):
    from memorag.errors import ModelNotFoundError

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"GGUF")
    assert registry.resolve_gguf(f"gguf:{weights}") == weights
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        load_llm(f"gguf:{tmp_path / 'missing'}")

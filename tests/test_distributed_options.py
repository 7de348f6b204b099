"""`memorag add --ray` and add_on_ray refusals that need no Ray cluster (and no Ray at all).

Ray is an extra: without it the single-machine path works and --ray is one clear line
naming the install command. A Ray that cannot be imported is simulated by a package named
``ray`` on PYTHONPATH whose import fails, as a missing one's does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scriptedspecs import write_sources

from memorag.distributed import add_on_ray
from memorag.errors import InputError
from memorag.testing import ScriptedLLM

pytestmark = pytest.mark.unit

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FAKES = ["--mem-model", "scriptedspecs:llm", "--ret-model", "scriptedspecs:embedder", "--chunk-tokens", "32"]


def without_ray(tmp_path: Path) -> dict:
    broken = tmp_path / "no-ray"
    (broken / "ray").mkdir(parents=True)
    (broken / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\", name='ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken), str(SRC), str(TESTS)])}
    env.pop("MEMORAG_STORE", None)
    return env


def memorag(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memorag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.integration  # runs the CLI in subprocesses
def test_without_ray_the_ray_option_is_one_line_and_the_plain_add_works(tmp_path):
    src = write_sources(tmp_path / "src")
    env = without_ray(tmp_path)
    store = tmp_path / "S"
    refused = memorag("add", str(src), "--store", str(store), *FAKES, "--ray", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("error: Distributed memorize needs Ray, which is not installed: "
                                      "pip install 'memorag[ray]'.")
    assert not store.exists(), "the refused command made the store"
    plain = memorag("add", str(src), "--store", str(store), *FAKES, env=env)
    assert plain.returncode == 0, plain.stderr
    assert "2 added" in plain.stderr


@pytest.mark.integration  # runs the CLI in a subprocess
def test_workers_without_ray_is_refused(tmp_path):
    src = write_sources(tmp_path / "src")
    out = memorag("add", str(src), "--store", str(tmp_path / "S"), *FAKES, "--workers", "2", env=without_ray(tmp_path))
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: --workers needs --ray")
    assert not (tmp_path / "S").exists()


@pytest.mark.parametrize("given,message", [
    ({"mem_model_name_or_path": ScriptedLLM()}, "mem_model_name_or_path must be a spec string"),
    ({"workers": 0}, "workers must be at least 1"),
    ({"max_retries": -1}, "max_retries must be 0 or more"),
    ({"cpus_per_worker": 0}, "cpus_per_worker must be positive"),
])
def test_bad_options_are_refused_before_ray_or_the_store(tmp_path, given, message):
    src = write_sources(tmp_path / "src")
    with pytest.raises(InputError, match=message):
        add_on_ray(tmp_path / "S", [src], address="127.0.0.1:1", **given)
    assert not (tmp_path / "S").exists()


def test_the_driver_commits_a_workers_save_dir_only_if_every_file_verifies(tmp_path):
    """The worker and the driver's commit step, in this process (no Ray): a save dir changed
    after the worker wrote it is refused and nothing is committed; an intact one is committed."""
    from memorag.collection import Collection
    from memorag.distributed import DistributedAddResult, MemorizeWorker, _commit, plan_add
    from memorag.docstore import DocStore

    src = write_sources(tmp_path / "src")
    store = DocStore(tmp_path / "S")
    plan, _ = plan_add(store, [src])
    worker = MemorizeWorker({"mem_model_name_or_path": "scriptedspecs:llm",
                             "ret_model_name_or_path": "scriptedspecs:embedder", "retrieval_chunk_size": 32},
                            str(tmp_path / "checkpoints"), 128)
    run = store.new_staging("ray-test")
    result = DistributedAddResult()
    statuses: list[tuple[str, str]] = []
    for number, doc in enumerate(plan):
        done = worker.memorize(doc.text, str(run / f"{number:06d}"))
        if number == 0:  # a byte changed in transit on the shared file system
            chunks = next((run / f"{number:06d}" / "state").rglob("chunks*"))
            chunks.write_bytes(chunks.read_bytes() + b" ")
        _commit(store, doc, run / f"{number:06d}", done, result, lambda n, s: statuses.append((n, s)))
    tampered, intact = plan[0].name, plan[1].name
    assert list(result.failed) == [tampered]
    assert "does not match its recorded size/hash" in result.failed[tampered]
    assert result.added == [intact] and statuses == [(tampered, "failed"), (intact, "added")]
    assert [e["name"] for e in store.list()] == [intact]
    coll = Collection(store.root, mem_model_name_or_path="scriptedspecs:llm",
                      ret_model_name_or_path="scriptedspecs:embedder")
    assert coll.text(intact) == plan[1].text and coll.store.info(intact)["sha256"] == plan[1].sha256

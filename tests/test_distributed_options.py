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
])
def test_bad_options_are_refused_before_ray_or_the_store(tmp_path, given, message):
    src = write_sources(tmp_path / "src")
    with pytest.raises(InputError, match=message):
        add_on_ray(tmp_path / "S", [src], address="127.0.0.1:1", **given)
    assert not (tmp_path / "S").exists()

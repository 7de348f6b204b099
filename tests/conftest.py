"""Shared fixtures. Models are loaded once per session: loading is slow, using is not."""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.resources import files

import pytest

# Tests never reach a model hub (there is no network here): fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Memorize checkpoints (memorag.checkpoint) never go to the user's cache: a session dir for
# module- and session-scoped fixtures, and a dir of its own for each test (below).
_CHECKPOINTS = tempfile.mkdtemp(prefix="memorag-test-checkpoints-")
os.environ["MEMORAG_CHECKPOINT_DIR"] = _CHECKPOINTS


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CHECKPOINTS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _checkpoint_root(tmp_path_factory, monkeypatch):
    """Work a test interrupts on purpose must not be resumed by another test."""
    monkeypatch.setenv("MEMORAG_CHECKPOINT_DIR", str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session")
def sample_text() -> str:
    return files("memorag").joinpath("data/sample_pride_and_prejudice_ch1-3.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def embedder():
    from memorag.models.registry import load_embedder

    return load_embedder("default")


@pytest.fixture(scope="session")
def default_llm():
    from memorag.models.registry import load_llm

    return load_llm("default", n_ctx=8192)


def pytest_collection_modifyitems(config, items):
    # A test marked integration itself (its function, or a parametrize / fixture param) is
    # not a unit test even in a module marked unit: it starts processes, servers or an
    # embedded Qdrant, so it runs in the default suite but not in `-m unit`. pytest reads a
    # module's marks from the module node, shared by all its tests, so such a module's unit
    # mark moves onto each of its tests that stays unit.
    is_unit = {item: item.get_closest_marker("unit") is not None
               and not any(m.name == "integration" for m in item.own_markers) for item in items}
    for item in items:
        for node in item.listchain():
            node.own_markers[:] = [m for m in node.own_markers if m.name != "unit"]
    for item in items:
        if is_unit[item]:
            item.add_marker(pytest.mark.unit)
    # Tests that are neither unit (no model) nor e2e/slow (whole runs on the default models)
    # exercise one backend on a real model, or the processes and servers above: mark them so
    # `-m integration` selects them.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("unit", "e2e", "slow")):
            item.add_marker(pytest.mark.integration)

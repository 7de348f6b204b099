"""`--config FILE` on `memorag summarize` and `memorag ui`: the file's settings reach the
command, the flags given go over it, and a bad file is one clear error before anything
loads or starts. In process (typer's CliRunner), on the fakes of tests/scriptedspecs.py."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memorag import MemoRAG
from memorag.cli import CONFIG_ENV
from memorag.cli import app as cli_app

pytestmark = pytest.mark.unit

DOC = ("The keeper Edda Quill kept the silver key in a blue porcelain jar. "
       "Gulls circled the harbour while the boats came home with herring. ") * 20


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    pipe = MemoRAG("scriptedspecs:llm", "scriptedspecs:embedder", retrieval_chunk_size=32)
    pipe.memorize(DOC, save_dir=tmp_path / "doc", progress=False)
    return tmp_path / "doc"


def test_summarize_reads_a_config_file_and_its_flags_go_over_it(save_dir, tmp_path):
    cli = CliRunner()
    (tmp_path / "c.toml").write_text('[models]\ngenerator = "scriptedspecs:echo"\n[retrieval]\ntop_k = 1\n')
    out = cli.invoke(cli_app, ["summarize", str(save_dir), "--json", "--config", str(tmp_path / "c.toml")])
    assert out.exit_code == 0, out.output
    filed = json.loads(out.stdout)
    # the echo generator answers with the prompt it was sent: the file's generator answered
    assert filed["answer"].startswith("Evidence") and len(filed["evidence"]) == 1
    out = cli.invoke(cli_app, ["summarize", str(save_dir), "--json", "--config", str(tmp_path / "c.toml"),
                               "--top-k", "3"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["evidence"]) == 3  # the flag given goes over the file
    out = cli.invoke(cli_app, ["summarize", str(save_dir), "--json"])
    assert out.exit_code == 0, out.output
    plain = json.loads(out.stdout)  # no file: the command's own defaults (top_k 4, the memory's twin answers)
    assert len(plain["evidence"]) == 4 and not plain["answer"].startswith("Evidence")


def test_summarize_refuses_a_bad_config_file_before_loading_a_model(save_dir, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"retrieval": {"top_k": 0}}))
    out = CliRunner().invoke(cli_app, ["summarize", str(save_dir), "--config", str(tmp_path / "bad.json")])
    assert out.exit_code == 1 and "retrieval.top_k: must be >= 1" in out.output
    (tmp_path / "hub.json").write_text(json.dumps({"models": {"cache_dir": "/hub"}}))
    out = CliRunner().invoke(cli_app, ["summarize", str(save_dir), "--config", str(tmp_path / "hub.json")])
    assert out.exit_code == 1 and "cache_dir is for models fetched from the Hugging Face hub" in out.output


@pytest.fixture
def started(monkeypatch) -> dict:
    """What `memorag ui` would start Streamlit with (the process is not replaced)."""
    ran: dict = {}
    monkeypatch.setattr(os, "execve", lambda path, cmd, env: ran.update(cmd=cmd, env=env))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: object() if name == "streamlit" else find_spec(name, *args))
    monkeypatch.delenv("MEMORAG_STORE", raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    return ran


def test_ui_hands_its_config_file_to_the_demo_page(started, tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text(f'[models]\nmemory = "scriptedspecs:llm"\n[collection]\nstore = "{tmp_path / "S"}"\n')
    out = CliRunner().invoke(cli_app, ["ui", "--config", str(config), "--port", "8601"])
    assert out.exit_code == 0, out.output
    assert started["env"][CONFIG_ENV] == str(config.resolve()) and started["env"]["MEMORAG_STORE"] == str(tmp_path / "S")
    assert "8601" in started["cmd"]
    out = CliRunner().invoke(cli_app, ["ui", "--config", str(config), "--store", str(tmp_path / "T")])
    assert out.exit_code == 0 and started["env"]["MEMORAG_STORE"] == str(tmp_path / "T")  # the flag goes over it
    # the page makes its engine from that file
    monkeypatch.setenv(CONFIG_ENV, started["env"][CONFIG_ENV])
    demo_app = pytest.importorskip("memorag.demo_app", reason="the demo page needs streamlit")
    assert demo_app.engine_options()["mem_model"] == "scriptedspecs:llm"
    monkeypatch.delenv(CONFIG_ENV)
    assert demo_app.engine_options() == {}  # no file: the engine's defaults, as before


def test_ui_refuses_a_bad_config_file_before_starting_streamlit(started, tmp_path):
    (tmp_path / "bad.toml").write_text('[retrieval]\ntopk = 5\n')
    out = CliRunner().invoke(cli_app, ["ui", "--config", str(tmp_path / "bad.toml")])
    assert out.exit_code == 1 and "retrieval.topk: unknown key" in out.output and not started
    out = CliRunner().invoke(cli_app, ["ui"])
    assert out.exit_code == 0 and CONFIG_ENV not in started["env"] and started["env"]["MEMORAG_STORE"] == "memorag_store"

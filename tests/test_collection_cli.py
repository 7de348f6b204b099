"""`memorag add / ask --store / ls / rm` in a subprocess, on the fakes of memorag.testing
(loaded by spec string from tests/scriptedspecs.py, so no model is loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scriptedspecs import write_sources

pytestmark = pytest.mark.unit

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FAKES = ["--mem-model", "scriptedspecs:llm", "--ret-model", "scriptedspecs:embedder", "--chunk-tokens", "32"]


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    env.pop("MEMORAG_STORE", None)
    return subprocess.run([sys.executable, "-m", "memorag.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.integration  # runs the CLI in subprocesses
def test_add_ask_ls_rm_through_the_cli(tmp_path):
    src = write_sources(tmp_path / "src")
    store = tmp_path / "S"

    added = json.loads(ok(run_cli("add", src, "--store", store, "--json", *FAKES, cwd=tmp_path)).stdout)
    assert sorted(added["added"]) == ["bakery.md", "harbour.txt"] and added["skipped"] == [str(src / "notes.xyz")]
    again = json.loads(ok(run_cli("add", src, "--store", store, "--json", cwd=tmp_path)).stdout)
    assert sorted(again["unchanged"]) == ["bakery.md", "harbour.txt"] and again["added"] == []  # the store's models

    listed = json.loads(ok(run_cli("ls", "--store", store, "--json", cwd=tmp_path)).stdout)
    assert [e["name"] for e in listed] == ["bakery.md", "harbour.txt"]
    assert listed[0]["source"] == str(src / "bakery.md") and len(listed[0]["sha256"]) == 64

    q = "Where did Anselm Rook hide the brass ledger?"
    ans = json.loads(ok(run_cli("ask", "--store", store, q, "--json", cwd=tmp_path)).stdout)
    assert ans["documents"][0]["name"] == "bakery.md" and "flour barrels" in ans["answer"]
    text = (store / "bakery.md" / "document.txt").read_text()
    cite = next(c for c in ans["citations"] if c["document"] == "bakery.md")
    assert "flour barrels" in text[cite["start"]:cite["end"]] == cite["text"]

    plain = json.loads(ok(run_cli("ask", "--store", store, q, "--json", "--task-type", "rag", cwd=tmp_path)).stdout)
    assert plain["clues"] == {} and plain["citations"][0]["document"] == "bakery.md"  # no memory asked

    shown = ok(run_cli("ask", "--store", store, q, cwd=tmp_path))
    assert "flour barrels" in shown.stdout
    assert f"bakery.md chunk {cite['chunk_id']}, chars {cite['start']}-{cite['end']}" in shown.stderr

    (tmp_path / "more.txt").write_text("Later the baker Anselm Rook bought a copper kettle.")
    appended = json.loads(ok(run_cli("append", "bakery.md", tmp_path / "more.txt", "--store", store, "--json",
                                     cwd=tmp_path)).stdout)
    assert appended["append"]["mode"] == "appended" and appended["append"]["prefill_tokens"] > 0
    assert (store / "bakery.md" / "document.txt").read_text().endswith("\n\nLater the baker Anselm Rook bought a "
                                                                      "copper kettle.")
    # the scripted generator answers with the first evidence it reads: the best under rank order
    assert "copper kettle" in json.loads(ok(run_cli("ask", "--store", store, "What did Anselm Rook buy?", "--json",
                                                    "--evidence-order", "rank", cwd=tmp_path)).stdout)["answer"]
    by_text = json.loads(ok(run_cli("ask", "--store", store, "What did Anselm Rook buy?", "--json",
                                    cwd=tmp_path)).stdout)  # document order, the default
    assert any("copper kettle" in c["text"] for c in by_text["citations"])
    for doc in {c["document"] for c in by_text["citations"]}:  # each document's chunks as its text runs
        ids = [c["chunk_id"] for c in by_text["citations"] if c["document"] == doc]
        assert ids == sorted(ids)

    assert "No memorized document named 'nope'" in error_line(run_cli("rm", "nope", "bakery.md", "--store", store,
                                                                      cwd=tmp_path))
    assert (store / "bakery.md").is_dir()  # nothing removed when one name is wrong
    ok(run_cli("rm", "bakery.md", "--store", store, cwd=tmp_path))
    assert ok(run_cli("ls", "--store", store, cwd=tmp_path)).stdout.startswith("harbour.txt\t")
    after = json.loads(ok(run_cli("ask", "--store", store, q, "--json", cwd=tmp_path)).stdout)
    assert {c["document"] for c in after["citations"]} == {"harbour.txt"}


@pytest.mark.integration  # runs the CLI in subprocesses
@pytest.mark.parametrize("args,message", [
    (("add", "{d}/missing.txt", "--store", "{d}/S"), "File not found"),
    (("add", "{d}/odd.xyz", "--store", "{d}/S"), "unsupported file type '.xyz'"),
    (("ask", "--store", "{d}/S", "who?"), "does not exist"),
    (("ask", "--store", "{d}", "who?"), "is not a memorag store"),
    (("ask", "--store", "{d}/S", "a", "b"), "give only the question"),
    (("ask", "--store", "{d}/S", "who?", "--task-type", "summarize"), "single save dir"),
    (("ask",), "give SAVE_DIR and QUESTION"),
    (("ls", "--store", "{d}/S"), "does not exist"),
    (("rm", "x.txt", "--store", "{d}/S"), "does not exist"),
    (("append", "x.txt", "{d}/odd.xyz", "--store", "{d}/S"), "unsupported file type"),
    (("append", "x.txt", "{d}/odd.txt", "--store", "{d}/S"), "does not exist"),
])
def test_cli_errors_are_one_line_and_make_no_store(tmp_path, args, message):
    (tmp_path / "odd.xyz").write_text("?")
    (tmp_path / "odd.txt").write_text("some text")
    line = error_line(run_cli(*[a.format(d=tmp_path) for a in args], cwd=tmp_path))
    assert message in line
    assert not (tmp_path / "S").exists()


@pytest.mark.integration  # runs the CLI in a subprocess
def test_help_lists_the_store_commands(tmp_path):
    out = ok(run_cli("--help", cwd=tmp_path)).stdout
    for cmd in ("add", "append", "ls", "rm"):
        assert cmd in out
    assert "--store" in ok(run_cli("ask", "--help", cwd=tmp_path)).stdout


@pytest.mark.unit
def test_shown_evidence_says_how_each_chunk_was_found(capsys):
    """The demo and `ask --show-evidence` say of each evidence chunk whether the question's
    own search found it, the memory alone, or both, so a reader sees what the memory
    contributed; a plan that does not tell sources apart gets no note."""
    from memorag.cli import _print_answer
    from memorag.memory import Clues
    from memorag.pipeline import Answer
    from memorag.retrieval import Hit

    clues = Clues("Who keeps the key?", spans=["Ottilie Marsh keeps the lighthouse key.", "An invented line here."])
    clues.grounded = ["Ottilie Marsh keeps the lighthouse key.", ""]
    evidence = [Hit(0, 1.0, "The mill ground grain for the village.", found_by=("question",)),
                Hit(3, 0.5, "Records say Ottilie Marsh keeps the lighthouse key.", found_by=("memory",)),
                Hit(4, 0.4, "Ottilie Marsh rowed the ferry.", found_by=("question", "memory")),
                Hit(5, 0.3, "The ferry ran daily.", found_by=("links",)),
                Hit(6, 0.2, "A chunk from a plan that does not say.")]
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", clues, evidence), True, True, streamed=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("  [")]
    assert lines[0].endswith("(found by the question)")
    assert lines[1].endswith("(found by the memory only)")
    assert lines[2].endswith("(found by the question; the memory pointed at it too)")
    assert lines[3].endswith("(found by following links)")
    assert lines[4].endswith("does not say.")
    assert "[not found in the document]" in err
    # a found clue says whether the evidence holds its sentence (chunk 3 does)
    assert "Ottilie Marsh keeps the lighthouse key.  [found in the document, in the evidence]" in err
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", clues, evidence[:1]), True, False,
                  streamed=False)
    assert "[found in the document, not in the evidence]" in capsys.readouterr().err


@pytest.mark.unit
def test_shown_clues_include_the_memorys_second_hop(capsys):
    """With memory_bridge, `ask --show-clues` prints the quote the memory wrote when told the
    top passage's best sentence that brought its chunk into the evidence; its other quotes
    moved nothing and are not shown (--json keeps them)."""
    from memorag.cli import _print_answer
    from memorag.memory import Clues
    from memorag.pipeline import Answer
    from memorag.retrieval import Hit

    clues = Clues("Who keeps the key?", spans=[])
    evidence = [Hit(0, 1.0, "The mill ground grain for the village."),
                Hit(3, 0.5, "Records say Ottilie Marsh keeps the lighthouse key.", found_by=("memory",))]
    bridge = ["Who keeps the key?\nThe document says: The mill ground grain for the village.",
              "Ottilie Marsh keeps the lighthouse key.", "The ferry ran daily."]
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", clues, evidence, bridge=bridge), True, False,
                  streamed=False)
    err = capsys.readouterr().err
    assert "second hop" in err
    assert "  - Ottilie Marsh keeps the lighthouse key.  [in the evidence]" in err
    assert "The ferry ran daily." not in err  # quoted, but it moved nothing
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", clues, evidence), True, False, streamed=False)
    assert "second hop" not in capsys.readouterr().err  # no second hop asked: nothing printed
    unused = [bridge[0], "The ferry ran daily."]
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", clues, evidence[:1], bridge=unused), True,
                  False, streamed=False)
    assert "second hop" not in capsys.readouterr().err  # asked, nothing used: nothing printed


@pytest.mark.unit
def test_shown_evidence_is_what_the_generator_read(capsys):
    """Under evidence=passages (or excerpts) `--show-evidence` prints the part of each chunk the
    generator read, marked as a part, not the whole chunk."""
    from memorag.cli import _print_answer
    from memorag.pipeline import Answer
    from memorag.retrieval import Hit

    chunk = "The mill ground grain for the village.\n\nRecords say Ottilie Marsh keeps the lighthouse key."
    evidence = [Hit(0, 1.0, chunk), Hit(1, 0.5, "The ferry ran daily.")]
    read = ["Records say Ottilie Marsh keeps the lighthouse key.", "The ferry ran daily."]
    _print_answer(Answer("Ottilie Marsh", "Who keeps the key?", "memorag", None, evidence, read=read), False, True,
                  streamed=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  [")]
    assert lines[0] == "  [0] (part of the chunk) Records say Ottilie Marsh keeps the lighthouse key."
    assert lines[1] == "  [1] The ferry ran daily."


def test_ask_refuses_an_unknown_evidence_rendering(tmp_path):
    result = run_cli("ask", str(tmp_path / "nowhere"), "Who keeps the key?", "--evidence", "paragraphs", cwd=tmp_path)
    assert result.returncode != 0
    assert "evidence.render: must be one of chunks, excerpts, passages" in result.stderr
    assert "Traceback" not in result.stderr

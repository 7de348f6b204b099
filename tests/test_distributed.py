"""Distributed memorize on a local Ray cluster (memorag.distributed), on the scripted fakes.

A Ray head on this machine with two worker actors (two processes) memorizes a folder of
documents into a store; one worker is killed (SIGKILL) while it reads the long document.
Every document must end in the store and verify, the killed document must have been
resumed from its checkpoints by the retry, and answers must match a single-machine add of
the same files. Models are named by spec strings (tests/scriptedspecs.py), as on a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from memorag.collection import Collection, text_sha256  # noqa: E402
from memorag.distributed import CHECKPOINT_DIR, add_on_ray  # noqa: E402
from memorag.docstore import DocStore  # noqa: E402
from memorag.errors import InputError, StateError  # noqa: E402
from memorag.store import read_manifest  # noqa: E402

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
MODELS = {"mem_model_name_or_path": "scriptedspecs:slow_llm", "ret_model_name_or_path": "scriptedspecs:embedder",
          "retrieval_chunk_size": 32}
CHECKPOINT_EVERY = 128  # tokens: the long document checkpoints many times, the short ones never
LONG = "ledger.txt"
QUESTIONS = ["Where did Anselm Rook hide the brass ledger?", "Who kept the silver key in a blue porcelain jar?",
             "Which crate held the copper astrolabe?", "What colour was the lighthouse door?"]

SHORT = {
    "bakery.md": "The baker Anselm Rook hid the brass ledger under the flour barrels.\n\nThe bakery door was yellow.",
    "harbour.txt": "The keeper Edda Quill kept the silver key in a blue porcelain jar on the harbour wall.",
    "lighthouse.txt": "The lighthouse door was painted a deep green, and its lamp burned whale oil until 1901.",
    "orchard.md": "In the orchard the gardener Pell Tamsin grafted pear branches onto quince roots each March.",
    "mill.txt": "The miller Oren Vast measured grain with a cedar scoop that his grandmother had carved.",
}


def long_text() -> str:
    lines = [f"Crate {i} of the warehouse ledger held {['wool', 'tin', 'salt', 'rope'][i % 4]} bound for port {i % 7}."
             for i in range(160)]
    lines[97] = "Crate 97 of the warehouse ledger held the copper astrolabe, wrapped in oilcloth."
    return "\n".join(lines)


def write_corpus(folder: Path) -> Path:
    folder.mkdir()
    for name, text in SHORT.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / LONG).write_text(long_text(), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def local_cluster():
    """A Ray head on this machine with room for two single-CPU workers (no dashboard)."""
    with pytest.MonkeyPatch.context() as env:  # the cluster's processes import memorag and the fakes from here
        env.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(TESTS)]))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def checkpointed(checkpoints: Path) -> bool:
    """Whether a memory pass has saved a KV checkpoint (only the long document makes any)."""
    return any(checkpoints.glob("memory-*/state-*.json"))


def test_cluster_add_survives_a_killed_worker_and_matches_one_machine(tmp_path, local_cluster):
    corpus = write_corpus(tmp_path / "corpus")
    store = tmp_path / "cluster-store"
    checkpoints = store / CHECKPOINT_DIR
    dispatched: dict[str, dict] = {}
    killed: list[int] = []
    finished: list[tuple[str, str]] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if LONG in dispatched and checkpointed(checkpoints) and not any(n == LONG for n, _ in finished):
                pid = dispatched[LONG]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = add_on_ray(store, [corpus], workers=2, checkpoint_every=CHECKPOINT_EVERY,
                        on_dispatch=lambda name, worker: dispatched.__setitem__(name, worker),
                        on_document=lambda name, status: finished.append((name, status)), **MODELS)
    thread.join(5)

    assert killed, "the long document finished before a checkpoint was seen: nothing was killed"
    assert result.failed == {}
    names = sorted(p.name for p in corpus.iterdir())
    assert sorted(result.added) == names and sorted(n for n, _ in finished) == names
    assert {w["pid"] for w in result.workers.values()} - set(killed), "no other worker did any document"
    # The retry ran in a restarted worker and read on from the killed one's last checkpoint.
    assert result.workers[LONG]["pid"] not in killed
    assert result.stats[LONG]["resumed"]["memory"]["done"] > 0

    coll = Collection(store, **MODELS)
    for name in names:
        entry = coll.store.info(name)
        source = (corpus / name).read_text(encoding="utf-8")
        assert entry["sha256"] == text_sha256(source) == text_sha256(coll.text(name))
        read_manifest(coll.store.state_dir(name), verify=True)  # every file's size and sha256
    assert not any((store / ".staging").iterdir()), "the run left its staging dir behind"
    assert not checkpointed(checkpoints), "checkpoints of committed documents were kept"

    single = Collection(tmp_path / "single-store", **MODELS)
    assert sorted(single.add([corpus]).added) == names
    for question in QUESTIONS:
        got, want = coll.ask(question), single.ask(question)
        assert got.answer == want.answer
        assert [(c.document, c.chunk_id, c.start, c.end) for c in got.citations] == \
               [(c.document, c.chunk_id, c.start, c.end) for c in want.citations]
        assert got.marks == want.marks

    again = add_on_ray(store, [corpus], workers=2, **MODELS)  # everything is stored already: no worker starts
    assert sorted(again.unchanged) == names and again.added == [] and again.failed == {}


def test_cli_add_on_ray_then_unchanged(tmp_path, local_cluster):
    """`memorag add --ray-address ADDRESS` attaches to the running cluster; a second run (`--ray` with
    $RAY_ADDRESS) memorizes only the new file."""
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / LONG).unlink()  # the kill test covers it; keep this one quick
    store = tmp_path / "S"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    env.pop("MEMORAG_STORE", None)
    env.pop("RAY_ADDRESS", None)
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "memorag.cli", "add", str(corpus), "--store", str(store), "--json",
               "--mem-model", "scriptedspecs:llm", "--ret-model", "scriptedspecs:embedder", "--chunk-tokens", "32",
               "--workers", "2", "--ray-address", address]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr + first.stdout
    out = json.loads(first.stdout)
    assert sorted(out["added"]) == sorted(SHORT) and out["failed"] == {}
    (corpus / "quarry.txt").write_text("The quarry foreman Ilse Marr logged every blast in red ink.", encoding="utf-8")
    bare = [*command[: command.index("--ray-address")], "--ray"]  # the cluster named by $RAY_ADDRESS
    second = subprocess.run(bare, capture_output=True, text=True, env={**env, "RAY_ADDRESS": address}, timeout=120)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert sorted(out["unchanged"]) == sorted(SHORT) and out["added"] == ["quarry.txt"]
    assert "Connecting to existing Ray cluster" in second.stderr


def test_workers_that_cannot_load_their_model_are_one_clear_error(tmp_path, local_cluster):
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(StateError, match=r"could not start: Cannot import 'nosuchmodule:llm'") as caught:
        add_on_ray(tmp_path / "S", [corpus], workers=2, mem_model_name_or_path="nosuchmodule:llm",
                   ret_model_name_or_path="scriptedspecs:embedder")
    assert "\n" not in str(caught.value)
    assert DocStore(tmp_path / "S").list() == [] and not any((tmp_path / "S" / ".staging").iterdir())



def test_a_document_the_memory_refuses_is_listed_and_the_others_are_committed(tmp_path, local_cluster):
    """An error inside a worker's memorize fails that document only, with memorag's own message."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "short.txt").write_text(SHORT["harbour.txt"], encoding="utf-8")
    (corpus / "huge.txt").write_text("word " * 20000, encoding="utf-8")  # beyond the scripted model's window
    seen: list[tuple[str, str]] = []
    result = add_on_ray(tmp_path / "S", [corpus], workers=2, compression="none",
                        on_document=lambda name, status: seen.append((name, status)),
                        **{**MODELS, "mem_model_name_or_path": "scriptedspecs:llm"})
    assert result.added == ["short.txt"] and list(result.failed) == ["huge.txt"]
    assert "window" in result.failed["huge.txt"] and "\n" not in result.failed["huge.txt"]
    assert sorted(seen) == [("huge.txt", "failed"), ("short.txt", "added")]
    assert [e["name"] for e in DocStore(tmp_path / "S").list()] == ["short.txt"]


def test_more_workers_than_the_cluster_has_cpus_for_is_refused_not_left_waiting(tmp_path, local_cluster):
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(InputError, match=r"\(1 node\(s\)\) has CPUs for 2 worker\(s\) of 1 CPU\(s\) each; asked for 3"):
        add_on_ray(tmp_path / "S", [corpus], workers=3, **MODELS)
    with pytest.raises(InputError, match=r"has CPUs for 0 worker\(s\) of 4 CPU"):
        add_on_ray(tmp_path / "S", [corpus], cpus_per_worker=4, **MODELS)
    assert DocStore(tmp_path / "S").list() == [] and not any((tmp_path / "S" / ".staging").iterdir())

"""The document store behind `memorag serve` and the demo: names, atomic commits, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memorag.docstore import DocStore, _this_host, check_name
from memorag.engine import Job
from memorag.errors import ConflictError, InputError, NotFoundError

pytestmark = pytest.mark.unit


def build(store: DocStore, job: str, marker: str) -> Path:
    """A staging dir holding a (tiny) save dir, as MemoRAG.memorize would leave it."""
    staging = store.new_staging(job)
    (staging / "state").mkdir()
    (staging / "state" / "manifest.json").write_text(json.dumps({"marker": marker}))
    return staging


@pytest.mark.parametrize("name", ["a", "Doc-1", "pride_and.prejudice", "x" * 64, "0", "-x", "x" * 200, "a b", "é"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "x" * 201, " a", "CON",
                                  "a\\b", "a\x00b", None, 3])
def test_bad_names(name):
    with pytest.raises(InputError, match="Invalid document name"):
        check_name(name)


def test_commit_list_text_delete(tmp_path):
    store = DocStore(tmp_path)
    entry = store.commit(build(store, "j1", "v1"), "doc", "the text", {"chunks": 1}, replace=False)
    assert [d["name"] for d in store.list()] == ["doc"]
    assert store.text("doc") == "the text"
    assert store.info("doc")["version"] == entry["version"]
    with pytest.raises(ConflictError, match="already exists"):
        store.commit(build(store, "j2", "v2"), "doc", "other", {}, replace=False)
    entry2 = store.commit(build(store, "j3", "v3"), "doc", "new text", {}, replace=True)
    assert entry2["version"] != entry["version"] and store.text("doc") == "new text"
    assert json.loads((store.state_dir("doc") / "manifest.json").read_text())["marker"] == "v3"
    store.delete("doc")
    assert store.list() == [] and not store.exists("doc")
    with pytest.raises(NotFoundError):
        store.delete("doc")
    with pytest.raises(NotFoundError):
        store.text("doc")
    assert not list((tmp_path / ".trash").iterdir())


def test_kill_between_the_renames_of_a_replacement_restores_the_old_version(tmp_path):
    store = DocStore(tmp_path)
    store.commit(build(store, "j1", "old"), "doc", "old text", {}, replace=False)
    version = store.info("doc")["version"]
    # what commit(replace=True) does first, then the process dies before the second rename
    os.replace(tmp_path / "doc", tmp_path / ".trash" / "doc~abc.replaced")
    assert store.list() == []
    report = DocStore(tmp_path).recovered
    assert report["restored"] == ["doc"]
    assert store.info("doc")["version"] == version and store.text("doc") == "old text"


def test_an_interrupted_delete_stays_deleted(tmp_path):
    store = DocStore(tmp_path)
    store.commit(build(store, "j1", "x"), "doc", "text", {}, replace=False)
    os.replace(tmp_path / "doc", tmp_path / ".trash" / "doc~abc.deleted")  # killed before rmtree finished
    report = DocStore(tmp_path).recovered
    assert report["restored"] == [] and report["trash_removed"] == ["doc~abc.deleted"]
    assert not store.exists("doc")


@pytest.mark.integration  # kills a child process
def test_staging_of_a_killed_process_is_removed_and_a_live_one_kept(tmp_path):
    store = DocStore(tmp_path)
    mine = build(store, "live", "x")  # this process is alive: its build must survive a recover()
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from memorag.docstore import DocStore; "
        f"s = DocStore({str(tmp_path)!r}); d = s.new_staging('dead'); (d / 'half').write_text('x'); "
        "print('ready', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    report = DocStore(tmp_path).recovered
    assert report["staging_removed"] == [f"dead~{child.pid}@{_this_host()}"]
    assert mine.is_dir()
    assert store.list() == []


@pytest.mark.integration  # starts a process for a dead pid
def test_staging_of_another_machine_is_kept_and_an_old_style_dead_one_removed(tmp_path):
    """Replicas on several machines share a store: a build's liveness can be told only on its host."""
    store = DocStore(tmp_path)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    elsewhere = tmp_path / ".staging" / f"job1~{dead_pid}@{_this_host()}-other"
    old_style = tmp_path / ".staging" / f"job2~{dead_pid}"
    here = tmp_path / ".staging" / f"job3~{dead_pid}@{_this_host()}"
    for d in (elsewhere, old_style, here):
        d.mkdir()
    report = store.recover()
    assert sorted(report["staging_removed"]) == sorted([old_style.name, here.name])
    assert elsewhere.is_dir()


def test_job_progress_fraction_only_grows():
    job = Job(id="j", name="n", chars=10)
    seen = []
    for stage, done, total in [("index", 1, 4), ("index", 4, 4), ("memory", 512, 4000), ("memory", 4000, 4000)]:
        job.report(stage, done, total)
        seen.append(job.fraction)
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1] < 1
    long_job = Job(id="k", name="n", chars=10)
    fractions = []
    for stage, done, total in [("index", 4, 4), ("compress", 1, 10), ("compress", 10, 10), ("memory", 10, 20)]:
        long_job.report(stage, done, total)
        fractions.append(long_job.fraction)
    assert fractions == sorted(fractions)
    assert time.time() >= job.created

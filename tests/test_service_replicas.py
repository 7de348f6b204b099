"""Several `memorag serve` replicas over one store (issue 25, part 2): jobs recorded in the
store and seen by every replica, a job taken over when the process running it dies, the
same answer from every replica, read-only replicas, readiness and overload.

Models are the scripted fakes (tests/scriptedspecs.py): replicas in this process are two
engines and apps over one store directory (FastAPI's TestClient); replicas that are killed
are real processes (tests/replica_child.py: the service's app under uvicorn on 127.0.0.1).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from scriptedspecs import minimal_pdf
from servicekit import ServerProcess, wait_for_job

from memorag.engine import Engine, Job
from memorag.jobs import JobBoard
from memorag.service import Settings, create_app
from memorag.store import read_manifest

pytestmark = pytest.mark.unit

CHILD = str(Path(__file__).with_name("replica_child.py"))
MODELS = {"mem_model": "scriptedspecs:llm", "ret_model": "scriptedspecs:embedder", "gen_model": "scriptedspecs:llm",
          "retrieval_chunk_size": 64}
LEDGER = ["The clerk Ida Marsh kept the brass ledger in the archive vault.",
          "The vault door was painted green in the spring."]
QUESTION = "Where did Ida Marsh keep the brass ledger?"
LOG_TEXT = " ".join(f"Line {i}: the keeper Edda Quill counted {i} boats in the harbour." for i in range(400))


def engine(store: Path, **kwargs) -> Engine:
    return Engine(store, **{**MODELS, **kwargs})


def app_client(eng: Engine, **settings):
    from fastapi.testclient import TestClient

    return TestClient(create_app(Settings(store=str(eng.store.root), warm_up=False, **settings), eng))


def finished(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/jobs/{job_id}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def stored(store: Path, name: str) -> dict:
    """Every file of one committed document and its bytes."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / name).rglob("*")) if p.is_file()}


def comparable(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timings"} | {"clues": {
        n: {k: v for k, v in c.items() if k != "seconds"} for n, c in answer["clues"].items()}}


@pytest.mark.integration  # several replicas over one store
def test_a_job_accepted_by_one_replica_is_seen_by_the_other_and_both_answer_alike(tmp_path):
    store = tmp_path / "store"
    a, b = engine(store), engine(store)
    with app_client(a) as ca, app_client(b) as cb:
        r = ca.post("/documents/upload", files={"file": ("ledger.pdf", minimal_pdf(LEDGER))})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        seen = cb.get(f"/jobs/{job_id}")
        assert seen.status_code == 200 and seen.json()["name"] == "ledger.pdf"
        assert seen.json()["owner"] == a.owner and seen.json()["state"] in ("queued", "running", "done")
        assert job_id in [j["id"] for j in cb.get("/jobs").json()["jobs"]]
        done = finished(cb, job_id)
        answers = [c.post("/ask", json={"question": QUESTION}).json() for c in (ca, cb)]
        per_document = [c.post("/documents/ledger.pdf/ask", json={"question": QUESTION}).json() for c in (ca, cb)]
        listed = [c.get("/documents").json()["documents"] for c in (ca, cb)]
    a.close(wait=True)
    b.close(wait=True)
    assert done["state"] == "done" and done["owner"] == a.owner and done["attempts"] == 1
    assert "archive vault" in answers[0]["answer"]
    assert comparable(answers[0]) == comparable(answers[1])
    assert per_document[0]["answer"] == per_document[1]["answer"] and \
        per_document[0]["evidence"] == per_document[1]["evidence"]
    assert listed[0] == listed[1] and listed[0][0]["status"] == "ready"


@pytest.mark.integration  # several replicas over one store
def test_a_replica_sees_a_document_another_replica_is_replacing_as_updating(tmp_path):
    store = tmp_path / "store"
    a = engine(store, mem_model="scriptedspecs:slow_llm")
    b = engine(store)
    with app_client(a) as ca, app_client(b) as cb:
        first = finished(ca, ca.post("/documents", json={"name": "log", "text": "The first entry."}).json()["id"])
        assert first["state"] == "done"
        r = ca.post("/documents", json={"name": "log", "text": LOG_TEXT, "replace": True})
        listed = cb.get("/documents").json()["documents"]
        asked = cb.post("/documents/log/ask", json={"question": "How many boats?"})
        deleted = cb.delete("/documents/log")
        again = cb.post("/documents", json={"name": "log", "text": "Other text.", "replace": True})
        finished(ca, r.json()["id"])
    a.close(wait=True)
    b.close(wait=True)
    assert listed[0]["status"] == "updating" and listed[0]["job"] == r.json()["id"]
    assert asked.status_code == 503 and asked.headers["retry-after"] == "5"
    assert deleted.status_code == 409 and r.json()["id"] in deleted.json()["error"]
    assert again.status_code == 409 and r.json()["id"] in again.json()["error"]  # one job per name, store-wide


@pytest.mark.integration  # replicas as uvicorn processes, one killed
def test_a_replica_killed_mid_document_loses_nothing_and_another_replica_finishes_its_job(tmp_path):
    store = tmp_path / "store"
    a, b = ServerProcess(store, script=[CHILD]), ServerProcess(store, script=[CHILD])
    try:
        with a.client(timeout=60) as ca, b.client(timeout=60) as cb:
            seeded, _ = wait_for_job(ca, ca.post("/documents/upload", files={
                "file": ("ledger.pdf", minimal_pdf(LEDGER))}).json()["id"], timeout=120, every=0.1)
            assert seeded["state"] == "done", seeded
            before = stored(store, "ledger.pdf")
            r = ca.post("/documents", json={"name": "log", "text": LOG_TEXT})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + 120
            while True:  # kill A while it reads the document into its memory, as B reports it
                job = cb.get(f"/jobs/{job_id}").json()
                if job["stage"] == "memory" and 0 < job["done"] < job["total"]:
                    break
                assert job["state"] != "done", "the job ended before A could be killed"
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
            accepted_by = job["owner"]
            a.kill()
            final, _ = wait_for_job(cb, job_id, timeout=120, every=0.1)
            answer_b = cb.post("/documents/log/ask", json={"question": "How many boats did Edda Quill count?"})
            ledger_b = cb.post("/ask", json={"question": QUESTION}).json()
        a2 = ServerProcess(store, script=[CHILD])  # A restarted
        try:
            with a2.client(timeout=60) as ca2:
                answer_a2 = ca2.post("/documents/log/ask", json={"question": "How many boats did Edda Quill count?"})
                ledger_a2 = ca2.post("/ask", json={"question": QUESTION}).json()
                seen_from_a2 = ca2.get(f"/jobs/{job_id}").json()
        finally:
            a2.stop()
    finally:
        a.stop()
        b.stop()
    assert final["state"] == "done", final
    assert final["attempts"] == 2 and final["owner"] != accepted_by, final
    # B read the passages A had embedded back from the memorize checkpoints (same machine)
    assert final["stats"].get("resumed"), final["stats"]
    assert seen_from_a2 == final
    assert stored(store, "ledger.pdf") == before  # the other document did not change
    entry = (store / "log" / "entry.json").read_text()
    assert (store / "log" / "document.txt").read_text() == LOG_TEXT and f'"chars": {len(LOG_TEXT)}' in entry
    read_manifest(store / "log" / "state", verify=True)  # whole: every file's size and sha256
    read_manifest(store / "ledger.pdf" / "state", verify=True)
    assert not list((store / ".staging").iterdir())  # the dead replica's half-built document is gone
    assert answer_b.status_code == answer_a2.status_code == 200, (answer_b.text, answer_a2.text)
    assert answer_b.json()["answer"] == answer_a2.json()["answer"]
    assert answer_b.json()["evidence"] == answer_a2.json()["evidence"]
    assert comparable(ledger_b) == comparable(ledger_a2) and "archive vault" in ledger_b["answer"]


def ended(eng: Engine, job_id: str, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while (job := eng.job(job_id)).state not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def orphan(store: Path, name: str, text: str, **fields) -> str:
    """A job record as a process that died after accepting it leaves it: queued, claim dropped."""
    job = Job(id=f"orphan{len(name)}{int(time.time() * 1e6)}", name=name, chars=len(text), owner="gone:1", **fields)
    JobBoard(store).create(job.to_json(), text).release()
    return job.id


@pytest.mark.integration  # several replicas over one store
def test_a_restarted_writer_runs_jobs_left_queued_and_a_read_only_replica_does_not(tmp_path):
    store = tmp_path / "store"
    engine(store).close(wait=True)  # makes the store
    job_id = orphan(store, "harbour", "The keeper Edda Quill kept the silver key in a blue porcelain jar.")
    reader = engine(store, read_only=True)
    assert reader.adopt_orphans() == []
    assert reader.job(job_id).state == "queued"
    writer = engine(store)
    with app_client(reader, read_only=True) as cr, app_client(writer):  # the writer looks at start
        done = finished(cr, job_id)
        answer = cr.post("/documents/harbour/ask", json={"question": "Where was the silver key?"})
    reader.close(wait=True)
    writer.close(wait=True)
    assert done["state"] == "done" and done["attempts"] == 2 and done["owner"] == writer.owner
    assert answer.status_code == 200 and "porcelain jar" in answer.json()["answer"]
    assert not (store / ".jobs" / f"{job_id}.txt").exists()  # the text goes once the job has ended


@pytest.mark.integration  # several replicas over one store
def test_two_replicas_looking_for_orphans_at_once_never_both_run_one(tmp_path):
    store = tmp_path / "store"
    engines = [engine(store) for _ in range(4)]
    ids = [orphan(store, f"doc{i}", f"Document {i}: the lamp {i} stood by the door.") for i in range(3)]
    taken: list[list[str]] = [[] for _ in engines]
    start = threading.Barrier(len(engines))

    def look(i: int) -> None:
        start.wait()
        taken[i] = engines[i].adopt_orphans()

    threads = [threading.Thread(target=look, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.close(wait=True)
    assert sorted(j for t in taken for j in t) == sorted(ids)  # each exactly once
    records = {r["id"]: r for r in JobBoard(store).records()}
    assert all(records[j]["state"] == "done" and records[j]["attempts"] == 2 for j in ids), records


def test_a_job_whose_process_died_after_its_commit_is_not_memorized_again(tmp_path):
    store = tmp_path / "store"
    text = "The keeper Edda Quill kept the silver key in a blue porcelain jar."
    first = engine(store)
    with app_client(first) as c:
        finished(c, c.post("/documents", json={"name": "harbour", "text": text}).json()["id"])
    first.close(wait=True)
    before = stored(store, "harbour")
    later = engine(store)
    memorized = orphan(store, "harbour", text)  # as if the process died between its commit and its record
    assert later.adopt_orphans() == [memorized]
    ended(later, memorized)
    appended = orphan(store, "harbour", " The jar stood on the sill.", kind="append", base_version="older")
    assert later.adopt_orphans() == [appended]
    ended(later, appended)
    current = later.store.info("harbour")["version"]
    pending = orphan(store, "harbour", "The jar stood on the sill.", kind="append", base_version=current)
    assert later.adopt_orphans() == [pending]
    ended(later, pending)
    later.close(wait=True)
    jobs = {j: later.job(j) for j in (memorized, appended, pending)}
    assert all(job.state == "done" for job in jobs.values()), jobs
    assert "died before it recorded" in jobs[memorized].stats["note"]
    assert "died before it recorded" in jobs[appended].stats["note"]
    assert "note" not in jobs[pending].stats  # its append had not been committed: it ran
    assert (store / "harbour" / "document.txt").read_text() == text + "\n\nThe jar stood on the sill."
    assert before["harbour/document.txt"] == text.encode()


@pytest.mark.integration  # several replicas over one store
def test_a_read_only_replica_refuses_every_write_with_one_error_and_still_answers(tmp_path):
    store = tmp_path / "store"
    writer = engine(store)
    reader = engine(store, read_only=True)
    with app_client(writer) as cw, app_client(reader, read_only=True) as cr:
        finished(cw, cw.post("/documents/upload", files={"file": ("ledger.pdf", minimal_pdf(LEDGER))}).json()["id"])
        before = stored(store, "ledger.pdf")
        refused = [cr.post("/documents", json={"name": "new", "text": "Some text."}),
                   cr.post("/documents/upload", files={"file": ("new.txt", b"Some text.")}),
                   cr.post("/documents/ledger.pdf/append", json={"text": "More."}),
                   cr.delete("/documents/ledger.pdf")]
        answer = cr.post("/ask", json={"question": QUESTION})
        health = cr.get("/health").json()
    writer.close(wait=True)
    reader.close(wait=True)
    for r in refused:
        assert r.status_code == 403 and set(r.json()) == {"error"} and "read-only" in r.json()["error"], r.text
    assert stored(store, "ledger.pdf") == before and not (store / "new").exists()
    assert answer.status_code == 200 and "archive vault" in answer.json()["answer"]
    assert health["read_only"] is True


def test_settings_and_engine_must_agree_on_read_only(tmp_path):
    from memorag.errors import InputError

    with pytest.raises(InputError, match="read_only"):
        create_app(Settings(store=str(tmp_path), read_only=True), engine(tmp_path))


def test_ready_is_503_with_retry_after_until_the_models_are_loaded_and_when_the_queue_is_full(tmp_path):
    store = tmp_path / "store"
    eng = engine(store)
    with app_client(eng) as c:
        loading = c.get("/ready")
        eng.warm_up().result(timeout=60)
        ready = c.get("/ready")
        health = c.get("/health")
    eng.close(wait=True)
    assert loading.status_code == 503 and loading.headers["retry-after"] == "5"
    assert "loading" in loading.json()["error"] and loading.json()["models_loaded"] is False
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert health.status_code == 200 and health.json()["models_loaded"] is True

    full = engine(store, max_queue=0)  # every queue is full: one answer, 503 with Retry-After
    with app_client(full) as c:
        full.warm_up().result(timeout=60)
        busy = c.get("/ready")
        ask = c.post("/ask", json={"question": QUESTION})
        memorize = c.post("/documents", json={"name": "new", "text": "Some text."})
    full.close(wait=True)
    assert busy.status_code == ask.status_code == memorize.status_code == 503
    assert busy.headers["retry-after"] == ask.headers["retry-after"] == "10"
    assert int(memorize.headers["retry-after"]) > 0 and "waiting" in memorize.json()["error"]
    assert not (store / "new").exists()


def test_ready_reports_models_that_failed_to_load(tmp_path):
    eng = Engine(tmp_path / "store", mem_model="no-such-model.gguf", ret_model="scriptedspecs:embedder")
    with app_client(eng) as c:
        with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises; /ready reports it
            eng.warm_up().result(timeout=60)
        r = c.get("/ready")
    eng.close(wait=True)
    assert r.status_code == 503 and "failed to load" in r.json()["error"] and int(r.headers["retry-after"]) > 0


def test_job_ids_from_clients_never_reach_outside_the_jobs_dir(tmp_path):
    eng = engine(tmp_path / "store")
    with app_client(eng) as c:
        for bad in ("..%2F..%2Fsecret", "a.b", "x y"):
            r = c.get(f"/jobs/{bad}")
            assert r.status_code == 404 and set(r.json()) == {"error"}, r.text
    eng.close(wait=True)

"""`memorag serve` against a real uvicorn on 127.0.0.1 with the real default models.

One server (with a bearer token and a 1 MB body limit) memorizes the bundled sample once
for the whole module; the other tests share that document. Minutes-long runs (ten
concurrent questions, killing a server mid-build) are marked slow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from servicekit import ServerProcess, read_sse, wait_for_job
from test_demo_questions import QUESTIONS, correct

from memorag.cli import SAMPLE_QUESTION

pytestmark = pytest.mark.e2e

TOKEN = "test-token-0123456789abcdef"
SAMPLE_KEY = QUESTIONS[0][1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("service") / "store", token=TOKEN, max_body_mb=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def memorized(server, sample_text):
    """Memorize the sample through the API, polling progress; while it builds, ask and delete it."""
    with server.client() as c:
        r = c.post("/documents", json={"name": "sample", "text": sample_text})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/jobs/{job['id']}"
        during: dict[str, httpx.Response] = {}

        def probe(state: dict) -> None:
            if state["state"] == "running" and "ask" not in during:
                during["ask"] = c.post("/documents/sample/ask", json={"question": SAMPLE_QUESTION})
                during["delete"] = c.delete("/documents/sample")
                during["again"] = c.post("/documents", json={"name": "sample", "text": sample_text, "replace": True})

        final, seen = wait_for_job(c, job["id"], on_poll=probe)
    return {"job": final, "seen": seen, "during": during}


def test_memorize_job_reports_progress(server, memorized):
    job, seen = memorized["job"], memorized["seen"]
    assert job["state"] == "done", job
    assert job["fraction"] == 1.0 and job["stats"]["memory_tokens"] > 3000
    fractions = [s["fraction"] for s in seen]
    assert fractions == sorted(fractions), "progress went backwards"
    # the memory stage was seen part-way (tokens read so far out of the total)
    reading = [s for s in seen if s["stage"] == "memory" and 0 < s["done"] < s["total"]]
    assert reading, [(s["stage"], s["done"], s["total"]) for s in seen]
    with server.client() as c:
        docs = c.get("/documents").json()
        assert [d["name"] for d in docs["documents"]] == ["sample"]
        assert docs["documents"][0]["stats"]["chunks"] == job["stats"]["chunks"]
        assert docs["building"] == []


def test_busy_and_conflict_while_building(memorized):
    during = memorized["during"]
    assert during["ask"].status_code == 503, during["ask"].text
    assert "being built" in during["ask"].json()["error"]
    assert int(during["ask"].headers["retry-after"]) > 0
    assert during["delete"].status_code == 409, during["delete"].text
    assert during["again"].status_code == 409, during["again"].text


def test_ask_streams_evidence_tokens_then_answer(server, memorized):
    with server.client() as c:
        text = c.get("/documents/sample", params={"text": "true"}).json()["text"]
        with c.stream("POST", "/documents/sample/ask",
                      json={"question": SAMPLE_QUESTION, "stream": True, "max_new_tokens": 64}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = read_sse(r)
    kinds = [k for k, _ in events]
    assert kinds[0] == "evidence" and kinds[-1] == "done", kinds
    tokens = [d["text"] for k, d in events if k == "token"]
    assert len(tokens) > 1, "the answer did not stream"
    done = events[-1][1]
    assert "".join(tokens).strip() == done["answer"]
    assert correct(done["answer"], SAMPLE_KEY), done["answer"]
    evidence = events[0][1]["evidence"]
    assert events[0][1]["clues"]["spans"] or events[0][1]["clues"]["questions"]
    assert len(evidence) == 3
    for ev in evidence:  # each evidence chunk sits at its offsets in the document
        assert text[ev["start"]:ev["end"]] == ev["text"]


def test_openai_client_lists_documents_and_gets_openai_errors(server, memorized):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list()] == ["sample"]
    with pytest.raises(openai.NotFoundError, match="no-such-doc"):
        client.chat.completions.create(model="no-such-doc", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError, match="Wrong bearer token"):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-token-0123456789", max_retries=0).models.list()


@pytest.mark.slow
def test_openai_facade_streams_an_answer(server, memorized):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=900)
    stream = client.chat.completions.create(
        model="sample", stream=True, max_tokens=48,
        messages=[{"role": "user", "content": "What colour was the horse Mr. Bingley rode?"}])
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert correct(answer, [[r"black"]]), answer
    reply = client.chat.completions.create(
        model="sample", max_tokens=48,
        messages=[{"role": "system", "content": "ignored"},
                  {"role": "user", "content": "In which county is Mr. Darcy's large estate?"}])
    assert correct(reply.choices[0].message.content, [[r"derbyshire"]]), reply.choices[0].message.content
    assert reply.model_extra["memorag"]["evidence"]


# ------------------------------------------------------------------ bad requests (no model)
@pytest.mark.parametrize("name", ["../evil", "..", ".", "a/b", "/etc", ".hidden", "a\\b", "x" * 201, "", "CON", "a\x00b"])
def test_traversal_and_bad_names_are_refused(server, name):
    with server.client() as c:
        r = c.post("/documents", json={"name": name, "text": "Some text to memorize."})
    assert r.status_code == 400, r.text
    assert "Invalid document name" in r.json()["error"]
    assert not (server.store.parent / "evil").exists()
    assert sorted(p.name for p in server.store.iterdir() if not p.name.startswith(".")) in ([], ["sample"])


@pytest.mark.parametrize("path,status", [("/documents/%2E%2E", 400), ("/documents/%2Ehidden", 400),
                                         ("/documents/..%2F..%2Fetc%2Fpasswd", 404),
                                         ("/documents/%2E%2E/ask", 400)])
def test_traversal_in_paths_is_refused(server, path, status):
    with server.client() as c:
        r = c.post(path, json={"question": "x"}) if path.endswith("/ask") else c.get(path)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_token_is_required(server):
    with server.client(token="") as anon:
        assert anon.get("/health").status_code == 200  # liveness stays open
        r = anon.get("/documents")
        assert r.status_code == 401 and "Missing bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert anon.post("/documents", json={"name": "x", "text": "y"}).status_code == 401
        assert anon.get("/openapi.json").status_code == 200  # the schema is public, the data is not
    with server.client(token="wrong-token-0123456789") as wrong:
        r = wrong.get("/documents")
        assert r.status_code == 401 and "Wrong bearer token" in r.json()["error"]
        assert wrong.delete("/documents/sample").status_code == 401
    with server.client() as ok:
        assert ok.get("/documents").status_code == 200


def test_oversized_bodies_get_413(server):
    big = {"name": "big", "text": "word " * 300_000}  # 1.5 MB > the 1 MB limit
    with server.client() as c:
        r = c.post("/documents", json=big)
        assert r.status_code == 413 and "too large" in r.json()["error"]

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(20):
                yield b"x" * 100_000

        r = c.post("/documents", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
    assert not (server.store / "big").exists()


def test_unknown_documents_and_jobs_get_404(server):
    with server.client() as c:
        for r in (c.get("/documents/nope"), c.delete("/documents/nope"), c.get("/jobs/nope"),
                  c.post("/documents/nope/ask", json={"question": "Who?"}),
                  c.post("/documents/nope/ask", json={"question": "Who?", "stream": True}),
                  c.post("/documents/nope/summarize", json={})):
            assert r.status_code == 404, (r.request.url, r.text)
            assert "nope" in r.json()["error"]


@pytest.mark.parametrize("body,status,words", [
    ({"question": ""}, 400, "empty"),
    ({"question": "   "}, 400, "empty"),
    ({}, 422, "question: Field required"),
    ({"question": "Who?", "task_type": "poetry"}, 422, "task_type"),
    ({"question": "Who?", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ({"question": "Who?", "colour": "red"}, 422, "colour"),
])
def test_bad_questions_get_clear_errors(server, body, status, words):
    with server.client() as c:
        r = c.post("/documents/nope/ask", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_bad_json_and_bad_memorize_bodies(server):
    with server.client() as c:
        r = c.post("/documents", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
        r = c.post("/documents", json={"name": "empty", "text": "  \n "})
        assert r.status_code == 400 and "empty" in r.json()["error"]
        r = c.post("/documents", json={"name": "nul", "text": "a\x00b"})
        assert r.status_code == 400 and "NUL" in r.json()["error"]
        r = c.post("/v1/chat/completions", json={"model": "sample", "messages": [{"role": "system", "content": "x"}]})
        assert r.status_code in (400, 404) and r.json()["error"]["message"]


def test_openapi_schema_lists_the_api(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    for path in ("/documents", "/documents/{name}", "/documents/{name}/ask", "/documents/{name}/summarize",
                 "/jobs/{job_id}", "/v1/chat/completions"):
        assert path in schema["paths"], path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


@pytest.mark.integration  # runs `memorag serve` in subprocesses
def test_refuses_to_bind_beyond_loopback_without_a_token():
    env = {k: v for k, v in __import__("os").environ.items() if k != "MEMORAG_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "memorag.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert "Refusing to bind to 0.0.0.0 without a bearer token" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "memorag.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, env={**env, "MEMORAG_TOKEN": "short"}, timeout=120)
    assert r.returncode == 1 and "at least 16 characters" in r.stderr


# ------------------------------------------------------------------ slow: concurrency, crashes
@pytest.mark.slow
def test_ten_concurrent_questions_all_answered_right(server, memorized):
    def ask(item):
        question, key = item
        with server.client() as c:
            r = c.post("/documents/sample/ask", json={"question": question, "max_new_tokens": 64})
        return question, r.status_code, r.json()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(ask, QUESTIONS))
    seconds = time.perf_counter() - t0
    report = "\n".join(f"{s} {q} -> {b.get('answer', b)}" for q, s, b in results)
    assert all(s == 200 for _, s, _ in results), report
    wrong = [q for (q, _, b), (_, key) in zip(results, QUESTIONS) if not correct(b["answer"], key)]
    assert not wrong, report
    print(f"\n10 concurrent questions in {seconds:.1f} s\n{report}")


@pytest.mark.slow
def test_kill_during_memorize_keeps_the_store_consistent(server, memorized, sample_text, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(server.store / "sample", store / "sample")  # a committed document, as a user had it
    before = (store / "sample" / "entry.json").read_text()
    srv = ServerProcess(store)
    try:
        with srv.client() as c:
            replace = c.post("/documents", json={"name": "sample", "text": sample_text[:9000], "replace": True})
            fresh = c.post("/documents", json={"name": "fresh", "text": sample_text})
            assert replace.status_code == fresh.status_code == 202
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # kill while the memory is being read
                job = c.get(f"/jobs/{replace.json()['id']}").json()
                if job["stage"] == "memory" and 0 < job["done"] < job["total"]:
                    break
                assert job["state"] != "done", "the build finished before it could be killed"
                time.sleep(0.2)
            else:
                raise AssertionError(f"no memory progress in time: {job}")
            srv.kill()
    finally:
        srv.stop()
    assert list((store / ".staging").iterdir()), "the kill should have left a half-built document"
    assert (store / "sample" / "entry.json").read_text() == before
    assert not (store / "fresh").exists()

    srv = ServerProcess(store)  # a new server recovers the store and serves the old document
    try:
        assert not list((store / ".staging").iterdir())
        with srv.client() as c:
            docs = c.get("/documents").json()["documents"]
            assert [d["name"] for d in docs] == ["sample"]
            r = c.post("/documents/sample/ask", json={"question": SAMPLE_QUESTION, "max_new_tokens": 64})
            assert r.status_code == 200, r.text
            assert correct(r.json()["answer"], SAMPLE_KEY), r.json()["answer"]
    finally:
        srv.stop()


@pytest.mark.slow
def test_client_disconnect_frees_the_worker(server, memorized):
    """A client that hangs up mid-stream must not keep the model busy until its answer ends."""
    with server.client() as c:
        with c.stream("POST", "/documents/sample/ask",
                      json={"question": "Describe every character in detail.", "stream": True,
                            "max_new_tokens": 1500}) as r:
            for line in r.iter_lines():
                if line.startswith("event: token"):
                    break  # hang up after the first token
        t0 = time.perf_counter()
        r = c.post("/documents/sample/summarize", json={"max_new_tokens": 16, "top_k": 1})
        assert r.status_code == 200, r.text
    # 1500 tokens of the 1.5B model take minutes on 2 cores; a freed worker answers at once
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
def test_summarize(server, memorized):
    with server.client() as c:
        r = c.post("/documents/sample/summarize", json={"max_new_tokens": 48, "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task_type"] == "summarize" and body["answer"]
    assert body["clues"]["spans"], "the memory listed no key points"


@pytest.mark.unit
def test_cli_help_for_serve_and_ui():
    from typer.testing import CliRunner

    from memorag.cli import app

    runner = CliRunner()
    serve = runner.invoke(app, ["serve", "--help"])
    assert serve.exit_code == 0 and "--max-body-mb" in serve.output and "--token" in serve.output
    ui = runner.invoke(app, ["ui", "--help"])
    assert ui.exit_code == 0 and "streamlit run demo/demo.py" in " ".join(ui.output.split())

"""The HTTP service over a store, as the CLI has it (issue 22): upload txt/md/html/pdf files,
append, list, remove, and ask across the store with numbered citations, streamed and not.

Every model is a scripted fake under a spec string (tests/scriptedspecs.py), so the service
runs end to end (FastAPI app, engine workers, collections, store) without loading a model.
"""

from __future__ import annotations

import time

import pytest
from scriptedspecs import BREAK_MARK, minimal_pdf
from servicekit import read_sse

from memorag.engine import Engine
from memorag.service import Settings, create_app

pytestmark = pytest.mark.unit

PDF_LINES = ["The clerk Ida Marsh kept the brass ledger in the archive vault.",
             "The vault door was painted green in the spring."]
HTML_PAGE = ("<html><head><title>Harbour notes</title><style>p {color: red}</style></head><body>"
             "<h1>Harbour notes</h1><p>The keeper Edda Quill kept the silver key in a blue porcelain jar.</p>"
             "<script>var hidden = 'not text';</script><p>Fishing boats left before dawn.</p></body></html>")
QUESTION = "Where did Ida Marsh keep the brass ledger?"


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    store = tmp_path / "store"
    engine = Engine(store, mem_model="scriptedspecs:llm", ret_model="scriptedspecs:embedder",
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64)
    with TestClient(create_app(Settings(store=str(store), warm_up=False, max_body_bytes=64 * 1024),
                               engine)) as c:
        c.store = store
        yield c
    engine.close(wait=True)


def wait_done(client, response) -> dict:
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/jobs/{response.json()['id']}"
    deadline = time.monotonic() + 60
    while (job := client.get(f"/jobs/{response.json()['id']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def upload(client, filename: str, data: bytes, **form):
    return client.post("/documents/upload", files={"file": (filename, data)}, data=form)


def snapshot(store) -> dict:
    """Every file of the store (outside its hidden working dirs) and its bytes."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and not p.relative_to(store).parts[0].startswith(".")}


def test_upload_a_pdf_and_an_html_file_then_ask_across_the_store_with_numbered_citations(client):
    pdf = wait_done(client, upload(client, "reports/Ledger Report.pdf", minimal_pdf(PDF_LINES)))
    html = wait_done(client, upload(client, "harbour.html", HTML_PAGE.encode()))
    assert pdf["state"] == html["state"] == "done", (pdf, html)
    # named as `memorag add` names the files; the client's folders are not part of the name
    assert (pdf["name"], pdf["source"], html["name"]) == ("Ledger-Report.pdf", "Ledger Report.pdf", "harbour.html")

    listed = {d["name"]: d for d in client.get("/documents").json()["documents"]}
    texts = {n: client.get(f"/documents/{n}", params={"text": "true"}).json()["text"] for n in listed}
    assert set(listed) == {"Ledger-Report.pdf", "harbour.html"}
    assert "Ida Marsh kept the brass ledger" in texts["Ledger-Report.pdf"]
    assert "silver key" in texts["harbour.html"] and "not text" not in texts["harbour.html"]
    import hashlib

    for name, entry in listed.items():
        assert entry["status"] == "ready" and entry["chars"] == len(texts[name])
        assert entry["sha256"] == hashlib.sha256(texts[name].encode()).hexdigest()

    answer = client.post("/ask", json={"question": QUESTION, "route_top": 2}).json()
    with client.stream("POST", "/ask", json={"question": QUESTION, "route_top": 2, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_sse(r)

    assert answer["documents"][0]["name"] == "Ledger-Report.pdf"
    assert {d["name"] for d in answer["documents"]} == set(listed)
    assert "archive vault" in answer["answer"]
    citations = answer["citations"]
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    assert {c["document"] for c in citations} == set(listed)  # evidence from both documents, each named
    for c in citations:  # every citation sits at its character offsets in its document's text
        assert texts[c["document"]][c["start"]:c["end"]] == c["text"]
    ledger = [c["n"] for c in citations if "Ida Marsh" in c["text"] and c["document"] == "Ledger-Report.pdf"]
    assert ledger and answer["marks"] == ledger  # the answer cites the ledger's evidence by its number
    assert f"[{ledger[0]}]" in answer["answer"]

    kinds = [k for k, _ in events]
    assert kinds[0] == "evidence" and kinds[-1] == "done" and "token" in kinds, kinds
    evidence, done = events[0][1], events[-1][1]
    assert evidence["citations"] == done["citations"] == citations  # the same numbered citations in both modes
    assert "".join(d["text"] for k, d in events if k == "token") == done["answer"] == answer["answer"]
    assert done["marks"] == answer["marks"]


def test_refused_uploads_leave_the_store_as_it_was(client):
    wait_done(client, upload(client, "ledger.pdf", minimal_pdf(PDF_LINES)))
    before = snapshot(client.store)

    refusals = {
        "unsupported": (upload(client, "notes.docx", b"PK\x03\x04 not ours"), 400, "unsupported file type '.docx'"),
        "no extension": (upload(client, "README", b"some text"), 400, "unsupported file type '(no extension)'"),
        "empty": (upload(client, "empty.txt", b""), 400, "empty.txt is empty"),
        "blank": (upload(client, "blank.md", b"  \n\n "), 400, "blank.md is empty"),
        "binary": (upload(client, "data.txt", b"ab\x00cd"), 400, "binary"),
        "broken pdf": (upload(client, "broken.pdf", b"%PDF-1.4\nnot really a pdf"), 400, "broken.pdf is not a "
                                                                                        "readable PDF"),
        "scanned pdf": (upload(client, "scan.pdf", minimal_pdf([])), 400, "no text layer"),
        "no visible text": (upload(client, "blank.html", b"<html><script>x=1</script></html>"), 400,
                            "no visible text"),
        "clash": (upload(client, "ledger.pdf", minimal_pdf(["Another ledger entirely."])), 409,
                  "send replace=true"),
        "bad name": (upload(client, "a.txt", b"text", name="../evil"), 400, "Invalid document name"),
        "too large": (upload(client, "big.txt", b"word " * 20_000), 413, "too large"),
        "unknown field": (upload(client, "a.txt", b"text", colour="red"), 422, "unknown form field(s) 'colour'"),
        "two files": (client.post("/documents/upload", files=[("file", ("a.txt", b"one")), ("file", ("b.txt", b"two"))]),
                      422, "one file per upload"),
        "no file": (client.post("/documents/upload", data={"name": "x"}), 422, "file"),
        "json body": (client.post("/documents/upload", json={"name": "x", "text": "y"}), 422, "file"),
    }
    for what, (r, status, message) in refusals.items():
        assert r.status_code == status, (what, r.text)
        assert message in r.json()["error"], (what, r.json())
    assert snapshot(client.store) == before
    assert client.get("/jobs").json()["jobs"][-1]["name"] == "ledger.pdf"  # no job was queued for any of them

    chinese = wait_done(client, upload(client, "季度 报告.md", "第一季度的收入增长了百分之十。".encode()))
    assert chinese["state"] == "done" and chinese["name"] == "季度-报告.md"  # named as `memorag add` names it

    same = upload(client, "ledger.pdf", minimal_pdf(PDF_LINES))  # the same text again: nothing to do
    assert same.status_code == 200 and same.json() == {"name": "ledger.pdf", "status": "unchanged"}
    replaced = wait_done(client, upload(client, "new.pdf", minimal_pdf(["Another ledger entirely."]),
                                        name="ledger.pdf", replace="true"))
    assert replaced["state"] == "done" and replaced["replace"] is True
    assert client.get("/documents/ledger.pdf", params={"text": "true"}).json()["text"] == "Another ledger entirely."


def test_append_list_and_remove_documents(client):
    job = wait_done(client, upload(client, "harbour.md", b"The keeper Edda Quill kept the silver key in a jar."))
    assert job["kind"] == "memorize" and job["state"] == "done"
    old = client.get("/documents/harbour.md").json()

    added = "The harbour master Ruth Calloway painted the tide gauge bright orange."
    appended = wait_done(client, client.post("/documents/harbour.md/append", json={"text": added}))
    assert appended["kind"] == "append" and appended["state"] == "done", appended
    assert appended["stats"]["append"]["appended_chars"] == len(added) + 2
    entry = client.get("/documents/harbour.md", params={"text": "true"}).json()
    assert entry["text"] == "The keeper Edda Quill kept the silver key in a jar.\n\n" + added
    assert entry["version"] != old["version"] and entry["sha256"] != old["sha256"]
    answer = client.post("/ask", json={"question": "Who painted the tide gauge orange?"}).json()
    assert any("Ruth Calloway" in c["text"] and c["document"] == "harbour.md"
               and entry["text"][c["start"]:c["end"]] == c["text"] for c in answer["citations"])

    before = snapshot(client.store)
    for r, status, message in (
            (client.post("/documents/nope/append", json={"text": "x"}), 404, "No memorized document named 'nope'"),
            (client.post("/documents/harbour.md/append", json={"text": " \n"}), 400, "text is empty"),
            (client.post("/documents/harbour.md/append", json={"text": "x", "replace": True}), 422, "replace"),
            (client.post("/documents/harbour.md/append", json={}), 422, "text"),
            (client.post("/documents/%2E%2E/append", json={"text": "x"}), 400, "Invalid document name")):
        assert r.status_code == status, r.text
        assert message in r.json()["error"], r.json()
    assert snapshot(client.store) == before

    listed = client.get("/documents").json()
    assert [d["name"] for d in listed["documents"]] == ["harbour.md"] and listed["building"] == []
    assert client.delete("/documents/harbour.md").json() == {"deleted": "harbour.md"}
    assert client.get("/documents").json()["documents"] == []
    gone = client.delete("/documents/harbour.md")
    assert gone.status_code == 404 and "harbour.md" in gone.json()["error"]
    empty = client.post("/ask", json={"question": "Who painted the tide gauge?"})
    assert empty.status_code == 409 and "no documents" in empty.json()["error"]


def test_a_build_or_append_that_fails_midway_leaves_the_store_as_it_was(tmp_path):
    from fastapi.testclient import TestClient

    store = tmp_path / "store"
    engine = Engine(store, mem_model="scriptedspecs:breaking_llm", ret_model="scriptedspecs:embedder",
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64)
    with TestClient(create_app(Settings(store=str(store), warm_up=False), engine)) as c:
        wait_done(c, upload(c, "ledger.pdf", minimal_pdf(PDF_LINES)))
        before = snapshot(store)
        replaced = wait_done(c, upload(c, "ledger.pdf", minimal_pdf([f"A new ledger {BREAK_MARK}."]), replace="true"))
        fresh = wait_done(c, upload(c, "other.txt", f"Another document {BREAK_MARK}.".encode()))
        appended = wait_done(c, c.post("/documents/ledger.pdf/append", json={"text": f"More {BREAK_MARK}."}))
        after = snapshot(store)
        listed = c.get("/documents").json()
        answer = c.post("/ask", json={"question": QUESTION}).json()
    engine.close(wait=True)
    for job in (replaced, fresh, appended):
        assert job["state"] == "failed" and "scripted backend broke" in job["error"], job
    assert after == before and not list((store / ".staging").iterdir())
    assert [(d["name"], d["status"]) for d in listed["documents"]] == [("ledger.pdf", "ready")]
    assert listed["building"] == []
    assert "archive vault" in answer["answer"]  # the old document still answers


def test_a_document_being_built_is_listed_as_updating_and_refuses_append(tmp_path):
    from fastapi.testclient import TestClient

    store = tmp_path / "store"
    engine = Engine(store, mem_model="scriptedspecs:slow_llm", ret_model="scriptedspecs:embedder",
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64)
    long_text = " ".join(f"Line {i}: the keeper counted {i} boats in the harbour." for i in range(200))
    with TestClient(create_app(Settings(store=str(store), warm_up=False), engine)) as c:
        wait_done(c, upload(c, "log.txt", b"The first entry of the harbour log."))
        r = upload(c, "log.txt", long_text.encode(), replace="true")
        assert r.status_code == 202, r.text
        listed = c.get("/documents").json()
        busy = c.post("/documents/log.txt/append", json={"text": "More."})
        again = upload(c, "log.txt", b"Yet another text.", replace="true")
        final = wait_done(c, r)
        after = c.get("/documents").json()["documents"]
    engine.close(wait=True)
    assert listed["documents"][0]["status"] == "updating" and listed["documents"][0]["job"] == r.json()["id"]
    assert busy.status_code == 409 and "being memorized" in busy.json()["error"]
    assert again.status_code == 409 and "being memorized" in again.json()["error"]
    assert final["state"] == "done" and after[0]["status"] == "ready" and "job" not in after[0]


def test_ask_across_the_store_options(client):
    wait_done(client, upload(client, "ledger.pdf", minimal_pdf(PDF_LINES)))
    rag = client.post("/ask", json={"question": QUESTION, "task_type": "rag"}).json()
    assert rag["task_type"] == "rag" and rag["clues"] == {}  # plain RAG: no memory was asked
    assert rag["citations"] and rag["citations"][0]["document"] == "ledger.pdf"
    memorag = client.post("/ask", json={"question": QUESTION}).json()
    assert memorag["task_type"] == "memorag" and memorag["clues"]["ledger.pdf"]["spans"]
    for body, message in (({"question": QUESTION, "task_type": "summarize"}, "task_type"),
                          ({"question": QUESTION, "route_top": 0}, "route_top"),
                          ({"question": QUESTION, "cite": False}, "cite")):
        r = client.post("/ask", json=body)
        assert r.status_code == 422 and message in r.json()["error"], r.text


def test_the_openai_compatible_endpoint_answers_the_official_client(client):
    openai = pytest.importorskip("openai")
    wait_done(client, upload(client, "ledger.pdf", minimal_pdf(PDF_LINES)))
    oa = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0)
    assert [m.id for m in oa.models.list()] == ["ledger.pdf"]
    reply = oa.chat.completions.create(model="ledger.pdf", messages=[{"role": "user", "content": QUESTION}])
    assert "archive vault" in reply.choices[0].message.content
    assert reply.model_extra["memorag"]["evidence"]
    streamed = oa.chat.completions.create(model="ledger.pdf", stream=True,
                                          messages=[{"role": "user", "content": QUESTION}])
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == \
        reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError, match="nope"):
        oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": QUESTION}])

"""The Streamlit demo (demo/demo.py) driven end to end by Streamlit's AppTest on the default
models: paste a document, memorize it with the progress bar, ask with memorag and plain
RAG side by side, and check clues, evidence, highlights and both answers.

The screenshot test (slow) starts `streamlit run` and opens the page in Debian's headless
Chromium, then saves docs/demo.png showing clues, evidence and an answer.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("streamlit")
from servicekit import free_port  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from memorag.cli import SAMPLE_QUESTION  # noqa: E402
from memorag.demo_app import citation_lines, clue_lines, highlighted  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "demo.py"

DOC = (
    "The Varrow Island lighthouse was built in 1868 from grey granite quarried at Penmore. "
    "Its first keeper, Edda Quill, kept it from 1871 to 1903 and logged every passing ship in a green ledger. "
    "In 1904 the lamp was replaced by a Fresnel lens made in Paris.\n\n"
    "The island's only school was founded by the keeper's brother, Tobias Quill, in 1880. "
    "Fishing boats from Penmore still land their catch at the island's north harbour on Tuesdays.\n\n"
    "Every August the islanders hold a regatta; the winning crew receives a silver oar. "
    "The ferry to the mainland leaves at seven each morning and takes forty minutes."
)


@pytest.mark.unit
def test_highlight_escapes_text_and_marks_each_span():
    text = "<b>one</b> two three four"
    out = highlighted(text, {"memorag": [{"start": 0, "end": 10}], "rag": [{"start": 4, "end": 14}]})
    assert "<b>" not in out and "&lt;b&gt;" in out  # the document cannot inject HTML
    assert out.count("<mark") == 3  # memorag only, both, rag only
    assert 'title="memorag, rag evidence"' in out


@pytest.mark.unit
def test_clue_lines_follow_grounding_marks():
    lines = clue_lines({"spans": ["A span here", "Another span"], "questions": ["Who came?"],
                        "answer": "", "grounded": ["A span here.", "", "Who came"]})
    assert lines == [("recalled", "A span here", True, None), ("recalled", "Another span", False, None),
                     ("question", "Who came?", True, None)]
    # with the evidence: a found clue is marked by whether an evidence chunk holds its sentence
    evidence = [{"chunk_id": 4, "text": "Then who came? Nobody.\n\nA span  here."}]
    with_evidence = clue_lines({"spans": ["A span here", "Another span"], "questions": ["Who came?"],
                                "grounded": ["A span here.", "", "Who came"]}, evidence)
    assert [used for *_, used in with_evidence] == [True, None, True]
    elsewhere = clue_lines({"spans": ["A span here"], "grounded": ["A span here."]},
                           [{"chunk_id": 1, "text": "Something else entirely."}])
    assert elsewhere == [("recalled", "A span here", True, False)]


@pytest.mark.unit
def test_citation_lines_number_each_piece_of_evidence_and_say_which_the_answer_cites():
    citations = [{"n": 1, "document": "ledger.pdf", "start": 10, "end": 42, "text": "The clerk  kept\nthe ledger."},
                 {"n": 2, "document": "harbour.txt", "start": 0, "end": 300, "text": "word " * 60}]
    lines = citation_lines(citations, marks=[2])
    assert lines[0] == "[1] ledger.pdf · chars 10–42: The clerk kept the ledger."
    assert lines[1].startswith("[2] harbour.txt · chars 0–300 (cited): word word") and lines[1].endswith("…")


# Two documents for the store-wide question: it is answerable from the first only.
STORE_DOCS = {
    "ledger.txt": "The clerk Ida Marsh kept the brass ledger in the archive vault.\n\n"
                  "The vault door was painted green in the spring.",
    "harbour.txt": "The keeper Edda Quill kept the silver key in a blue porcelain jar.\n\n"
                   "Fishing boats left the harbour before dawn.",
}
STORE_QUESTION = "Where did Ida Marsh keep the brass ledger?"


@pytest.fixture
def scripted_engine(tmp_path, monkeypatch):
    """The demo's engine on the scripted fakes (tests/scriptedspecs.py), over a store holding
    STORE_DOCS: the page runs in this process (AppTest), with no model loaded."""
    import memorag.demo_app
    from memorag.engine import Engine

    engine = Engine(tmp_path / "store", mem_model="scriptedspecs:llm", ret_model="scriptedspecs:embedder",
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64)
    for name, text in STORE_DOCS.items():
        job = engine.memorize(name, text)
        deadline = time.monotonic() + 60
        while engine.job(job.id).state not in ("done", "failed"):
            assert time.monotonic() < deadline, engine.job(job.id)
            time.sleep(0.01)
        assert engine.job(job.id).state == "done", engine.job(job.id).error
    monkeypatch.setattr(memorag.demo_app, "get_engine", lambda store: engine)
    yield engine
    engine.close(wait=True)


def untimed(answer: dict) -> dict:
    """A store-wide answer without its timings (the clues' seconds included)."""
    return {k: v for k, v in answer.items() if k != "timings"} | {"clues": {
        n: {k: v for k, v in c.items() if k != "seconds"} for n, c in answer["clues"].items()}}


@pytest.mark.unit
def test_demo_asks_across_the_store_and_shows_numbered_citations(scripted_engine):
    at = AppTest.from_file(str(DEMO), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    at.radio(key="scope").set_value("store").run()
    assert "2 · Ask across the store (2 documents)" in [h.value for h in at.main.header]
    assert at.radio(key="store_task").options == ["memorag: clues + retrieval", "qa: surrogate questions",
                                                  "rag: plain RAG"]  # no summarize across a store
    at.text_input(key="question").input(STORE_QUESTION).run()
    at.button(key="ask_store").click().run()
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)

    result = at.session_state["store_results"]["result"]
    # The same call as `memorag ask --store` and POST /ask make (Engine.ask_store -> Collection.ask):
    # the page shows what that call answers, not an answer of its own.
    direct = scripted_engine.ask_store(STORE_QUESTION).result(timeout=60)
    assert untimed(result) == untimed(direct)
    assert "archive vault" in result["answer"] and result["documents"][0]["name"] == "ledger.txt"
    citations = result["citations"]
    assert citations and [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    for c in citations:  # every citation's text is its document's text at its offsets
        assert STORE_DOCS[c["document"]][c["start"]:c["end"]] == c["text"]
        assert scripted_engine.store.text(c["document"])[c["start"]:c["end"]] == c["text"]
    assert any(c["document"] == "ledger.txt" and "Ida Marsh" in c["text"] for c in citations)

    md = [str(m.value) for m in at.markdown]
    answer = next(m for m in md if m.startswith("**Answer**"))
    assert "archive vault" in answer and "routed to ledger.txt" in answer
    shown = next(m for m in md if m.startswith("**Citations**"))
    assert shown.splitlines()[2:] == [f"- {line}" for line in citation_lines(citations, result["marks"])]
    assert "Clues from the memories" in _texts(at.markdown)
    # each cited document is shown with its citations highlighted in place
    assert "3 · Citations in their documents" in [h.value for h in at.main.header]
    ledger = [c for c in citations if c["document"] == "ledger.txt"]
    assert highlighted(STORE_DOCS["ledger.txt"], {"memorag": ledger}) in md

    # plain RAG across the store: no memory, still cited
    at.radio(key="store_task").set_value("rag").run()
    at.button(key="ask_store").click().run()
    assert not at.exception and not at.error, (at.exception, _texts(at.error))
    rag = at.session_state["store_results"]["result"]
    assert rag["task_type"] == "rag" and rag["clues"] == {} and rag["citations"]
    assert all(STORE_DOCS[c["document"]][c["start"]:c["end"]] == c["text"] for c in rag["citations"])

    # the question is required
    at.text_input(key="question").input("").run()
    at.button(key="ask_store").click().run()
    assert "Type a question first." in _texts(at.warning)


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_demo_memorizes_and_compares_with_plain_rag(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORAG_STORE", str(tmp_path / "store"))
    at = AppTest.from_file(str(DEMO), default_timeout=900)
    at.run()
    assert not at.exception, at.exception
    at.radio(key="source").set_value("Paste text").run()
    at.text_area(key="paste").input(DOC).run()
    at.text_input(key="name-Paste text").input("lighthouse").run()
    at.button(key="memorize").click().run()
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)
    assert "Memorized **lighthouse**" in _texts(at.success)
    assert (tmp_path / "store" / "lighthouse" / "state" / "manifest.json").is_file()
    assert "lighthouse" in _texts(at.sidebar.markdown)

    at.text_input(key="question").input("Who was the first keeper of the lighthouse?").run()
    assert at.checkbox(key="compare").value  # side by side by default
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)
    assert [s.value for s in at.subheader] == ["memorag", "plain RAG"]
    md = _texts(at.markdown)
    answers = [m.value for m in at.markdown if str(m.value).startswith("**Answer**")]
    assert len(answers) == 2, md
    assert all("Edda Quill" in a for a in answers), answers
    assert "Clues from the memory" in md and "**Evidence**" in md
    assert "plain RAG searches with the question alone" in _texts(at.caption)
    assert '<mark style="background:' in md and "Edda Quill" in md  # highlighted document

    # task type switch: plain RAG alone shows one column
    at.radio(key="task").set_value("rag").run()
    at.button(key="ask").click().run()
    assert [s.value for s in at.subheader] == ["plain RAG"]
    assert any("Edda Quill" in str(m.value) for m in at.markdown if str(m.value).startswith("**Answer**"))

    # the memorized document is listed and can be picked in a new session
    at2 = AppTest.from_file(str(DEMO), default_timeout=900)
    at2.run()
    assert at2.radio(key="source").value == "A memorized document"
    assert at2.selectbox(key="pick").options == ["lighthouse"]
    # delete from the sidebar
    at2.button(key="delete-lighthouse").click().run()
    assert not (tmp_path / "store" / "lighthouse").exists()
    assert "None yet" in _texts(at2.sidebar.markdown)
    # bad input: an invalid name is refused with one message, nothing stored
    at.radio(key="source").set_value("Paste text").run()
    at.text_area(key="paste").input("Some text.").run()
    at.text_input(key="name-Paste text").input("../escape").run()
    at.button(key="memorize").click().run()
    assert "Invalid document name" in _texts(at.error)
    assert not (tmp_path / "escape").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Cdp:
    """Just enough of the Chrome DevTools Protocol: navigate, read the page, take a screenshot."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        return self.call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True
                         )["result"].get("value", "")


def _screenshot(cdp: _Cdp, url: str) -> bytes:
    """Open the demo with the sample question preselected; wait until both answers are in; capture."""
    q = httpx.QueryParams({"doc": "sample", "q": SAMPLE_QUESTION, "task": "memorag", "compare": "1"})
    cdp.call("Page.navigate", url=f"{url}/?{q}")
    deadline = time.monotonic() + 900
    text = ""
    while time.monotonic() < deadline:
        text = cdp.text()
        if "Evidence in the document" in text and "▌" not in text and "Running..." not in text:
            break
        time.sleep(2)
    assert "Clues from the memory" in text and "Evidence in the document" in text, text[-2000:]
    assert text.count("Answer") >= 2 and "Bingley" in text, text[-2000:]
    time.sleep(1)  # let the last paint land
    return base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])


@pytest.mark.slow
def test_screenshot_in_headless_chromium(tmp_path, sample_text):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from websockets.sync.client import connect

    from memorag.engine import Engine

    store = tmp_path / "store"
    engine = Engine(store)
    job = engine.memorize("sample", sample_text)
    while engine.job(job.id).finished is None:
        time.sleep(1)
    assert engine.job(job.id).state == "done", engine.job(job.id).error
    engine.close()

    port = free_port()
    env = {**os.environ, "MEMORAG_STORE": str(store)}
    with open(tmp_path / "streamlit.log", "wb") as app_log, open(tmp_path / "chromium.log", "wb") as browser_log:
        app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(DEMO), "--server.headless", "true",
                                "--server.address", "127.0.0.1", "--server.port", str(port),
                                "--browser.gatherUsageStats", "false"], env=env, stdout=app_log, stderr=subprocess.STDOUT)
        browser = None
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(240):
                try:
                    if httpx.get(url + "/_stcore/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            profile = tmp_path / "chromium-profile"
            browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                        "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                        "--window-size=1500,2300", "about:blank"],
                                       stdout=subprocess.DEVNULL, stderr=browser_log)
            for _ in range(100):
                if (profile / "DevToolsActivePort").is_file() and (profile / "DevToolsActivePort").read_text().strip():
                    break
                time.sleep(0.2)
            devtools = int((profile / "DevToolsActivePort").read_text().split()[0])
            pages = httpx.get(f"http://127.0.0.1:{devtools}/json/list").json()
            ws_url = next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]
            with connect(ws_url, max_size=64 * 1024 * 1024) as ws:
                shot = _screenshot(_Cdp(ws), url)
            out = ROOT / "docs" / "demo.png"
            out.write_bytes(shot)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000
        finally:
            if browser is not None:
                browser.terminate()
                browser.wait(30)
            app.terminate()
            app.wait(30)


def test_the_evidence_panel_says_how_each_chunk_was_found():
    from memorag.demo_app import render_evidence

    class Slot:  # a Streamlit placeholder: keeps what it was told to show
        shown = ""

        def markdown(self, text: str) -> None:
            self.shown = text

    slot = Slot()
    render_evidence(slot, [{"chunk_id": 3, "score": 0.5, "text": "The ferry ran daily.", "found_by": ["memory"]},
                           {"chunk_id": 1, "score": 0.9, "text": "The mill ground grain.", "found_by": ["question"]},
                           {"chunk_id": 2, "score": 0.1, "text": "Older servers send no sources."}])
    lines = slot.shown.splitlines()
    assert "found by the memory only" in lines[1] and "found by the question)" in lines[2]
    assert "found by" not in lines[3]

"""The memorag demo page: watch the memory at work.

Run with ``streamlit run demo/demo.py`` or ``memorag ui``. Documents live in the same
store as ``memorag serve`` (``MEMORAG_STORE``, default ``./memorag_store``), so a document
memorized by one is there for the other; ``MEMORAG_CONFIG`` names a configuration file
(memorag.config) for its models and options (``memorag ui --config FILE``).

The page: pick a memorized document or paste / upload one (or take the bundled sample) and
memorize it with a live progress bar; ask a question with a task type; see the memory's
clues (marked found / not found in the document), the evidence chunks, the answer as it
streams, plain RAG's answer to the same question beside it, and the evidence highlighted
in its place in the document.

Or ask across the whole store, as ``memorag ask --store`` and the service's ``POST /ask`` do
(the same ``Collection.ask``, through :meth:`memorag.engine.Engine.ask_store`): the question
is routed to the documents that match it, and the answer is shown with its numbered
citations (document, character offsets), each highlighted in its document.

URL parameters preselect and run a question (used for the README screenshot):
``?doc=NAME&q=QUESTION&task=memorag&compare=1``, or across the store ``?scope=store&q=QUESTION``.
"""

from __future__ import annotations

import html
import os
import queue
import re
import time
from importlib.resources import files
from pathlib import Path

import streamlit as st

from memorag.cli import CONFIG_ENV, SAMPLE, SAMPLE_QUESTION
from memorag.config import load_config
from memorag.docstore import check_name
from memorag.engine import Engine
from memorag.errors import MemoRAGError
from memorag.memory import Clues
from memorag.plans import found_by_words
from memorag.text import decode_text

TASKS = {"memorag": "memorag: clues + retrieval", "qa": "qa: surrogate questions", "rag": "rag: plain RAG",
         "summarize": "summarize the document"}
SOURCES = ["A memorized document", "Paste text", "Upload a file", "The bundled sample"]
SCOPES = {"document": "this document", "store": "across the store, with citations"}
STORE_TASKS = {t: label for t, label in TASKS.items() if t != "summarize"}  # a store is not summarized whole
# Highlight colours: memorag's evidence, plain RAG's, and chunks both found.
COLOURS = {"memorag": "#ffe58a", "rag": "#b9dcff", "both": "#c6f0c2"}


@st.cache_resource(show_spinner="Starting the models...")
def get_engine(store: str) -> Engine:
    """One engine (and one set of models) per store, shared by every browser session."""
    return Engine(store, **engine_options())


def engine_options() -> dict:
    """The engine's models and options: from the configuration file named by ``MEMORAG_CONFIG``
    (``memorag ui --config FILE`` sets it), else the defaults."""
    path = os.environ.get(CONFIG_ENV)
    return load_config(path).engine_kwargs() if path else {}


def store_path() -> str:
    return os.environ.get("MEMORAG_STORE", "memorag_store")


# -------------------------------------------------------------------- rendering
def clue_lines(clues: dict, evidence: list[dict] | None = None) -> list[tuple[str, str, bool | None, bool | None]]:
    """(kind, line, found, in the evidence) for each clue line, in the pipeline's order
    (Clues.lines); "in the evidence" (Clues.in_evidence) is None without ``evidence``."""
    c = Clues(question="", spans=clues.get("spans") or [], questions=clues.get("questions") or [],
              answer=clues.get("answer") or "", grounded=clues.get("grounded") or [])
    used = c.in_evidence([ev["text"] for ev in evidence]) if evidence is not None else []
    spans = {s.strip().lower() for s in c.spans}
    out = []
    for i, line in enumerate(c.lines()):
        found = bool(c.grounded[i]) if i < len(c.grounded) else None
        out.append(("recalled" if line.strip().lower() in spans else "question", line, found,
                    used[i] if i < len(used) else None))
    return out


def render_clues(slot, clues: dict | None, evidence: list[dict] | None = None) -> None:
    if not clues:
        slot.caption("No clues: plain RAG searches with the question alone.")
        return
    rows = []
    for kind, line, found, used in clue_lines(clues, evidence):
        # Words, not emoji: a headless browser or a terminal font may have no emoji glyphs.
        if found is None:
            mark = ""
        elif not found:
            mark = " — *not found in the document*"
        else:
            where = "" if used is None else (", in the evidence" if used else ", not in the evidence")
            mark = f" — *found in the document{where}*"
        rows.append(f"- **{kind}:** {line}{mark}")
    slot.markdown("**Clues from the memory**\n\n" + ("\n".join(rows) or "_(none)_"))


def render_answer(slot, text: str, done: bool) -> None:
    slot.markdown("**Answer**\n\n" + (text or "…") + ("" if done else " ▌"))


def render_evidence(slot, evidence: list[dict] | None) -> None:
    if evidence is None:
        slot.caption("Retrieving evidence…")
        return
    lines = ["**Evidence**"]
    for ev in evidence:
        snippet = " ".join(ev["text"].split())
        how = found_by_words(ev.get("found_by") or [])
        lines.append(f"- chunk {ev['chunk_id']} (score {ev['score']:.3f}{'; ' + how if how else ''}): "
                     f"{snippet[:240]}{'…' if len(snippet) > 240 else ''}")
    slot.markdown("\n".join(lines))


def citation_lines(citations: list[dict], marks: list[int]) -> list[str]:
    """One line per numbered citation: number, document, character offsets [start, end) into
    its text, whether the answer cites it, and the start of its text."""
    lines = []
    for c in citations:
        snippet = " ".join(c["text"].split())
        cited = " (cited)" if c["n"] in marks else ""
        lines.append(f"[{c['n']}] {c['document']} · chars {c['start']}–{c['end']}{cited}: "
                     f"{snippet[:200]}{'…' if len(snippet) > 200 else ''}")
    return lines


def render_citations(slot, citations: list[dict] | None, marks: list[int]) -> None:
    if citations is None:
        slot.caption("Routing the question and retrieving evidence…")
        return
    rows = [f"- {line}" for line in citation_lines(citations, marks)]
    slot.markdown("**Citations**\n\n" + ("\n".join(rows) or "_(no evidence)_"))


def render_store_clues(slot, clues: dict[str, dict]) -> None:
    if not clues:
        slot.caption("No clues: plain RAG searches with the question alone.")
        return
    rows = []
    for document, per_document in clues.items():
        rows.append(f"- **{document}**")
        rows.extend(f"    - {line}" for _, line, _, _ in clue_lines(per_document))
    slot.markdown("**Clues from the memories**\n\n" + "\n".join(rows))


def highlighted(text: str, spans: dict[str, list[dict]]) -> str:
    """The document as HTML with each evidence chunk marked in its place (escaped; only <mark> added)."""
    owner: dict[tuple[int, int], set[str]] = {}
    for who, evidence in spans.items():
        for ev in evidence or []:
            if ev.get("start") is not None:
                owner.setdefault((ev["start"], ev["end"]), set()).add(who)
    cuts = sorted({0, len(text), *(p for span in owner for p in span)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        who = set().union(*[w for (s, e), w in owner.items() if s <= a and b <= e]) if owner else set()
        piece = html.escape(text[a:b])
        if who:
            colour = COLOURS["both"] if len(who) > 1 else COLOURS[next(iter(who))]
            out.append(f'<mark style="background:{colour}" title="{", ".join(sorted(who))} evidence">{piece}</mark>')
        else:
            out.append(piece)
    body = "".join(out)
    return ('<div style="height:420px;overflow-y:scroll;white-space:pre-wrap;font-family:Georgia,serif;'
            'font-size:0.9rem;border:1px solid #ddd;padding:0.8rem;border-radius:0.4rem">' + body + "</div>")


# ------------------------------------------------------------------------ actions
def memorize(engine: Engine, name: str, text: str, replace: bool) -> bool:
    try:
        job = engine.memorize(name, text, replace=replace)
    except MemoRAGError as exc:
        st.error(str(exc))
        return False
    bar = st.progress(0.0, text="queued")
    while True:
        j = engine.job(job.id)
        label = {"loading": "loading the models", "index": "embedding chunks", "compress": "compressing",
                 "memory": "the memory is reading"}.get(j.stage, j.stage)
        count = f" ({j.done:,} / {j.total:,})" if j.total else ""
        bar.progress(min(1.0, j.fraction), text=f"{label}{count}")
        if j.state in ("done", "failed"):
            break
        time.sleep(0.3)
    if j.state == "failed":
        st.error(f"Memorizing failed: {j.error}")
        return False
    stats = j.stats or {}
    st.success(f"Memorized **{name}**: {stats.get('memory_tokens', '?')} memory tokens, "
               f"{stats.get('chunks', '?')} chunks, {stats.get('total_seconds', '?')} s.")
    st.session_state["current_doc"] = name
    return True


def ask(engine: Engine, name: str, question: str, tasks: list[str]) -> dict[str, dict]:
    """Queue one question per task and stream every answer into its own column."""
    columns = st.columns(len(tasks))
    panels, streams, results = {}, {}, {}
    for col, task in zip(columns, tasks):
        with col:
            st.subheader("memorag" if task != "rag" else "plain RAG", anchor=False)
            panels[task] = {"clues": st.empty(), "answer": st.empty(), "evidence": st.empty()}
        render_evidence(panels[task]["evidence"], None)
        events: queue.Queue = queue.Queue()
        try:
            # Callbacks run on the engine's worker thread; only this script thread may draw.
            future = engine.ask(name, question if task != "summarize" else None, task_type=task,
                                max_new_tokens=256 if task != "summarize" else 400,
                                top_k=4 if task == "summarize" else None,
                                on_token=lambda t, q=events: q.put(("token", t)),
                                on_evidence=lambda ev, q=events: q.put(("evidence", ev)))
        except MemoRAGError as exc:
            panels[task]["answer"].error(str(exc))
            continue
        streams[task] = (future, events, [])
    while streams:
        for task, (future, events, pieces) in list(streams.items()):
            p = panels[task]
            try:
                while True:
                    kind, data = events.get_nowait()
                    if kind == "evidence":
                        render_clues(p["clues"], data["clues"], data["evidence"])
                        render_evidence(p["evidence"], data["evidence"])
                    else:
                        pieces.append(data)
                        render_answer(p["answer"], "".join(pieces), done=False)
            except queue.Empty:
                pass
            if future.done() and events.empty():
                del streams[task]
                exc = future.exception()
                if exc is not None:
                    p["answer"].error(str(exc) if isinstance(exc, MemoRAGError) else f"internal error: {exc!r}")
                    continue
                results[task] = future.result()
                t = results[task]["timings"]
                p["answer"].markdown(f"**Answer**\n\n{results[task]['answer']}\n\n"
                                     f"<small>retrieval {t.get('clues_and_retrieval')} s · generation "
                                     f"{t.get('generation')} s</small>", unsafe_allow_html=True)
        time.sleep(0.05)
    return results


def ask_store(engine: Engine, question: str, task: str) -> dict | None:
    """Ask across the store (Engine.ask_store: Collection.ask with numbered citations, as
    `memorag ask --store` and POST /ask) and stream the answer, then show its citations."""
    st.subheader("across the store", anchor=False)
    clues_slot, answer_slot, citations_slot = st.empty(), st.empty(), st.empty()
    render_citations(citations_slot, None, [])
    events: queue.Queue = queue.Queue()
    try:
        # Callbacks run on the engine's worker thread; only this script thread may draw.
        future = engine.ask_store(question, task_type=task, max_new_tokens=256,
                                  on_token=lambda t: events.put(("token", t)),
                                  on_evidence=lambda ev: events.put(("evidence", ev)))
    except MemoRAGError as exc:
        answer_slot.error(str(exc))
        return None
    pieces: list[str] = []
    while True:
        finished = future.done()  # read before draining: no event can follow a finished call
        try:
            while True:
                kind, data = events.get_nowait()
                if kind == "evidence":
                    render_store_clues(clues_slot, data["clues"])
                    render_citations(citations_slot, data["citations"], [])
                else:
                    pieces.append(data)
                    render_answer(answer_slot, "".join(pieces), done=False)
        except queue.Empty:
            pass
        if finished:
            break
        time.sleep(0.05)
    exc = future.exception()
    if exc is not None:
        answer_slot.error(str(exc) if isinstance(exc, MemoRAGError) else f"internal error: {exc!r}")
        return None
    result = future.result()
    show_store_answer(result, clues_slot, answer_slot, citations_slot)
    return result


def show_store_answer(result: dict, clues_slot=None, answer_slot=None, citations_slot=None) -> None:
    routed = ", ".join(f"{d['name']} ({d['score']:.3f})" for d in result["documents"])
    render_store_clues(clues_slot or st.empty(), result.get("clues") or {})
    # The answer is shown beside HTML of our own: escaped, so text from a document stays text.
    (answer_slot or st.empty()).markdown(f"**Answer**\n\n{html.escape(result['answer'], quote=False)}\n\n"
                                         f"<small>routed to {html.escape(routed)}</small>", unsafe_allow_html=True)
    render_citations(citations_slot or st.empty(), result["citations"], result["marks"])


def show_results(results: dict[str, dict]) -> None:
    tasks = list(results)
    for col, task in zip(st.columns(len(tasks)), tasks):
        r = results[task]
        with col:
            st.subheader("memorag" if task != "rag" else "plain RAG", anchor=False)
            render_clues(st.empty(), r.get("clues"), r.get("evidence"))
            st.markdown(f"**Answer**\n\n{r['answer']}")
            render_evidence(st.empty(), r.get("evidence"))


# --------------------------------------------------------------------------- page
def sidebar(engine: Engine) -> None:
    docs = engine.store.list()
    with st.sidebar:
        st.header("Stored documents")
        st.caption(f"Store: `{engine.store.root}`")
        if not docs:
            st.write("None yet: memorize one.")
        for d in docs:
            stats = d.get("stats") or {}
            st.markdown(f"**{d['name']}**  \n{d['chars']:,} chars · {stats.get('memory_tokens', '?')} memory tokens")
            if st.button("Delete", key=f"delete-{d['name']}", help=f"Delete {d['name']} from the store"):
                try:
                    engine.delete(d["name"])
                    if st.session_state.get("current_doc") == d["name"]:
                        st.session_state.pop("current_doc", None)
                    st.rerun()
                except MemoRAGError as exc:
                    st.error(str(exc))


def main() -> None:
    st.set_page_config(page_title="memorag demo", layout="wide")
    engine = get_engine(store_path())
    params = st.query_params
    if "auto" not in st.session_state:  # first run of this browser session: honour URL parameters
        st.session_state["auto"] = bool(params.get("q"))
        if params.get("doc"):
            st.session_state["current_doc"] = params["doc"]
        if params.get("q"):
            st.session_state["question"] = params["q"]
        if params.get("task") in TASKS:
            st.session_state["task"] = params["task"]
        if params.get("task") in STORE_TASKS:
            st.session_state["store_task"] = params["task"]
        if params.get("scope") in SCOPES:
            st.session_state["scope"] = params["scope"]
        st.session_state["compare"] = params.get("compare", "1") != "0"
    st.title("memorag: watch the memory at work", anchor=False)
    st.caption("The memory model reads the document once. For each question it recalls clues; the clues and the "
               "question find the evidence; the generator answers from the evidence.")
    try:
        page(engine)
    finally:
        sidebar(engine)  # drawn last, so a document memorized in this run is listed


def page(engine: Engine) -> None:
    names = [d["name"] for d in engine.store.list()]

    st.header("1 · Document", anchor=False)
    source = st.radio("Source", SOURCES, horizontal=True, key="source",
                      index=0 if names else 3, label_visibility="collapsed")
    if source == SOURCES[0]:
        if not names:
            st.info("No memorized documents yet: paste, upload or take the bundled sample.")
        else:
            current = st.session_state.get("current_doc")
            picked = st.selectbox("Memorized document", names, index=names.index(current) if current in names else 0,
                                  key="pick")
            st.session_state["current_doc"] = picked
    else:
        text = None
        default_name = "pasted"
        if source == SOURCES[1]:
            text = st.text_area("Paste the document", height=200, key="paste") or None
        elif source == SOURCES[2]:
            upload = st.file_uploader("A UTF-8 text file", type=["txt", "md"], key="upload")
            if upload is not None:
                default_name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(upload.name).stem).strip(".-_")[:64] or "upload"
                try:
                    text = decode_text(upload.getvalue(), upload.name)
                except MemoRAGError as exc:
                    st.error(str(exc))
        else:
            text = files("memorag").joinpath(SAMPLE).read_text(encoding="utf-8")
            default_name = "sample"
            st.caption(f"Pride and Prejudice, chapters 1-3: {len(text.split()):,} words.")
        c1, c2 = st.columns([3, 1])
        name = c1.text_input("Name in the store", value=default_name, key=f"name-{source}")
        replace = c2.checkbox("Replace if it exists", key="replace")
        if st.button("Memorize", type="primary", key="memorize", disabled=not text):
            try:
                check_name(name)
                if memorize(engine, name, text or "", replace):
                    st.session_state["question"] = SAMPLE_QUESTION if name == "sample" else ""
            except MemoRAGError as exc:
                st.error(str(exc))

    doc = st.session_state.get("current_doc")
    if not doc or not engine.store.exists(doc):
        doc = None
        if not engine.store.list():
            return
    # With no document picked (none memorized in this session yet) the store is what can be asked.
    scope = st.radio("Ask", list(SCOPES), format_func=lambda s: f"{SCOPES[s]} ({doc})" if s == "document" else SCOPES[s],
                     horizontal=True, key="scope") if doc else "store"
    if scope == "store":
        ask_across_the_store(engine)
        return
    st.header(f"2 · Ask {doc}", anchor=False)
    c1, c2 = st.columns([2, 1])
    task = c1.radio("Task", list(TASKS), format_func=TASKS.get, horizontal=True, key="task")
    compare = c2.checkbox("Compare with plain RAG side by side", key="compare",
                          disabled=task in ("rag", "summarize"))
    question = st.text_input("Question", key="question", disabled=task == "summarize",
                             placeholder="Ask anything the document can answer")
    clicked = st.button("Ask" if task != "summarize" else "Summarize", type="primary", key="ask")
    if st.session_state.pop("auto", False):
        clicked = True
    if clicked:
        if task != "summarize" and not (question or "").strip():
            st.warning("Type a question first.")
            return
        tasks = [task, "rag"] if compare and task in ("memorag", "qa") else [task]
        results = ask(engine, doc, question, tasks)
        st.session_state["results"] = {"doc": doc, "question": question, "results": results}
    elif st.session_state.get("results", {}).get("doc") == doc:
        show_results(st.session_state["results"]["results"])
    shown = st.session_state.get("results", {})
    if shown.get("doc") == doc and shown.get("results"):
        st.header("3 · Evidence in the document", anchor=False)
        legend = " ".join(f'<mark style="background:{c}">{k}</mark>' for k, c in COLOURS.items())
        st.markdown(f"Highlighted: {legend}", unsafe_allow_html=True)
        spans = {("rag" if t == "rag" else "memorag"): r.get("evidence") for t, r in shown["results"].items()}
        st.markdown(highlighted(engine.store.text(doc), spans), unsafe_allow_html=True)


def ask_across_the_store(engine: Engine) -> None:
    names = [d["name"] for d in engine.store.list()]
    st.header(f"2 · Ask across the store ({len(names)} document{'s' if len(names) != 1 else ''})", anchor=False)
    st.caption("The question is routed to the documents that match it best; each one's memory gives clues, and the "
               "answer cites its evidence by number (document, character offsets).")
    task = st.radio("Task", list(STORE_TASKS), format_func=STORE_TASKS.get, horizontal=True, key="store_task")
    question = st.text_input("Question", key="question", placeholder="Ask anything the documents can answer")
    clicked = st.button("Ask the store", type="primary", key="ask_store")
    if st.session_state.pop("auto", False):
        clicked = True
    if clicked:
        if not (question or "").strip():
            st.warning("Type a question first.")
            return
        result = ask_store(engine, question, task)
        st.session_state["store_results"] = {"question": question, "task": task, "result": result}
    elif (st.session_state.get("store_results") or {}).get("result"):
        st.subheader("across the store", anchor=False)
        show_store_answer(st.session_state["store_results"]["result"])
    shown = (st.session_state.get("store_results") or {}).get("result")
    if not shown or not shown["citations"]:
        return
    st.header("3 · Citations in their documents", anchor=False)
    who = "rag" if shown.get("task_type") == "rag" else "memorag"
    by_document: dict[str, list[dict]] = {}
    for c in shown["citations"]:
        by_document.setdefault(c["document"], []).append(c)
    for document, citations in by_document.items():
        if not engine.store.exists(document):
            continue  # deleted since it was asked
        st.markdown(f"**{document}**: " + ", ".join(f"[{c['n']}]" for c in citations))
        st.markdown(highlighted(engine.store.text(document), {who: citations}), unsafe_allow_html=True)


if __name__ == "__main__":
    main()

"""Collections (memorag.collection) on the fakes of memorag.testing: add from files, folders
and globs; routed, cited answers; update skipping unchanged text; delete; the memory cache's
caps. Every test that builds a store runs on faiss and on Qdrant's embedded engine (in
memory and on disk) through the index spec."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from scriptedspecs import minimal_pdf

from memorag import MemoRAG
from memorag.collection import Collection, JoinedIndex, MemoryCache, document_name, gather, marks_in
from memorag.errors import ConflictError, InputError, NotFoundError, NotMemorizedError
from memorag.extract import extract_text
from memorag.index.faiss_index import FaissIndex
from memorag.models.registry import make_index_factory
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

FILLER = [
    "The committee met on a grey morning and read the minutes of the last meeting.",
    "Rain fell on the roofs of the old town while the clocks struck the hour.",
    "A cart brought apples and cheese to the market before the bells rang.",
]


def doc(title: str, fact: str, paragraphs: int = 12) -> str:
    """A document of filler paragraphs with ``fact`` in the middle."""
    paras = [f"{title}."]
    for i in range(paragraphs):
        paras.append(" ".join(f"{s[:-1]} in the year {1700 + i}." for s in FILLER))
        if i == paragraphs // 2:
            paras.append(fact)
    return "\n\n".join(paras)


FACTS = {
    "harbour.txt": "The lighthouse keeper Edda Quill kept the silver key in a blue porcelain jar.",
    "bakery.md": "The baker Anselm Rook hid the brass ledger under the flour barrels.",
    "observatory.txt": "Tobias Wren mounted seven telescopes on the observatory roof.",
}
QUESTIONS = {
    "harbour.txt": "Where did Edda Quill keep the silver key?",
    "bakery.md": "Where did Anselm Rook hide the brass ledger?",
    "observatory.txt": "How many telescopes did Tobias Wren mount?",
}
ANSWER_WORDS = {"harbour.txt": "blue porcelain jar", "bakery.md": "flour barrels",
                "observatory.txt": "seven telescopes"}


class CountingEmbedder(HashEmbedder):
    """Counts the passages embedded for documents (queries are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.passages = 0

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not is_query:
            self.passages += len(texts)
        return super().embed(texts, is_query=is_query)


def make_pipe(index_spec: str = "faiss", embedder: HashEmbedder | None = None, **kw) -> MemoRAG:
    retriever = Retriever(embedder or HashEmbedder(), make_index_factory(index_spec), chunk_tokens=48)
    return MemoRAG.from_parts(ScriptedLLM(), retriever, **kw)


# Qdrant's embedded engine is an integration of its own: its variants are not unit tests.
@pytest.fixture(params=["faiss", pytest.param("qdrant", marks=pytest.mark.integration),
                        pytest.param("qdrant:disk", marks=pytest.mark.integration)])
def index_spec(request, tmp_path) -> str:
    if request.param.startswith("qdrant"):
        pytest.importorskip("qdrant_client")
    if request.param == "qdrant:disk":
        return f"qdrant:{tmp_path / 'qdrant'}"
    return request.param


def write_sources(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, fact in FACTS.items():
        (folder / name).write_text(doc(name.split(".")[0].title(), fact), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------- add / list / delete
def test_question_answerable_only_from_the_second_document_cites_it_until_deleted(tmp_path, index_spec):
    src = write_sources(tmp_path / "src")
    coll = Collection(tmp_path / "store", make_pipe(index_spec))
    files = [src / "harbour.txt", src / "bakery.md", src / "observatory.txt"]
    result = coll.add(files)
    assert result.added == ["harbour.txt", "bakery.md", "observatory.txt"]
    assert coll.names() == ["bakery.md", "harbour.txt", "observatory.txt"]

    ans = coll.ask(QUESTIONS["bakery.md"])
    assert ans.documents[0][0] == "bakery.md"  # routed there first
    assert "flour barrels" in ans.answer
    text = coll.text("bakery.md")
    cited = [c for c in ans.citations if c.document == "bakery.md"]
    assert cited, ans.citations
    for c in ans.citations:  # every citation's offsets point at its text in its document
        assert coll.text(c.document)[c.start:c.end] == c.text
    assert any(FACTS["bakery.md"] in text[c.start:c.end] for c in cited)
    assert [c.n for c in ans.citations] == list(range(1, len(ans.citations) + 1))

    coll.delete("bakery.md")
    assert coll.names() == ["harbour.txt", "observatory.txt"]
    again = coll.ask(QUESTIONS["bakery.md"])
    assert all(c.document != "bakery.md" for c in again.citations)
    assert "bakery.md" not in dict(again.documents)
    assert "flour barrels" not in again.answer
    with pytest.raises(NotFoundError):
        coll.delete("bakery.md")


def test_each_question_routes_to_its_document_first(tmp_path, index_spec):
    coll = Collection(tmp_path / "store", make_pipe(index_spec), route_top=1)
    coll.add([write_sources(tmp_path / "src")])
    for name, question in QUESTIONS.items():
        ans = coll.ask(question)
        assert [d for d, _ in ans.documents] == [name]
        assert ANSWER_WORDS[name] in ans.answer
        assert {c.document for c in ans.citations} == {name}


def test_add_reads_folders_and_globs_skips_unknown_types_in_them(tmp_path):
    src = write_sources(tmp_path / "src")
    (src / "notes.xyz").write_text("not a document type memorag reads")
    (src / ".hidden.txt").write_text("hidden files in folders are ignored")
    (src / "sub").mkdir()
    (src / "sub" / "page.html").write_text(
        "<html><head><title>t</title><style>p {color: red}</style></head><body><h1>Mill</h1>"
        "<p>The miller Oskar Venn ground barley on Tuesdays.</p><script>var x = 'no';</script></body></html>")
    files, skipped = gather([src])
    assert sorted(f.name for f in files) == ["bakery.md", "harbour.txt", "observatory.txt", "page.html"]
    assert [s.name for s in skipped] == ["notes.xyz"]
    files, skipped = gather([str(src / "*.txt")])
    assert sorted(f.name for f in files) == ["harbour.txt", "observatory.txt"] and skipped == []
    files, _ = gather([str(src / "**" / "*.html")])
    assert [f.name for f in files] == ["page.html"]

    coll = Collection(tmp_path / "store", make_pipe())
    result = coll.add([src])
    assert sorted(result.added) == ["bakery.md", "harbour.txt", "observatory.txt", "page.html"]
    assert result.skipped == [str(src / "notes.xyz")]
    assert coll.text("page.html") == "Mill\n\nThe miller Oskar Venn ground barley on Tuesdays."
    entries = {e["name"]: e for e in coll.list()}
    assert entries["page.html"]["source"] == str((src / "sub" / "page.html").resolve())
    assert re.fullmatch(r"[0-9a-f]{64}", entries["harbour.txt"]["sha256"])
    assert (coll.store.state_dir("harbour.txt") / "manifest.json").is_file()  # its own save dir
    assert "Oskar Venn" in coll.ask("What did Oskar Venn grind?").answer


def test_bad_inputs_are_input_errors_before_any_work(tmp_path):
    src = write_sources(tmp_path / "src")
    odd = tmp_path / "table.xlsx"
    odd.write_bytes(b"PK\x03\x04 not text")
    pipe = make_pipe()
    coll = Collection(tmp_path / "store", pipe)
    with pytest.raises(InputError, match="unsupported file type '.xlsx'"):
        coll.add([src / "harbour.txt", odd])
    with pytest.raises(InputError, match="File not found"):
        coll.add([src / "harbour.txt", tmp_path / "missing.txt"])
    with pytest.raises(InputError, match="No file matches"):
        coll.add([str(tmp_path / "nothing" / "*.md")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No supported files"):
        coll.add([tmp_path / "empty"])
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\x00def")
    with pytest.raises(InputError, match="binary"):
        coll.add([src / "harbour.txt", binary])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "harbour.txt").write_text("another harbour")
    with pytest.raises(InputError, match="both be stored as 'harbour.txt'"):
        coll.add([src, tmp_path / "other"])
    assert coll.names() == [] and pipe.memory.llm.call_counts.get("prefill", 0) == 0
    with pytest.raises(NotMemorizedError, match="no documents"):
        coll.ask("Anything?")


def test_routing_rules_score_a_document_by_its_best_chunk_or_its_best_three(tmp_path):
    """"best" routes to the document with the single best-matching chunk; "top3-sum" to the
    one whose three best chunks together match more (the comparison rule of the scale bench)."""
    pipe = make_pipe()
    coll = Collection(tmp_path / "store", pipe)
    one = "The ferryman Bram Oddny rowed the grain barge across the river at dawn."
    coll.add_text("single.txt", "\n\n".join([one] + [" ".join(FILLER)] * 4))
    # Three chunks, each naming the ferryman and the barge, none the whole question.
    coll.add_text("spread.txt", "\n\n".join(
        [f"Bram Oddny {FILLER[i]} The grain barge waited." for i in range(3)] + [" ".join(FILLER)] * 2))
    question = "Who rowed the grain barge across the river at dawn, Bram Oddny?"
    best = coll.route(question, 2)
    summed = coll.route(question, 2, rule="top3-sum")
    assert best[0][0] == "single.txt" and summed[0][0] == "spread.txt"
    joined = coll._all_documents()
    hits = coll._retriever(joined).search([question], 60, lexical=True)
    per_doc: dict[str, list[float]] = {}
    for h in hits:
        per_doc.setdefault(joined.locate(h.chunk_id)[0], []).append(h.score)
    assert dict(best) == pytest.approx({n: s[0] for n, s in per_doc.items()})
    assert dict(summed) == pytest.approx({n: sum(s[:3]) for n, s in per_doc.items()})
    assert Collection(tmp_path / "store", pipe, routing="top3-sum").route(question, 1) == summed[:1]
    with pytest.raises(InputError, match="routing rule"):
        Collection(tmp_path / "store", pipe, routing="gist")
    with pytest.raises(InputError, match="routing rule"):
        coll.route(question, rule="mean")


def test_document_names_are_safe_store_names():
    assert document_name(Path("/x/Annual Report (2024).pdf")) == "Annual-Report-2024-.pdf"
    assert document_name(Path(".profile.txt")) == "profile.txt"
    long = document_name(Path("a" * 100 + ".md"))
    assert len(long) == 64 and long.endswith(".md")
    assert document_name(Path("\u6587\u6863")) == "\u6587\u6863"  # any script (tests/test_unicode_names.py)
    with pytest.raises(InputError):
        document_name(Path("(!)"))


# ------------------------------------------------------------------------- update
def test_update_skips_unchanged_text_and_rebuilds_only_the_changed_document(tmp_path, index_spec):
    src = write_sources(tmp_path / "src")
    embedder = CountingEmbedder()
    pipe = make_pipe(index_spec, embedder)
    coll = Collection(tmp_path / "store", pipe)
    coll.add([src])
    llm = pipe.memory.llm
    reads, embedded = llm.call_counts["prefill"], embedder.passages
    assert reads == 3 and embedded > 3
    versions = {e["name"]: e["version"] for e in coll.list()}

    result = coll.update([src])  # nothing changed: nothing read or embedded
    assert sorted(result.unchanged) == sorted(FACTS) and result.added == result.updated == []
    assert llm.call_counts["prefill"] == reads and embedder.passages == embedded
    assert {e["name"]: e["version"] for e in coll.list()} == versions

    changed = doc("Bakery", "The baker Anselm Rook moved the brass ledger into the oven room.")
    (src / "bakery.md").write_text(changed, encoding="utf-8")
    with pytest.raises(ConflictError, match="update"):
        coll.add([src])  # a different text under a taken name needs update
    assert llm.call_counts["prefill"] == reads and coll.text("bakery.md") != changed

    result = coll.update([src])
    assert result.updated == ["bakery.md"] and sorted(result.unchanged) == ["harbour.txt", "observatory.txt"]
    assert llm.call_counts["prefill"] == reads + 1  # only the changed document was read
    assert embedder.passages - embedded == result.stats["bakery.md"]["passages"]  # and embedded
    after = {e["name"]: e["version"] for e in coll.list()}
    assert after["harbour.txt"] == versions["harbour.txt"] and after["bakery.md"] != versions["bakery.md"]
    assert coll.text("bakery.md") == changed
    ans = coll.ask("Where did Anselm Rook move the brass ledger?")
    assert "oven room" in ans.answer and "flour" not in " ".join(c.text for c in ans.citations)


# ------------------------------------------------------------------------- citations
def test_marks_in_the_answer_map_to_numbered_evidence(tmp_path):
    def cite(turn) -> str:
        # Answer with the number the prompt gave the evidence piece holding the fact.
        n = re.search(r"\[(\d+)\] \([^)]*\)[^\[]*flour barrels", turn.request).group(1)
        return f"Under the flour barrels [{n}], see also [99]."

    llm = ScriptedLLM([(r"^Evidence, numbered", cite)])
    pipe = MemoRAG.from_parts(llm, Retriever(HashEmbedder(), FaissIndex, chunk_tokens=48), cite=True)
    pipe.generator = llm  # the scripted rule answers the generator's prompt
    coll = Collection(tmp_path / "store", pipe)
    coll.add([write_sources(tmp_path / "src")])
    ans = coll.ask(QUESTIONS["bakery.md"])
    assert len(ans.marks) == 1  # [99] names no evidence: ignored
    (cited,) = ans.cited
    assert cited.document == "bakery.md" and FACTS["bakery.md"] in coll.text("bakery.md")[cited.start:cited.end]
    assert ans.to_json()["marks"] == ans.marks
    assert marks_in("[2] and [1], again [2]; [0] [4]", 3) == [2, 1]


def test_joined_index_ranks_like_one_index_over_all_vectors():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 16)).astype(np.float32) for n in (5, 1, 9)]
    parts = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in parts]
    indexes = []
    for p in parts:
        index = FaissIndex()
        index.add(p)
        indexes.append(index)
    whole = FaissIndex()
    whole.add(np.concatenate(parts))
    queries = rng.normal(size=(4, 16)).astype(np.float32)
    for k in (1, 7, 20):  # 20 > 15 vectors: padded as the protocol says
        s1, i1 = JoinedIndex(indexes).search(queries, k)
        s2, i2 = whole.search(queries, k)
        assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    assert len(JoinedIndex(indexes)) == 15


# ------------------------------------------------------------------------- memory cache
def test_only_routed_memories_are_loaded_and_the_cache_cap_holds(tmp_path, index_spec):
    src = write_sources(tmp_path / "src")
    (src / "mill.txt").write_text(doc("Mill", "The miller Oskar Venn ground barley every Tuesday."))
    coll = Collection(tmp_path / "store", make_pipe(index_spec), route_top=1, max_memories=2)
    coll.add([src])
    assert len(coll.memories) == 0  # adding loads no memory into the cache
    answers = [coll.ask(QUESTIONS["harbour.txt"])]
    assert coll.memories.names == ["harbour.txt"] and coll.memories.loads == 1
    first = coll.ask(QUESTIONS["bakery.md"])
    answers.append(first)
    order = ["harbour.txt", "observatory.txt", "harbour.txt"]  # hit, load (evicts bakery), hit
    for name in order:
        ans = coll.ask(QUESTIONS[name])
        answers.append(ans)
        assert ans.documents[0][0] == name and ANSWER_WORDS[name] in ans.answer
        assert len(coll.memories) <= 2 and coll.memories.names[-1] == name
    assert coll.memories.names == ["observatory.txt", "harbour.txt"]
    # a question whose memory was asked again for the second hop (memory_bridge) found it cached
    again_asked = sum(bool(a.bridge) for a in answers)
    assert coll.memories.loads == 3 and coll.memories.hits == 2 + again_asked and coll.memories.evictions == 1
    for a in answers:  # the clues shown are the question's, not the second hop's
        assert all(c.question == a.question for c in a.clues.values())
    again = coll.ask(QUESTIONS["bakery.md"])  # evicted: read from disk again, the same memory
    assert again.answer == first.answer and again.clues["bakery.md"].spans == first.clues["bakery.md"].spans
    assert coll.memories.loads == 4 and coll.memories.names == ["harbour.txt", "bakery.md"]
    assert "mill.txt" not in coll.memories.names  # never asked about: never loaded


def test_byte_cap_keeps_only_what_fits(tmp_path):
    coll = Collection(tmp_path / "store", make_pipe(), route_top=3)
    coll.add([write_sources(tmp_path / "src")])
    coll.ask(QUESTIONS["bakery.md"])
    sizes = {n: e.nbytes for n, e in coll.memories._entries.items()}
    assert len(sizes) == 3 and all(s > 1000 for s in sizes.values())
    capped = Collection(tmp_path / "store", make_pipe(), route_top=3, max_memory_bytes=max(sizes.values()) + 10)
    ans = capped.ask(QUESTIONS["bakery.md"])
    assert len(capped.memories) == 1 and capped.memories.nbytes <= capped.memories.max_bytes
    assert capped.memories.evictions == 2 and set(ans.clues) == set(sizes)  # all three memories were used
    with pytest.raises(InputError, match="max_memories"):
        MemoryCache(max_documents=0)
    with pytest.raises(InputError, match="max_memory_bytes"):
        Collection(tmp_path / "store", make_pipe(), max_memory_bytes=0)


def test_a_new_collection_object_reads_the_store_written_by_another(tmp_path, index_spec):
    coll = Collection(tmp_path / "store", make_pipe(index_spec))
    coll.add([write_sources(tmp_path / "src")])
    again = Collection(tmp_path / "store", make_pipe(index_spec))
    ans = again.ask(QUESTIONS["observatory.txt"])
    assert "seven telescopes" in ans.answer


def test_extract_text_rules(tmp_path):
    page = tmp_path / "p.htm"
    page.write_bytes("<h1>Caf\u00e9</h1><p>The <b>miller</b> <a href='x'>Oskar</a>   Venn.<br>New line</p>"
                     "\n\n\n<div>second   block</div><script>hidden()</script>".encode())
    assert extract_text(page) == "Caf\u00e9\n\nThe miller Oskar Venn.\nNew line\n\nsecond block"
    empty = tmp_path / "e.html"
    empty.write_text("<html><script>only()</script></html>")
    with pytest.raises(InputError, match="no visible text"):
        extract_text(empty)
    md = tmp_path / "n.md"
    md.write_text("# Title\n\n*kept as written*\n", encoding="utf-8")
    assert extract_text(md) == "# Title\n\n*kept as written*\n"


def test_pdf_text_layer_is_extracted_and_a_broken_pdf_is_an_input_error(tmp_path):
    pytest.importorskip("pypdf")
    pdf = tmp_path / "ledger.pdf"
    pdf.write_bytes(minimal_pdf(["The clerk Ida Marsh kept the ledger.", "It had ninety pages."]))
    text = extract_text(pdf)
    assert "Ida Marsh kept the ledger" in text and "ninety pages" in text
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(InputError, match="broken.pdf"):
        extract_text(broken)
    coll = Collection(tmp_path / "store", make_pipe())
    coll.add([pdf])
    assert "Ida Marsh" in coll.ask("Who kept the ledger?").answer


# ------------------------------------------------------------------------- append
APPENDED = ("A later entry. The harbour master Ruth Calloway painted the tide gauge bright orange "
            "after the winter gales of the following year.")


def test_append_reads_and_embeds_only_the_new_part(tmp_path, index_spec):
    src = write_sources(tmp_path / "src")
    embedder = CountingEmbedder()
    pipe = make_pipe(index_spec, embedder)
    coll = Collection(tmp_path / "store", pipe, route_top=1)
    coll.add([src])
    llm = pipe.memory.llm
    old = coll.text("harbour.txt")
    old_chunks = len(coll.retrieval_state("harbour.txt").chunks)
    reads, embedded = llm.call_counts["prefill"], embedder.passages
    coll.ask(QUESTIONS["harbour.txt"])  # the memory is loaded (and cached) before the append
    before_tokens = coll.memories._entries["harbour.txt"].state.prefix_tokens

    stats = coll.append("harbour.txt", APPENDED)
    app = stats["append"]
    assert app["mode"] == "appended"
    assert llm.call_counts["prefill"] == reads  # the document was not read again
    assert app["prefill_tokens"] == llm.count_tokens(APPENDED) > 0  # only the new tokens were
    assert stats["memory_tokens"] == before_tokens + app["prefill_tokens"]
    assert embedder.passages - embedded == app["passages"] > 0  # only the new part embedded
    assert app["chunks"] == len(coll.retrieval_state("harbour.txt").chunks) - old_chunks
    full = coll.text("harbour.txt")
    assert full == old + "\n\n" + APPENDED
    assert coll.store.info("harbour.txt")["sha256"] == hashlib.sha256(full.encode()).hexdigest()

    q = "What did Ruth Calloway paint?"
    for c in (coll, Collection(tmp_path / "store", make_pipe(index_spec))):  # also from disk, afresh
        ans = c.ask(q)
        assert "tide gauge bright orange" in ans.answer
        assert "Ruth Calloway" in ans.clues["harbour.txt"].spans[0]  # the memory holds the new part
        new = [x for x in ans.citations if x.document == "harbour.txt" and x.start >= len(old)]
        assert new and all(c.text(x.document)[x.start:x.end] == x.text for x in ans.citations)
        assert "blue porcelain jar" in c.ask(QUESTIONS["harbour.txt"]).answer  # the old part still answers


def test_append_that_fails_midway_leaves_the_document_as_it_was(tmp_path):
    embedder = CountingEmbedder()
    pipe = make_pipe("faiss", embedder)
    coll = Collection(tmp_path / "store", pipe, route_top=1)
    coll.add([write_sources(tmp_path / "src")])
    before = coll.ask(QUESTIONS["harbour.txt"])
    entry = coll.store.info("harbour.txt")
    embedder.fail("embed", RuntimeError("embedding server went away"))
    with pytest.raises(RuntimeError, match="went away"):
        coll.append("harbour.txt", APPENDED)
    assert coll.store.info("harbour.txt")["version"] == entry["version"]
    assert APPENDED not in coll.text("harbour.txt")
    assert list((coll.store.root / ".staging").iterdir()) == []
    after = coll.ask(QUESTIONS["harbour.txt"])
    assert after.answer == before.answer and after.clues["harbour.txt"].spans == before.clues["harbour.txt"].spans
    with pytest.raises(NotFoundError):
        coll.append("nope.txt", APPENDED)
    with pytest.raises(InputError):
        coll.append("harbour.txt", "  ")


def test_append_beyond_the_window_memorizes_the_whole_document_again(tmp_path):
    llm = ScriptedLLM(context_window=2048)
    pipe = MemoRAG.from_parts(llm, Retriever(HashEmbedder(), FaissIndex, chunk_tokens=48))
    coll = Collection(tmp_path / "store", pipe, route_top=1)
    coll.add([write_sources(tmp_path / "src")])
    reads = llm.call_counts["prefill"]
    long_part = doc("Later", "The harbour master Ruth Calloway painted the tide gauge bright orange.", paragraphs=14)
    stats = coll.append("harbour.txt", long_part)
    assert stats["append"]["mode"] == "rebuilt" and "compression" in stats["append"]["reason"]
    assert llm.call_counts["prefill"] > reads and stats.get("compression")  # read again, compressed
    assert coll.text("harbour.txt").endswith(long_part)
    assert "tide gauge" in coll.ask("What did Ruth Calloway paint?").answer


# ------------------------------------------------------------------------- 100 documents, bounded memory
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu"]


def _vault(i: int) -> str:
    """Made-up words unique to document ``i`` (0-99), so a question names one document."""
    return f"{_SYLLABLES[i // 10]}{_SYLLABLES[i % 10]}dor"


def _keeper(i: int) -> str:
    return f"{_SYLLABLES[i % 10].title()}{_SYLLABLES[i // 10]}ria"


def test_a_hundred_document_store_loads_only_routed_memories_and_never_holds_more_than_the_cap(tmp_path, monkeypatch):
    """Issue 11, bounded resources at scale: questions over a 100-document store read from
    disk exactly the routed memories that are not cached, and at no point are more than
    ``max_memories`` memories resident (counted in the cache and among live objects)."""
    import dataclasses
    import gc
    import weakref

    import memorag.collection

    # Every loaded memory the collection makes is tracked by a weak reference: counting the
    # live ones is cheap, where scanning every object of the test session was most of its time.
    made: list[weakref.ref] = []

    @dataclasses.dataclass
    class TrackedMemory(memorag.collection.LoadedMemory):
        def __post_init__(self) -> None:
            made.append(weakref.ref(self))

    monkeypatch.setattr(memorag.collection, "LoadedMemory", TrackedMemory)

    def resident() -> int:
        return sum(ref() is not None for ref in made)

    pipe = make_pipe()
    cap, route_top = 3, 2
    coll = Collection(tmp_path / "store", pipe, route_top=route_top, max_memories=cap)
    for i in range(100):
        coll.add_text(f"doc-{i:03d}", f"Ledger {i}.\n\n{FILLER[i % 3]}\n\nThe keeper {_keeper(i)} of vault "
                      f"{_vault(i)} stored {i + 7} copper coins in the {_vault(i)} chest.\n\n{FILLER[(i + 1) % 3]}")
    assert len(coll.names()) == 100 and len(coll.memories) == 0  # adding keeps no memory resident

    reads: list[str] = []  # documents whose memory was read from disk, in order
    real_read = pipe.memory.read

    def counting_read(path):
        reads.append(Path(path).parent.parent.name)  # .../NAME/state/memory
        return real_read(path)

    pipe.memory.read = counting_read
    asked = [5, 42, 77, 5, 99, 13, 42, 60, 61, 5, 88, 0]  # repeats: some cached, some evicted by then
    for i in asked:
        before, n_reads = set(coll.memories.names), len(reads)
        ans = coll.ask(f"How many coins did {_keeper(i)} store in vault {_vault(i)}?")
        routed = [name for name, _ in ans.documents]
        assert routed[0] == f"doc-{i:03d}" and len(routed) == route_top
        assert f"{i + 7} copper coins" in ans.answer
        # Only what this question needs is read: its routed documents that were not cached.
        assert sorted(reads[n_reads:]) == sorted(set(routed) - before)
        assert len(coll.memories) <= cap and set(routed) <= set(coll.memories.names)
        # Nothing else keeps an evicted memory alive (the count holds no references itself).
        # An evicted memory caught in an unreachable cycle is not alive: collect the cycles
        # before counting again (the cache's own entries are always alive, so a count equal
        # to the cache's size needs no collection).
        if resident() != len(coll.memories):
            gc.collect()
        assert made and resident() == len(coll.memories) <= cap
    assert coll.memories.loads == len(reads) and coll.memories.evictions == len(reads) - len(coll.memories)
    assert len(set(reads)) < 100 and coll.memories.hits > 0  # 12 questions never touched most memories

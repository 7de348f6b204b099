"""Unicode document names (memorag.docstore.check_name, memorag.collection.document_name): a
Chinese file name is added, listed, cited and removed; NFC and NFD spellings are one
document; names that could escape the store, hide, or look like another are refused with one
InputError. On the fakes of memorag.testing."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from memorag import MemoRAG
from memorag.collection import Collection, document_name
from memorag.docstore import NAME_MAX_BYTES, DocStore, check_name
from memorag.errors import InputError, NotFoundError
from memorag.models.registry import make_index_factory
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

REPORT = "\u62a5\u544a.txt"  # 报告.txt
CAFE_NFC = "Caf\u00e9 notes.txt"
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)
FACT = "The treasurer Mira Vell locked the annual accounts in the green cabinet."
FILLER = "The committee met on a grey morning and read the minutes of the last meeting."


def collection(root: Path) -> Collection:
    retriever = Retriever(HashEmbedder(), make_index_factory("faiss"), chunk_tokens=48)
    return Collection(root, MemoRAG.from_parts(ScriptedLLM(), retriever))


@pytest.mark.parametrize("name", [REPORT, "\u5e74\u5ea6\u62a5\u544a (2024).pdf", "Caf\u00e9", "\u0928\u092e\u0938\u094d\u0924\u0947",
                                  "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "a b", "-x", "x~1",
                                  "\u00e9" * (NAME_MAX_BYTES // 2), "console.txt"])
def test_unicode_names_are_valid(name):
    assert check_name(name) == name


def test_check_name_returns_the_nfc_spelling():
    assert CAFE_NFD != CAFE_NFC and check_name(CAFE_NFD) == CAFE_NFC


@pytest.mark.parametrize("name,reason", [
    ("", "empty"), ("a/b", "one path component"), ("..\\x", "one path component"), ("/abs", "one path component"),
    (".", "start with '.'"), ("..", "start with '.'"), (".hidden", "start with '.'"), (".trash", "start with '.'"),
    (" x", "spaces"), ("x\u3000", "spaces"), ("a\x00b", "U+0000"), ("a\nb", "U+000A"), ("a\x7fb", "U+007F"),
    ("evil\u202etxt.exe", "U+202E"), ("zero\u200bwidth", "U+200B"), ("a\u2028b", "U+2028"),
    ("\u00e9" * (NAME_MAX_BYTES // 2 + 1), "bytes"), ("\u62a5" * 67, "bytes"),
    ("CON", "reserved"), ("nul.txt", "reserved"), ("com1.md", "reserved"), ("LPT9", "reserved"),
    (None, "not text"), (3, "not text"), (b"bytes", "not text"),
])
def test_bad_names_get_one_input_error_saying_why(name, reason):
    with pytest.raises(InputError) as info:
        check_name(name)
    message = str(info.value)
    assert message.startswith("Invalid document name") and reason in message and "\n" not in message


def test_document_names_from_file_names_keep_every_script():
    assert document_name(Path("/in/" + REPORT)) == REPORT
    assert document_name(Path(CAFE_NFD)) == "Caf\u00e9-notes.txt"  # NFC, the space made '-' as before
    assert document_name(Path("Annual Report (2024).pdf")) == "Annual-Report-2024-.pdf"  # ASCII names unchanged
    assert document_name(Path("a - b.txt")) == "a---b.txt"
    long = document_name(Path("\u62a5" * 100 + ".pdf"))  # 64 characters, within the byte limit, extension kept
    assert long == "\u62a5" * 60 + ".pdf"
    wide = document_name(Path("\U0001d400" * 70 + ".md"))  # 4-byte letters: the byte limit cuts first
    assert wide.endswith(".md") and len(wide.encode()) <= NAME_MAX_BYTES and len(wide) < 64
    with pytest.raises(InputError, match="Cannot make a document name"):
        document_name(Path("\u2603\u2603"))  # symbols only
    with pytest.raises(InputError, match="reserved"):
        document_name(Path("CON.txt"))


def test_a_chinese_file_is_added_listed_cited_and_removed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / REPORT).write_text("\n\n".join([FILLER] * 6 + [FACT] + [FILLER] * 6), encoding="utf-8")
    (src / "minutes.txt").write_text("\n\n".join([FILLER] * 8), encoding="utf-8")
    coll = collection(tmp_path / "S")
    result = coll.add([src])
    assert sorted(result.added) == sorted([REPORT, "minutes.txt"])
    assert coll.names() == sorted([REPORT, "minutes.txt"])
    assert (tmp_path / "S" / REPORT / "entry.json").is_file()
    assert json.loads((tmp_path / "S" / REPORT / "entry.json").read_text(encoding="utf-8"))["name"] == REPORT

    ans = coll.ask("Where did Mira Vell lock the annual accounts?")
    assert ans.documents[0][0] == REPORT and "green cabinet" in ans.answer
    cited = [c for c in ans.citations if c.document == REPORT]
    assert cited and any("green cabinet" in c.text for c in cited)
    assert all(coll.text(REPORT)[c.start:c.end] == c.text for c in cited)

    reopened = collection(tmp_path / "S")  # names read back from the directory
    assert reopened.names() == coll.names()
    assert reopened.add([src / REPORT]).unchanged == [REPORT]
    reopened.delete(REPORT)
    assert reopened.names() == ["minutes.txt"]
    with pytest.raises(NotFoundError):
        reopened.delete(REPORT)


def test_nfc_and_nfd_spellings_are_one_document(tmp_path):
    coll = collection(tmp_path / "S")
    coll.add_text(CAFE_NFD, FACT)
    assert coll.names() == [CAFE_NFC]
    assert [p.name for p in (tmp_path / "S").iterdir() if not p.name.startswith(".")] == [CAFE_NFC]
    assert coll.text(CAFE_NFC) == coll.text(CAFE_NFD) == FACT
    assert coll.store.exists(CAFE_NFD) and coll.store.info(CAFE_NFD)["name"] == CAFE_NFC
    coll.add_text(CAFE_NFC, FACT + " Again.", replace=True)  # replaces, not a second document
    assert coll.names() == [CAFE_NFC] and coll.text(CAFE_NFD).endswith("Again.")

    coll.delete(CAFE_NFD)
    assert coll.names() == []

    cafe = "Caf\u00e9.txt"
    composed, decomposed = tmp_path / "composed", tmp_path / "decomposed"
    composed.mkdir()
    decomposed.mkdir()
    (composed / cafe).write_text(FACT, encoding="utf-8")
    (decomposed / unicodedata.normalize("NFD", cafe)).write_text(FACT, encoding="utf-8")  # as macOS may spell it
    assert coll.add([composed]).added == [cafe]
    assert coll.add([decomposed]).unchanged == [cafe] and coll.names() == [cafe]
    with pytest.raises(InputError, match="would both be stored"):
        coll.add([composed, decomposed], replace=True)


def test_bad_names_are_refused_before_anything_is_written(tmp_path):
    store = DocStore(tmp_path / "S")
    coll = collection(tmp_path / "S")
    for bad in ["../escape", ".staging", "a\x00b", "CON"]:
        with pytest.raises(InputError, match="Invalid document name"):
            coll.add_text(bad, FACT)
        with pytest.raises(InputError, match="Invalid document name"):
            store.info(bad)
    assert coll.names() == [] and not (tmp_path / "escape").exists()
    assert sorted(p.name for p in (tmp_path / "S").iterdir()) == [".lock", ".staging", ".trash"]


def test_a_name_with_a_tilde_survives_crash_recovery(tmp_path):
    """.trash entries are NAME~VERSION.KIND: a '~' inside the name must not confuse recovery."""
    store = DocStore(tmp_path / "S")
    staging = store.new_staging("j1")
    (staging / "state").mkdir()
    (staging / "state" / "manifest.json").write_text("{}")
    entry = store.commit(staging, "draft~2.txt", "text", {}, replace=False)
    # A replacement killed between its two renames: the old version sits in .trash, the name is missing.
    (tmp_path / "S" / "draft~2.txt").rename(tmp_path / "S" / ".trash" / f"draft~2.txt~{entry['version']}.replaced")
    assert DocStore(tmp_path / "S").recovered["restored"] == ["draft~2.txt"]
    assert store.text("draft~2.txt") == "text"


@pytest.mark.integration  # runs the CLI in subprocesses
def test_memorag_add_ls_ask_rm_with_a_chinese_file_name(tmp_path):
    """`memorag add 报告.txt` in a subprocess (the fakes by spec string), then ls, ask and rm by that name."""
    from test_collection_cli import FAKES, ok, run_cli

    (tmp_path / REPORT).write_text(FACT, encoding="utf-8")
    store = tmp_path / "S"
    added = json.loads(ok(run_cli("add", REPORT, "--store", store, "--json", *FAKES, cwd=tmp_path)).stdout)
    assert added["added"] == [REPORT]
    assert json.loads(ok(run_cli("ls", "--store", store, "--json", cwd=tmp_path)).stdout)[0]["name"] == REPORT
    ans = json.loads(ok(run_cli("ask", "--store", store, "Where did Mira Vell lock the accounts?", "--json",
                                cwd=tmp_path)).stdout)
    assert ans["citations"][0]["document"] == REPORT and "green cabinet" in ans["answer"]
    ok(run_cli("rm", REPORT, "--store", store, cwd=tmp_path))
    assert json.loads(ok(run_cli("ls", "--store", store, "--json", cwd=tmp_path)).stdout) == []

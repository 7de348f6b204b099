"""Bad input through the CLI: one clear line on stderr, a non-zero exit, no traceback."""

import json
import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memorag.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    (tmp_path / "latin1.txt").write_bytes("na\xefve caf\xe9".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("It is a truth universally acknowledged. " * 20)
    corrupt = tmp_path / "corrupt_state"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{oops")
    other = tmp_path / "other_format"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format_version": 0}))
    return tmp_path


@pytest.mark.parametrize(
    "args,message",
    [
        (("memorize", "{d}/empty.txt", "--save-dir", "{d}/s"), "empty"),
        (("memorize", "{d}/bin.dat", "--save-dir", "{d}/s"), "binary"),
        (("memorize", "{d}/latin1.txt", "--save-dir", "{d}/s"), "UTF-8"),
        (("memorize", "{d}/missing.txt", "--save-dir", "{d}/s"), "not found"),
        (("memorize", "{d}/ok.txt", "--save-dir", "{d}/s", "--chunk-tokens", "8"), "chunk_tokens: must be >= 16"),
        (("memorize", "{d}/ok.txt", "--save-dir", "{d}/s", "--checkpoint-every", "0"), "--checkpoint-every"),
        (("ask", "{d}/no_such_dir", "who?"), "does not exist"),
        (("ask", "{d}/corrupt_state", "who?"), "corrupt"),
        (("ask", "{d}/other_format", "who?"), "format"),
        (("ask", "{d}", "who?"), "not a memorag save dir"),
        (("ask", "{d}/corrupt_state", "   "), "empty"),
    ],
)
def test_bad_input_gives_one_clear_error(files, args, message):
    proc = run_cli(*[a.format(d=files) for a in args])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().startswith("error:")
    assert not (files / "s").exists()  # nothing half-written


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("memorize", "ask", "summarize", "demo"):
        assert cmd in proc.stdout

"""One writer per save dir, shown with real processes (tests/crash_child.py).

A second writer gets LockedError at once (the CLI: one line, exit 1, before loading any
model) or, given a timeout, waits; writers racing for one dir never leave a mixed state,
and a reader running meanwhile always gets one complete state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_crash_safety import SRC, Child, fill, spawn

from memorag.errors import LockedError, StateError
from memorag.store import MANIFEST, leftovers, load_consistent, lock_path, read_manifest, write_save_dir, writer_lock

pytestmark = pytest.mark.integration  # real processes


def _holding(d: Path, seconds: float, gen: int) -> Child:
    proc = spawn("hold", str(d), str(seconds), str(gen))
    assert proc.line() == "holding"
    return proc


def test_second_writer_is_refused_at_once(tmp_path):
    d = tmp_path / "state"
    write_save_dir(d, fill(1))
    first = _holding(d, 20.0, 2)
    second = spawn("hold", str(d), "0", "3")
    out = second.finish(timeout=30)
    assert out.startswith("locked ") and "another memorag process" in out, out
    # Told at once, not after the first finished: the first still holds the lock. (No
    # wall-clock bound: on a loaded machine process start-up alone can take seconds.)
    assert first.poll() is None
    assert first.finish(timeout=60).strip() == "done"
    assert read_manifest(d)["generation"] == 2  # the first writer's state, whole
    # In-process too: the same error class, a StateError subclass
    first = _holding(d, 1.0, 4)
    with pytest.raises(LockedError), writer_lock(d):
        pass
    assert issubclass(LockedError, StateError)
    first.finish(timeout=30)


def test_a_writer_given_a_timeout_waits(tmp_path):
    d = tmp_path / "state"
    first = _holding(d, 1.5, 1)
    t = time.perf_counter()
    write_save_dir(d, fill(2), lock_timeout=30)
    assert time.perf_counter() - t > 0.5  # it waited for the first writer
    assert first.finish(timeout=30).strip() == "done"
    assert read_manifest(d)["generation"] == 2


def test_cli_memorize_into_a_locked_dir_is_one_line(tmp_path):
    d = tmp_path / "state"
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text to memorize. " * 20, encoding="utf-8")
    first = _holding(d, 20.0, 1)
    try:
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "memorag.cli", "memorize", str(doc), "--save-dir", str(d)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC})
        elapsed = time.perf_counter() - t
    finally:
        first.kill()
        first.finish()
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "another memorag process" in lines[0]
    assert elapsed < 15  # refused before the models load (loading them alone takes longer here)


def test_racing_writers_and_a_reader_never_see_a_mixed_state(tmp_path):
    d = tmp_path / "state"
    write_save_dir(d, fill(1))
    procs = [spawn("contend", str(d), "8") for _ in range(2)]
    reads, t_end = 0, time.time() + 8  # long enough to collide on a loaded machine too
    while time.time() < t_end:
        # Between the manifest and the files a writer may swap the dir: load_consistent
        # notices and re-reads, so the reader never fails and never gets a mix.
        gen = load_consistent(d, lambda dd, m: m["generation"])
        assert gen >= 1
        reads += 1
    counts = []
    for p in procs:
        out = p.finish(timeout=30)
        assert p.returncode == 0, out
        counts.append([int(x) for x in out.split()[1:3]])
    done = sum(c[0] for c in counts)
    locked = sum(c[1] for c in counts)
    assert done > 2 and locked > 0, counts  # both wrote, and they did collide
    assert reads > 10
    m = read_manifest(d)
    for rel in m["files"]:
        assert (d / rel).read_bytes().startswith(f"gen {m['generation']} ".encode())
    assert leftovers(d) == [] and (d / MANIFEST).is_file() and lock_path(d).exists()

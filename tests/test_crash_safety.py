"""kill -9 during a save: the save dir is always one complete state, and the next run works.

A child process (tests/crash_child.py) saves new generations into one save dir in a loop
and is killed with SIGKILL at a random moment, 20 times; then at each named point of the
swap. After every kill the dir must verify fully and hold either the previous state
(byte-identical manifest) or a generation the child had started, never a mix; the next
save must complete and leave no ``.tmp-*`` / ``.old-*`` leftovers.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memorag
from memorag import store
from memorag.store import MANIFEST, leftovers, read_manifest, write_save_dir

CHILD = Path(__file__).with_name("crash_child.py")
SRC = str(Path(memorag.__file__).parents[1])


class Child(subprocess.Popen):
    """A crash_child.py process whose output lines are read without read-ahead.

    Unbuffered, so that ``readline`` takes exactly one line and ``communicate`` (which
    reads the pipe's fd directly) gets every later one.
    """

    def line(self, timeout: float = 120) -> str:
        """The child's next line; a child that writes none within ``timeout`` seconds (stuck,
        not merely slow on a busy machine) is killed and the test fails instead of hanging."""
        assert self.stdout is not None
        deadline = time.monotonic() + timeout
        out = b""
        while not out.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.stdout], [], [], left)[0]:
                self.kill()
                self.wait()
                raise AssertionError(f"crash_child wrote no full line within {timeout:.0f} s (so far: {out!r})")
            byte = self.stdout.read(1)
            if not byte:  # the child exited
                break
            out += byte
        return out.decode().strip()

    def finish(self, timeout: float = 60) -> str:
        out, _ = self.communicate(timeout=timeout)
        return out.decode()


def spawn(*args: str) -> Child:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = Child([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, bufsize=0, env=env)
    line = proc.line()
    assert line == "ready", line
    return proc


def fill(gen: int):
    sys.path.insert(0, str(CHILD.parent))
    try:
        from crash_child import filler
    finally:
        sys.path.pop(0)
    return filler(gen)


def check_one_state(d: Path, before: bytes, begun: set[int]) -> int:
    """The dir verifies fully and is either exactly the previous state or a begun generation."""
    manifest = read_manifest(d)  # every file's size and sha256, no stray files or symlinks
    gen = manifest["generation"]
    if (d / MANIFEST).read_bytes() == before:
        return gen
    assert gen in begun, (gen, begun)
    for rel in manifest["files"]:  # the files are this generation's, not another's
        assert (d / rel).read_bytes().startswith(f"gen {gen} ".encode()), rel
    return gen


@pytest.mark.integration  # kills child processes
def test_random_kills_during_save_never_lose_the_previous_state(tmp_path):
    d = tmp_path / "state"
    write_save_dir(d, fill(0))
    rng = random.Random(20)
    survived_new = 0
    for _ in range(20):
        before = (d / MANIFEST).read_bytes()
        proc = spawn("loop", str(d))
        time.sleep(rng.uniform(0.0, 0.4))  # a few saves per second: lands in any phase
        proc.send_signal(signal.SIGKILL)
        out = proc.finish(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        begun = {int(line.split()[1]) for line in out.splitlines() if line.startswith("begin")}
        gen = check_one_state(d, before, begun)
        survived_new += gen in begun
    assert survived_new > 0  # the kills did not all land before the first swap
    # The next run completes and cleans up what the killed writers left.
    write_save_dir(d, fill(99))
    assert read_manifest(d)["generation"] == 99
    assert leftovers(d) == []


@pytest.mark.integration  # kills child processes
@pytest.mark.parametrize("point", ["during_fill", "before_swap", "after_exchange", "between_renames",
                                   "during_cleanup"])
def test_kill_at_each_point_of_the_swap(tmp_path, point):
    d = tmp_path / "state"
    write_save_dir(d, fill(1))
    before = (d / MANIFEST).read_bytes()
    proc = spawn("point", str(d), point, "2")
    out = proc.finish(timeout=30)
    assert proc.returncode == -signal.SIGKILL, out
    assert leftovers(d), "the kill left nothing behind: the point was not reached"
    if point == "between_renames":
        assert not d.exists()  # the fallback's gap: the old dir sits in .old-*
    # The next open (here: a reader) repairs or ignores the leftovers.
    gen = read_manifest(d)["generation"]
    if point in ("after_exchange", "during_cleanup"):
        assert gen == 2  # the swap had happened: the new state is complete
    else:
        assert gen == 1 and (d / MANIFEST).read_bytes() == before
    write_save_dir(d, fill(3))
    assert read_manifest(d)["generation"] == 3
    assert leftovers(d) == []


@pytest.mark.unit
def test_exchange_keeps_the_path_present(tmp_path):
    """On this machine the swap is one renameat2(RENAME_EXCHANGE): no moment without the dir."""
    if store._renameat2 is None:
        pytest.skip("no renameat2 in this libc")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert store._exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


@pytest.mark.unit
def test_fallback_swap_without_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    d = tmp_path / "state"
    write_save_dir(d, fill(1))
    write_save_dir(d, fill(2))
    assert read_manifest(d)["generation"] == 2 and leftovers(d) == []


@pytest.mark.slow
def test_random_kills_during_memorize(tmp_path, sample_text):
    """kill -9 during a real memorize with the default models, 20 times (minutes)."""
    text = tmp_path / "doc.txt"
    text.write_text(sample_text[:1500], encoding="utf-8")
    d = tmp_path / "state"
    rng = random.Random(7)
    # The first state, written by a run that is not killed until it has saved once.
    proc = spawn("memorize", str(d), str(text))
    while not proc.line().startswith("done"):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.finish()
    saved_rounds = 0
    for _ in range(20):
        before = (d / MANIFEST).read_bytes()
        proc = spawn("memorize", str(d), str(text))
        time.sleep(rng.uniform(0.0, 12.0))  # ~5-10 s per memorize of this text here
        proc.send_signal(signal.SIGKILL)
        out = proc.finish()
        read_manifest(d)  # complete and intact, whatever the moment of the kill
        now = (d / MANIFEST).read_bytes()
        if any(line.startswith("done") for line in out.splitlines()):
            assert now != before  # a save completed: the new state is in place
            saved_rounds += 1
        elif now != before:  # killed between the swap and the child's "done" line
            assert any(line.startswith("begin") for line in out.splitlines())
    print(f"{saved_rounds} of 20 killed runs had saved at least once")
    from memorag import MemoRAG

    pipe = MemoRAG.from_saved(d, gen_model_name_or_path="default")
    assert pipe.retriever.chunks and pipe.memory.memorized
    pipe.memorize(sample_text[:1500], save_dir=d, progress=False)  # the next run completes
    assert leftovers(d) == []


@pytest.mark.unit
def test_a_silent_child_fails_the_test_instead_of_hanging_it():
    child = Child([sys.executable, "-c", "import time; print('half', end='', flush=True); time.sleep(60)"],
                  stdout=subprocess.PIPE, bufsize=0)
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="no full line within 1 s"):
        child.line(timeout=1)
    assert time.monotonic() - t0 < 30 and child.poll() is not None  # killed, not waited out
    spoke = Child([sys.executable, "-c", "print('ready')"], stdout=subprocess.PIPE, bufsize=0)
    assert spoke.line(timeout=30) == "ready"
    spoke.wait()

"""Child process for tests/test_crash_safety.py and tests/test_locking.py (run as a script).

    crash_child.py loop TARGET             save generations 1, 2, ... until killed
    crash_child.py point TARGET NAME       save once and SIGKILL itself at the named point
    crash_child.py hold TARGET SECONDS     save once, holding the writer lock SECONDS in fill
    crash_child.py contend TARGET SECONDS  save again and again for SECONDS, counting LockedErrors
    crash_child.py memorize TARGET TEXT    memorize TEXT (a file) with the default models, in a loop
    crash_child.py resume TARGET TEXT ROOT memorize TEXT once as tests/test_resume.py does, with
                                           checkpoints under ROOT, printing ``progress STAGE DONE TOTAL``

Prints ``ready`` once imported, ``begin N`` before and ``done N`` after each save (flushed),
so the parent knows which generations may be on disk when it kills this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from memorag import store
from memorag.errors import LockedError


def say(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def filler(gen: int, pause: float = 0.0, kill_midway: bool = False):
    def fill(tmp: Path) -> dict:
        # Sizes vary by generation so a mixed dir could not pass by accident.
        for i, sub in enumerate(["memory", "retrieval", "retrieval"]):
            (tmp / sub).mkdir(exist_ok=True)
            name = ["state.bin", "chunks.json", "vectors.bin"][i]
            (tmp / sub / name).write_bytes(f"gen {gen} file {i}\n".encode() * (40_000 + (gen % 1000) * 7 + i))
            if kill_midway and i == 1:
                die()
        if pause:
            time.sleep(pause)
        return {"generation": gen, "writer_pid": os.getpid()}

    return fill


def main() -> None:
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "loop":
        say("ready")
        gen = int(time.time() * 1000) % 10**9  # distinct from the parent's generations
        while True:
            gen += 1
            say(f"begin {gen}")
            store.write_save_dir(target, filler(gen))
            say(f"done {gen}")
    elif mode == "point":
        point = sys.argv[3]
        real_exchange, real_rename = store._exchange, os.rename
        if point == "before_swap":
            store._exchange = lambda a, b: die()
        elif point == "after_exchange":
            def exchange_then_die(a, b):
                assert real_exchange(a, b), "this filesystem cannot exchange"
                die()
            store._exchange = exchange_then_die
        elif point == "between_renames":
            store._exchange = lambda a, b: False  # the fallback path of other systems

            def rename(src, dst):
                real_rename(src, dst)
                if Path(src) == target.resolve():  # the old dir has just been moved aside
                    die()
            store.os.rename = rename
        elif point == "during_cleanup":
            def rmtree(path, ignore_errors=False):
                files = [p for p in Path(path).rglob("*") if p.is_file()]
                files[0].unlink()  # part of the old dir is gone, then the kill
                die()
            store.shutil.rmtree = rmtree
        say("ready")
        store.write_save_dir(target, filler(int(sys.argv[4]), kill_midway=point == "during_fill"))
        say("done")
    elif mode == "contend":
        say("ready")
        end, gen, done, locked = time.time() + float(sys.argv[3]), os.getpid() * 1000, 0, 0
        while time.time() < end:
            gen += 1
            try:
                store.write_save_dir(target, filler(gen))
                done += 1
            except LockedError:
                locked += 1
                time.sleep(0.001)
        say(f"counts {done} {locked}")
    elif mode == "hold":
        say("ready")
        fill = filler(int(sys.argv[4]), pause=float(sys.argv[3]))

        def fill_and_say(tmp: Path) -> dict:
            say("holding")  # the lock is taken: the parent may start the second writer now
            return fill(tmp)
        try:
            store.write_save_dir(target, fill_and_say)
        except LockedError as exc:
            say(f"locked {exc}")
            return
        say("done")
    elif mode == "memorize":
        from memorag import MemoRAG
        from memorag.models.registry import load_llm

        text = Path(sys.argv[3]).read_text(encoding="utf-8")
        pipe = MemoRAG(customized_gen_model=load_llm("default", n_ctx=512), n_ctx=1024)
        say("ready")
        gen = 0
        while True:
            gen += 1
            say(f"begin {gen}")
            pipe.memorize(f"Version {gen}.\n" + text, save_dir=target, progress=False)
            say(f"done {gen}")
    elif mode == "resume":
        sys.path.insert(0, str(Path(__file__).parent))
        from test_resume import EVERY, resume_pipe

        from memorag.checkpoint import Checkpoints

        text = Path(sys.argv[3]).read_text(encoding="utf-8")
        pipe = resume_pipe()
        say("ready")
        pipe.memorize(text, save_dir=target, resume=Checkpoints(sys.argv[4], every_tokens=EVERY),
                      progress=lambda stage, done, total: say(f"progress {stage} {done} {total}"))
        say("done")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

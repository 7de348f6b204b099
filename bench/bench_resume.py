"""Seconds lost by a kill -9 at ~90 % of a memorize, with and without checkpoints (issue 12).

Runs, each in a fresh process, on the default models (0.5B memory model, MiniLM embedder):

  A  memorize the document uninterrupted with checkpoints on (the default), recording the
     moment each progress point (embedding batch, 512-token prefill batch) is reached;
  B  the same, killed with SIGKILL at the first progress point that run A reached after
     KILL_AT of its memorize CPU time ("90 % of the work done");
  C  the same command again: it resumes from B's checkpoints;
  D  (unless --no-baseline) uninterrupted with ``resume=False``: the cost of checkpointing.

The work left at the kill is R = A's time from that progress point to its end. Seconds
lost = C's memorize time - R: the work redone after the newest checkpoint plus restoring
it. Without checkpoints a restart redoes everything: lost = A's time up to the kill point.
Model loading (paid by any restart) is reported apart. Each is reported in wall seconds and
in CPU seconds of the memorizing process; on a shared machine the wall times also count
the other processes, so the kill point is chosen and the loss computed in CPU seconds too.

Text: Jane Austen from Debian's r-cran-janeaustenr if Rscript is installed, else the bundled
sample repeated (bench_long.make_text).

Usage: python bench/bench_resume.py [--tokens 8000] [--kill-at 0.9] [--every 2048] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One memorize in this process, reporting JSON lines on stdout."""
    def say(**event) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    t = time.perf_counter()
    from memorag import MemoRAG
    from memorag.checkpoint import Checkpoints
    from memorag.index.faiss_index import FaissIndex
    from memorag.memory import Memory
    from memorag.models.registry import load_embedder
    from memorag.retrieval import Retriever
    from memorag.testing import ScriptedLLM

    # The generator is not used by memorize: a fake keeps the 1.5B model out of the timings.
    pipe = MemoRAG.from_parts(Memory("default", compression="none"),
                              Retriever(load_embedder("default"), FaissIndex), ScriptedLLM())
    text = Path(args.text).read_text(encoding="utf-8")
    say(event="loaded", seconds=round(time.perf_counter() - t, 2))
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(stage: str, done: int, total: int) -> None:
        say(event="progress", t=round(time.perf_counter() - t0, 3), cpu=round(time.process_time() - c0, 3),
            stage=stage, done=done, total=total)

    resume = Checkpoints(args.root, every_tokens=args.every) if args.resume else False
    stats = pipe.memorize(text, save_dir=args.save_dir, progress=progress, resume=resume)
    say(event="done", t=round(time.perf_counter() - t0, 3), cpu=round(time.process_time() - c0, 3), stats=stats)


def run(args: argparse.Namespace, save_dir: Path, resume: bool = True,
        kill_when: dict | None = None) -> dict:
    """Run one child; with ``kill_when`` ({(stage, done): True}) SIGKILL it at the first such point."""
    cmd = [sys.executable, __file__, "--child", "--text", str(args.text_file), "--root", str(args.root),
           "--every", str(args.every), "--save-dir", str(save_dir)] + ([] if resume else ["--no-resume"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    assert proc.stdout is not None
    out: dict = {"events": []}
    for raw in iter(proc.stdout.readline, b""):
        ev = json.loads(raw)
        if ev["event"] == "loaded":
            out["load_seconds"] = ev["seconds"]
        elif ev["event"] == "progress":
            out["events"].append(ev)
            if kill_when and (ev["stage"], ev["done"]) in kill_when:
                proc.send_signal(signal.SIGKILL)
                out["killed_at"] = ev
                break
        elif ev["event"] == "done":
            out["seconds"], out["cpu"], out["stats"] = ev["t"], ev["cpu"], ev["stats"]
    proc.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8000, help="document size (memory model tokens, about)")
    ap.add_argument("--kill-at", type=float, default=0.9, help="fraction of run A's memorize CPU time")
    ap.add_argument("--every", type=int, default=None, help="KV checkpoint interval (default: the library's)")
    ap.add_argument("--no-baseline", action="store_true", help="skip run D (resume=False)")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--text", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--save-dir", help=argparse.SUPPRESS)
    ap.add_argument("--no-resume", dest="resume", action="store_false", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.every is None:
        from memorag.checkpoint import DEFAULT_EVERY_TOKENS

        args.every = DEFAULT_EVERY_TOKENS
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_long import make_text

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args.text_file = work / "doc.txt"
        args.text_file.write_text(make_text(args.tokens), encoding="utf-8")
        args.root = work / "checkpoints"

        a = run(args, work / "a")
        total, total_cpu = a["seconds"], a["cpu"]
        # The first progress point A reached after kill_at of its work; B is killed there.
        # Work is counted in CPU seconds: on a shared machine wall time also counts the others.
        point = next(ev for ev in a["events"] if ev["cpu"] >= args.kill_at * total_cpu)
        at = {(point["stage"], point["done"]): True}
        assert not args.root.exists() or not any(args.root.iterdir()), "A left checkpoints"
        b = run(args, work / "b", kill_when=at)
        ckpt = sorted(args.root.glob("memory-*/state-*.json"))
        checkpointed = json.loads(ckpt[-1].read_text())["n_tokens"] if ckpt else 0
        c = run(args, work / "c")
        d = None if args.no_baseline else run(args, work / "d", resume=False)

    remaining, remaining_cpu = total - point["t"], total_cpu - point["cpu"]
    result = {
        "conditions": {"document_tokens": a["stats"]["memory_tokens"], "passages": a["stats"]["passages"],
                       "every_tokens": args.every, "kill_at": args.kill_at, "cpus": os.cpu_count(),
                       "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "a_memorize_seconds": total, "a_index_seconds": a["stats"]["index_seconds"],
        "a_memory_seconds": a["stats"]["memory_seconds"],
        "kill_point": {"stage": point["stage"], "done": point["done"], "total": point["total"],
                       "a_seconds": point["t"], "a_cpu_seconds": point["cpu"],
                       "fraction_of_a_cpu": round(point["cpu"] / total_cpu, 3)},
        "a_memorize_cpu_seconds": total_cpu,
        "b_killed_after_seconds": b.get("killed_at", {}).get("t"),
        "checkpointed_tokens": checkpointed,
        "c_resumed": c["stats"].get("resumed"), "c_memorize_seconds": c["seconds"],
        "c_memorize_cpu_seconds": c["cpu"],
        "remaining_work_seconds": round(remaining, 2), "remaining_work_cpu_seconds": round(remaining_cpu, 2),
        "seconds_lost_with_checkpoints": round(c["seconds"] - remaining, 2),
        "cpu_seconds_lost_with_checkpoints": round(c["cpu"] - remaining_cpu, 2),
        "seconds_lost_without_checkpoints": round(point["t"], 2),
        "cpu_seconds_lost_without_checkpoints": round(point["cpu"], 2),
        "model_load_seconds_per_restart": c["load_seconds"],
    }
    if d is not None:
        result["d_memorize_seconds_no_checkpoints"] = d["seconds"]
        result["d_memorize_cpu_seconds_no_checkpoints"] = d["cpu"]
        result["checkpoint_overhead_percent_cpu"] = round(100 * (total_cpu - d["cpu"]) / d["cpu"], 1)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

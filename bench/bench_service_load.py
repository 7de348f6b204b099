"""Bounded load test of `memorag serve` replicas over one store (issue 25): concurrent clients
ask questions (across the store and about one document) against every replica in turn, while
one memorize job at a time goes to the writer; afterwards checks that no stored document
changed and reports latency, throughput, every status seen and the replicas' resident memory.

The replicas are started beforehand (docs/scaling.md), e.g. on 127.0.0.1:

    memorag serve --store S --port 8001 --read-only &    memorag serve --store S --port 8002 &
    python bench/bench_service_load.py --url http://127.0.0.1:8001 --url http://127.0.0.1:8002 \\
        --writer http://127.0.0.1:8002 --store S --pid PID1 --pid PID2 --clients 20 --seconds 300 --out FILE.json

Questions go to the store's existing documents; each memorize job writes a new document named
``load-N`` (left in the store). Any status but 200/202 and 503-with-Retry-After counts as an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import threading
import time
from pathlib import Path

import httpx

QUESTIONS = ["What is this document about?", "Who is named first in the document?",
             "Which places are mentioned?", "What happens at the end?"]


def store_digest(store: Path) -> dict[str, str]:
    """sha256 of every committed document's files (hidden working dirs and load-N excluded)."""
    out = {}
    for p in sorted(store.rglob("*")):
        rel = p.relative_to(store)
        if p.is_file() and not rel.parts[0].startswith(".") and not rel.parts[0].startswith("load-"):
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", action="append", required=True, help="a replica (repeat for each)")
    ap.add_argument("--writer", help="the replica memorize jobs go to (default: none are sent)")
    ap.add_argument("--store", type=Path, required=True, help="the store directory, to check no document changed")
    ap.add_argument("--pid", type=int, action="append", default=[], help="a replica's process id, for its memory")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--warmup-seconds", type=float, default=120.0, help="resident memory is judged flat if "
                    "it does not grow after this many seconds (models and the documents' memories loaded)")
    ap.add_argument("--token", default=None)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.url[0], headers=headers, timeout=60) as c:
        names = [d["name"] for d in c.get("/documents").json()["documents"]]
    if not names:
        raise SystemExit("the store has no documents to ask about; memorize some first")
    before = store_digest(args.store)
    lock = threading.Lock()
    calls: list[dict] = []
    rss: dict[int, list[int]] = {pid: [] for pid in args.pid}
    stop = time.monotonic() + args.seconds

    def record(kind: str, url: str, started: float, response: httpx.Response | None, error: str | None) -> None:
        status = response.status_code if response is not None else None
        ok = status in (200, 202) or (status == 503 and "retry-after" in response.headers)
        with lock:
            calls.append({"kind": kind, "url": url, "status": status, "seconds": time.monotonic() - started,
                          "ok": ok, "error": error if not ok else None})

    def client(i: int) -> None:
        clients = [httpx.Client(base_url=u, headers=headers, timeout=900) for u in args.url]
        n = i
        while time.monotonic() < stop:
            n += 1
            c = clients[n % len(clients)]
            question = QUESTIONS[n % len(QUESTIONS)]
            kind, path, body = (("store", "/ask", {"question": question, "max_new_tokens": 64}) if n % 2 else
                                ("document", f"/documents/{names[n % len(names)]}/ask",
                                 {"question": question, "max_new_tokens": 64}))
            t0 = time.monotonic()
            try:
                r = c.post(path, json=body)
                record(kind, str(c.base_url), t0, r, None if r.status_code < 400 else r.text[:300])
                if r.status_code == 503:
                    time.sleep(min(float(r.headers.get("retry-after", 1)), 5.0))
            except httpx.HTTPError as exc:
                record(kind, str(c.base_url), t0, None, f"{type(exc).__name__}: {exc}")
        for c in clients:
            c.close()

    def writer() -> None:
        text = " ".join(f"Line {i}: the keeper counted {i} boats in the harbour." for i in range(150))
        with httpx.Client(base_url=args.writer, headers=headers, timeout=60) as c:
            n = 0
            while time.monotonic() < stop:
                n += 1
                t0 = time.monotonic()
                r = c.post("/documents", json={"name": f"load-{n}", "text": text, "replace": True})
                record("memorize", args.writer, t0, r, None if r.status_code < 400 else r.text[:300])
                if r.status_code != 202:
                    time.sleep(5)
                    continue
                while time.monotonic() < stop and c.get(f"/jobs/{r.json()['id']}").json()["state"] in (
                        "queued", "running"):
                    time.sleep(1)

    done = threading.Event()

    def sample_memory() -> None:  # until the last client is done, not only for --seconds
        while not done.is_set():
            for pid in args.pid:
                if (kib := rss_kib(pid)) is not None:
                    rss[pid].append(kib)
            time.sleep(5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    if args.writer:
        threads.append(threading.Thread(target=writer))
    sampler = threading.Thread(target=sample_memory)
    t0 = time.monotonic()
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    done.set()
    sampler.join()
    warm = int(args.warmup_seconds // 5)  # samples are 5 s apart
    after = store_digest(args.store)

    answered = [c["seconds"] for c in calls if c["kind"] != "memorize" and c["status"] == 200]
    statuses: dict[str, int] = {}
    for c in calls:
        statuses[str(c["status"])] = statuses.get(str(c["status"]), 0) + 1
    results = {
        "replicas": args.url, "writer": args.writer, "clients": args.clients, "seconds": round(wall, 1),
        "questions_answered": len(answered), "questions_per_minute": round(60 * len(answered) / wall, 2),
        "latency_p50": percentile(answered, 0.50), "latency_p95": percentile(answered, 0.95),
        "latency_mean": round(statistics.fmean(answered), 3) if answered else None,
        "statuses": statuses, "errors": [c for c in calls if not c["ok"]][:50],
        "error_count": sum(not c["ok"] for c in calls),
        "stored_documents_unchanged": before == after,
        "changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)),
        "rss_kib": {str(pid): {"first": v[0], "last": v[-1], "max": max(v)} for pid, v in rss.items() if v},
        # flat: the largest sample after warm-up against the one at the end of warm-up
        "warmup_seconds": args.warmup_seconds,
        "rss_growth_after_warmup_kib": {str(pid): max(v[warm:]) - v[warm] for pid, v in rss.items()
                                        if len(v) > warm},
        # every sample (one per 5 s), so flatness can be judged by eye too
        "rss_kib_samples": {str(pid): v for pid, v in rss.items()},
    }
    print(json.dumps({k: v for k, v in results.items() if k != "errors"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

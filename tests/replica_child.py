"""One `memorag serve` replica on the scripted fakes, for tests/test_service_replicas.py (run as a script).

    replica_child.py STORE PORT [--read-only]

The app and engine are the service's own (``create_app``); only the models are the fakes of
tests/scriptedspecs.py (a memory model whose reading takes time, so a test can kill the
process mid-document). Orphaned jobs are looked for every ``SCAN_SECONDS``.
"""

from __future__ import annotations

import sys

import uvicorn

from memorag.engine import Engine
from memorag.service import Settings, create_app

SCAN_SECONDS = 0.3


def main() -> None:
    store, port, read_only = sys.argv[1], int(sys.argv[2]), "--read-only" in sys.argv[3:]
    engine = Engine(store, mem_model="scriptedspecs:slow_llm", ret_model="scriptedspecs:embedder",
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64, read_only=read_only)
    settings = Settings(store=store, port=port, read_only=read_only, job_scan_seconds=SCAN_SECONDS)
    uvicorn.run(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

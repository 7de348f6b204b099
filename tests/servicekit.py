"""Helpers for tests that run `memorag serve` in a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m memorag.cli serve` on a random free port; the log goes to a file next to the store."""

    def __init__(self, store: Path, *, token: str | None = None, max_body_mb: float | None = None,
                 script: list[str] | None = None) -> None:
        """``script``: run ``python SCRIPT ARGS... STORE PORT`` (tests/ on the path) instead of
        `memorag serve` (e.g. tests/replica_child.py, a replica on the scripted fakes)."""
        self.store = store
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = store.parent / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "memorag.cli", "serve", "--store", str(store), "--port", str(self.port)]
        if max_body_mb is not None:
            cmd += ["--max-body-mb", str(max_body_mb)]
        env = {**os.environ, "MEMORAG_LOG_LEVEL": "warning"}
        if script is not None:
            cmd = [sys.executable, script[0], str(store), str(self.port), *script[1:]]
            env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("MEMORAG_TOKEN", None)
        if token:
            env["MEMORAG_TOKEN"] = token  # the environment, not a flag: flags show in `ps`
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def client(self, token: str | None = None, timeout: float = 900.0) -> httpx.Client:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as when a machine loses power or the OOM killer strikes."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 1200.0, every: float = 0.5,
                 on_poll=None) -> tuple[dict, list[dict]]:
    """Poll a memorize job until it ends; returns the last state and every state seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        seen.append(job)
        if on_poll:
            on_poll(job)
        if job["state"] in ("done", "failed"):
            return job, seen
        time.sleep(every)
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s; last: {seen[-1] if seen else None}")


def read_sse(response: httpx.Response) -> list[tuple[str, dict]]:
    """Parse a text/event-stream response into (event, data) pairs, in order."""
    events, kind, data = [], "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            events.append((kind, json.loads("\n".join(data))))
            kind, data = "message", []
    if data:
        events.append((kind, json.loads("\n".join(data))))
    return events

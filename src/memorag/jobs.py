"""Memorize jobs kept in the store, so that every service replica over the store sees them and
a job outlives the process that accepted it (docs/scaling.md, "Serving from several replicas").

    STORE/.jobs/
      ID.json     the job's record (``memorag.engine.Job.to_json``), rewritten atomically
      ID.txt      the text to memorize or append, kept until the job ends
      ID.claim    flock held by the process that runs, or will run, the job
      .lock       flock: creating a job and looking for orphans exclude each other

Who runs a job: the process holding its claim. A replica takes the claim when it accepts the
job (before the record is visible, under ``.lock``) and releases it only after the record says
``done`` or ``failed``. The kernel drops an flock when its holder dies, by any signal or out
of memory, so a record that is still ``queued`` or ``running`` while its claim can be taken
was left by a dead process. :meth:`JobBoard.orphans` takes such claims and hands the jobs to
the caller to run again from their text. No process id, host name, clock or heartbeat is
compared, so a slow job is never taken from a live owner, and two replicas never run one job
(the second cannot take the claim).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path

from memorag.docstore import flocked, write_atomic, write_json_atomic
from memorag.errors import ConflictError

ACTIVE_STATES = ("queued", "running")
JOBS_DIR = ".jobs"


class Claim:
    """An exclusive flock on a job's claim file, held until :meth:`release` (or the process ends)."""

    def __init__(self, fh) -> None:
        self._fh = fh

    @classmethod
    def take(cls, path: Path) -> Claim | None:
        """The claim if nobody holds it, else None (never waits)."""
        fh = open(path, "a+b")  # noqa: SIM115 - held open as the lock; closed in release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        return cls(fh)

    def release(self) -> None:
        if self._fh.closed:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


class JobBoard:
    """The job records of one store (``STORE/.jobs``)."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root) / JOBS_DIR
        self.root.mkdir(exist_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        if not job_id.isalnum():  # ids come from clients (GET /jobs/ID): never a path
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / f"{job_id}.{suffix}"

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold while deciding on a name: no replica creates a job meanwhile."""
        return flocked(self.root / ".lock")

    # ------------------------------------------------------------- reading
    def read(self, job_id: str) -> dict | None:
        """The record of ``job_id``, or None if there is none (or it is not a job id)."""
        try:
            record = json.loads(self._path(job_id, "json").read_text(encoding="utf-8"))
        except (ValueError, OSError):  # absent, or not ours (records are written atomically)
            return None
        return record if isinstance(record, dict) and record.get("id") == job_id else None

    def records(self) -> list[dict]:
        """Every job record, oldest first."""
        found = (self.read(p.stem) for p in self.root.glob("*.json") if p.stem.isalnum())
        return sorted((r for r in found if r is not None), key=lambda r: r.get("created") or 0)

    def active(self) -> dict[str, str]:
        """Document name -> id of the job queued or running on it (in any process)."""
        return {r["name"]: r["id"] for r in self.records() if r.get("state") in ACTIVE_STATES}

    def text(self, job_id: str) -> str:
        return self._path(job_id, "txt").read_text(encoding="utf-8")

    # ------------------------------------------------------------- writing
    def create(self, record: dict, text: str) -> Claim:
        """Record a new job and its text, claimed by this process. ConflictError if a job
        (of any replica) is already queued or running on the same document."""
        with self.locked():
            other = self.active().get(record["name"])
            if other is not None:
                raise ConflictError(f"{record['name']!r} is being memorized already (job {other}); try again "
                                    "when it is done.")
            claim = Claim.take(self._path(record["id"], "claim"))
            if claim is None:  # a fresh random id: only a bug gets here
                raise ConflictError(f"job id {record['id']} is taken; send the request again.")
            try:
                write_atomic(self._path(record["id"], "txt"), text.encode("utf-8"))
                write_json_atomic(self._path(record["id"], "json"), record)
            except BaseException:
                self._path(record["id"], "txt").unlink(missing_ok=True)
                claim.release()
                raise
            return claim

    def save(self, record: dict) -> None:
        write_json_atomic(self._path(record["id"], "json"), record)

    def finish(self, record: dict) -> None:
        """Save the ended job's record and drop its text (the store now holds the document)."""
        self.save(record)
        self._path(record["id"], "txt").unlink(missing_ok=True)

    def orphans(self) -> list[tuple[dict, Claim]]:
        """Jobs left queued or running by a process that is gone, each claimed for the caller
        (who must run it and release the claim)."""
        taken = []
        with self.locked():
            for record in self.records():
                if record.get("state") not in ACTIVE_STATES:
                    continue
                claim = Claim.take(self._path(record["id"], "claim"))
                if claim is None:
                    continue  # its owner is alive
                fresh = self.read(record["id"])  # it may have ended since it was read
                if fresh is None or fresh.get("state") not in ACTIVE_STATES:
                    claim.release()
                    continue
                taken.append((fresh, claim))
        return taken

    def forget_old(self, keep: int = 200) -> None:
        """Delete the records of all but the ``keep`` most recently ended jobs."""
        with self.locked():
            ended = [r for r in self.records() if r.get("state") not in ACTIVE_STATES]
            ended.sort(key=lambda r: r.get("finished") or 0)
            for record in ended[: max(0, len(ended) - keep)]:
                for suffix in ("json", "txt", "claim"):
                    self._path(record["id"], suffix).unlink(missing_ok=True)

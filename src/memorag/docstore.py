"""A directory of memorized documents, one subdirectory per name (used by the HTTP service and the demo).

    ROOT/
      NAME/                  a committed document
        entry.json           name, version, created, characters, memorize stats
        document.txt         the text as given (the demo highlights evidence in it)
        state/               a MemoRAG save dir (manifest, memory state, chunks, vectors)
      .staging/JOB~PID@HOST/ a document being built: never listed
      .trash/NAME~ID.KIND    a document being replaced (KIND=replaced) or deleted (KIND=deleted)
      .lock                  flock: commits and deletes are exclusive, loads are shared
      .jobs/                 memorize jobs of the services over this store (memorag.jobs)
      .settings.json         settings every process opening the store must share (the routing index)

A document is built entirely under ``.staging`` and renamed into place, so a kill at any
moment leaves every committed document whole: opening the store drops staging dirs whose
process is gone (a dir made on another machine is left to that machine: whether its process
lives cannot be told from here), finishes interrupted deletes, and puts back a document that a replacement
had moved aside but not yet replaced (the kill fell between its two renames).

Names are any Unicode text that makes one safe path component (:func:`check_name`, rules in
``NAME_RULES``): normalized to NFC (so two spellings of "é" are one document), no path
separators, no leading dot, no control or invisible format characters, at most
``NAME_MAX_BYTES`` bytes of UTF-8. A name can therefore never reach outside ROOT or collide
with the hidden dirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path

from memorag.errors import ConflictError, InputError, NotFoundError, StateError

NAME_MAX_BYTES = 200  # under the file system's limit for one file name, leaving room for what .trash appends
NAME_RULES = (f"any Unicode text up to {NAME_MAX_BYTES} bytes of UTF-8 (NFC-normalized), one path component: "
              "no '/' or '\\', no leading '.', no leading or trailing spaces, no control or invisible format "
              "characters, not a reserved device name (CON, NUL, COM1...)")
ENTRY = "entry.json"
SETTINGS = ".settings.json"
DOCUMENT = "document.txt"
STATE = "state"
# Zero-width (non-)joiners are format characters that some scripts (Persian, Indic, emoji)
# need inside words; every other format character is invisible and only makes look-alike names.
_JOINERS = {"\u200c", "\u200d"}
# Device names Windows refuses as file names (with any extension), refused so a store can be copied there.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def _name_problem(name: str) -> str | None:
    """Why ``name`` (already NFC) is not a valid document name, or None if it is."""
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it must be one path component (no '/' or '\\')"
    if name.startswith("."):
        return "it must not start with '.'"
    if name != name.strip():
        return "it must not start or end with spaces"
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp") or (category == "Cf" and ch not in _JOINERS):
            return f"it contains the control or invisible character U+{ord(ch):04X}"
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        return f"it is longer than {NAME_MAX_BYTES} bytes of UTF-8"
    if name.split(".", 1)[0].rstrip().lower() in _RESERVED:
        return "it is a reserved device name"
    return None


def check_name(name: object) -> str:
    """``name`` normalized to NFC if it is a valid document name (rules in ``NAME_RULES``), else
    :class:`InputError`. Callers use the returned spelling: NFC and NFD spellings are one document."""
    problem = "it is not text"
    if isinstance(name, str):
        normalized = unicodedata.normalize("NFC", name)
        problem = _name_problem(normalized)
        if problem is None:
            return normalized
    shown = repr(name)[:80]
    raise InputError(f"Invalid document name {shown}: {problem}. A name is {NAME_RULES}.")


def _is_stored_name(name: str) -> bool:
    """Whether a directory entry of ROOT is a document name as the store writes them (NFC, valid)."""
    return unicodedata.normalize("NFC", name) == name and _name_problem(name) is None


@contextlib.contextmanager
def flocked(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the ``with`` block.

    flock locks belong to the open file description, so two threads that each open the
    file exclude each other as two processes do; the kernel drops the lock when its holder
    dies, even by SIGKILL."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temp file and one rename: a reader sees
    the old file or the new one, never a half-written one."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: object) -> None:
    """:func:`write_atomic` of ``value`` as JSON."""
    write_atomic(path, json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8"))


def _this_host() -> str:
    # one path component whatever the host name holds
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def _staging_process_gone(dir_name: str) -> bool:
    """Whether the process that made staging dir ``dir_name`` (``JOB~PID@HOST``, or ``JOB~PID``
    as older versions named it) is gone. A dir of another host is never called gone."""
    owner = dir_name.rpartition("~")[2]
    pid, _, host = owner.partition("@")
    if host and host != _this_host():
        return False
    return not (pid.isdigit() and _pid_alive(int(pid)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DocStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / ".staging").mkdir(exist_ok=True)
            (self.root / ".trash").mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"Cannot use {self.root} as a document store: {exc.strerror}.") from None
        self.recovered = self.recover()  # what a killed process had left half done

    # -------------------------------------------------------------- locking
    def _locked(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return flocked(self.root / ".lock", exclusive=exclusive)

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold while loading a document: no commit or delete swaps it out meanwhile."""
        return self._locked(exclusive=False)

    def recover(self) -> dict:
        """Undo what a killed process left half done. Returns what was cleaned, for logs and tests."""
        report: dict[str, list[str]] = {"staging_removed": [], "restored": [], "trash_removed": []}
        with self._locked(exclusive=True):
            for d in (self.root / ".staging").iterdir():
                if not _staging_process_gone(d.name):
                    continue  # a build in progress (this process, another, or another machine's)
                shutil.rmtree(d, ignore_errors=True)
                report["staging_removed"].append(d.name)
            for d in sorted((self.root / ".trash").iterdir()):
                name, _, rest = d.name.rpartition("~")  # a name may contain '~'; the version id does not
                if rest.endswith(".replaced") and _is_stored_name(name) and not (self.root / name).exists() \
                        and (d / ENTRY).is_file():
                    os.replace(d, self.root / name)
                    report["restored"].append(name)
                else:
                    shutil.rmtree(d, ignore_errors=True)
                    report["trash_removed"].append(d.name)
        return report

    # -------------------------------------------------------------- reading
    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / ENTRY).is_file()

    def info(self, name: str) -> dict:
        entry = self.path(name) / ENTRY
        if not entry.is_file():
            raise NotFoundError(f"No memorized document named {name!r} in {self.root} (`memorag ls --store` "
                                "or GET /documents lists them).")
        try:
            return json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise StateError(f"The store entry {name!r} is corrupt ({ENTRY} unreadable); delete it and "
                             "memorize the document again.") from None

    def state_dir(self, name: str) -> Path:
        return self.path(name) / STATE

    def text(self, name: str) -> str:
        self.info(name)
        return (self.path(name) / DOCUMENT).read_text(encoding="utf-8")

    def list(self) -> list[dict]:
        out = []
        for d in sorted(self.root.iterdir()):
            name = unicodedata.normalize("NFC", d.name)  # a file system may hand names back decomposed (HFS+)
            if d.is_dir() and _name_problem(name) is None and (d / ENTRY).is_file():
                with contextlib.suppress(NotFoundError, StateError):
                    out.append(self.info(name))
        return out

    def settings(self) -> dict:
        """The store-wide settings (empty if none was recorded)."""
        path = self.root / SETTINGS
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise StateError(f"The store's {path} is unreadable or corrupt; fix or delete it.") from None
        if not isinstance(settings, dict):
            raise StateError(f"The store's {path} is corrupt (not a JSON object); fix or delete it.")
        return settings

    def record_setting(self, key: str, value: object) -> object:
        """Record ``value`` as setting ``key`` unless one is recorded already; returns the
        recorded value (the one given, or the one another process recorded first)."""
        with self._locked(exclusive=True):
            settings = self.settings()
            if key not in settings:
                settings[key] = value
                write_json_atomic(self.root / SETTINGS, settings)
            return settings[key]

    # -------------------------------------------------------------- writing
    def new_staging(self, job_id: str) -> Path:
        """A fresh directory to build a document in (removed by :meth:`recover` if this process dies)."""
        d = self.root / ".staging" / f"{job_id}~{os.getpid()}@{_this_host()}"
        d.mkdir()
        return d

    def commit(self, staging: Path, name: str, text: str, stats: dict, *, replace: bool,
               extra: dict | None = None) -> dict:
        """Move a built document (``staging/state`` already written) into place as ``name``.

        ``extra`` adds fields to the entry (a collection records the text's ``sha256`` and
        the ``source`` file); the store's own fields win over them."""
        name = check_name(name)
        if not (staging / STATE / "manifest.json").is_file():
            raise StateError(f"Nothing was built in {staging}.")
        (staging / DOCUMENT).write_text(text, encoding="utf-8")
        entry = {**(extra or {}), "name": name, "version": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "chars": len(text), "stats": stats}
        (staging / ENTRY).write_text(json.dumps(entry, indent=1, ensure_ascii=False), encoding="utf-8")
        target = self.root / name
        with self._locked(exclusive=True):
            moved = None
            if target.exists():
                if not replace:
                    raise ConflictError(f"A document named {name!r} already exists; send replace=true to "
                                        "memorize it again.")
                moved = self.root / ".trash" / f"{name}~{entry['version']}.replaced"
                os.replace(target, moved)
            # A kill here leaves NAME missing and its old version in .trash: recover() restores it.
            os.replace(staging, target)
            if moved is not None:
                shutil.rmtree(moved, ignore_errors=True)
        return entry

    def delete(self, name: str) -> None:
        name = check_name(name)
        self.info(name)
        with self._locked(exclusive=True):
            target = self.path(name)
            if not target.exists():
                raise NotFoundError(f"No memorized document named {name!r}.")
            gone = self.root / ".trash" / f"{name}~{uuid.uuid4().hex}.deleted"
            os.replace(target, gone)  # one rename: the name is gone at once, the bytes follow
            shutil.rmtree(gone, ignore_errors=True)

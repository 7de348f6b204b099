"""Save directories: written atomically by one writer, described by a manifest, verified on load.

A save dir holds the memory state (``memory/``), the chunks and vectors (``retrieval/``)
and ``manifest.json``: format version, memorag version, the models used, counts, the size
and sha256 of every file, and the sha256 of the manifest itself. Loading refuses a dir
whose format, manifest or files do not match, that holds a file the manifest does not list,
or that holds a symlink, so a truncated copy, a bit flip, a file from another document or a
dir made by other models fails with one :class:`StateError` rather than garbage answers.
Nothing here uses pickle.

Writing (docs/guarantees.md):

* The new dir is filled under a hidden sibling ``.NAME.tmp-*``, fsynced, then swapped in.
  On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``: the target path always names a
  complete save dir, the old one or the new one, with no moment in between where it is
  missing. Where the kernel or filesystem cannot exchange, the old dir is renamed to
  ``.NAME.old-*`` first and the new one renamed into place; a kill between the two renames
  is repaired at the next open (the ``.old-*`` dir is renamed back).
* One writer per save dir: a writer holds ``.NAME.lock`` (``filelock``) next to the dir for
  the whole memorize and save. A second writer gets :class:`LockedError` at once instead of
  mixing its files with the first's.
* Leftovers of killed writers (``.NAME.tmp-*``, ``.NAME.old-*``, ``.NAME.partial-*``) are
  removed, or restored as above, the next time a writer takes the lock.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from memorag._version import __version__
from memorag.errors import LockedError, StateError
from memorag.models.packaged import sha256_file

FORMAT_VERSION = 2
# Format 1 (memorag <= 0.1.0 development builds) had no manifest checksum and is still read.
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest_sha256"
_LEFTOVER_KINDS = ("tmp", "old", "partial")  # "partial" was the temp-dir name before format 2

T = TypeVar("T")


# ------------------------------------------------------------------ names next to a save dir
def _target(save_dir: str | Path) -> Path:
    # resolve(): a save dir given through a symlink is written next to the real dir, so the
    # rename that swaps it in never crosses filesystems.
    return Path(save_dir).expanduser().resolve()


def _sibling(target: Path, kind: str, tag: str = "") -> Path:
    return target.parent / f".{target.name}.{kind}{'-' + tag if tag else ''}"


def lock_path(save_dir: str | Path) -> Path:
    """The lock file a writer of ``save_dir`` holds (a hidden sibling of the dir)."""
    t = _target(save_dir)
    return t.parent / f".{t.name}.lock"


def leftovers(save_dir: str | Path) -> list[Path]:
    """Temp and old dirs a killed writer may have left next to ``save_dir``."""
    t = _target(save_dir)
    if not t.parent.is_dir():
        return []
    prefixes = tuple(f".{t.name}.{kind}-" for kind in _LEFTOVER_KINDS)
    return sorted(p for p in t.parent.iterdir() if p.name.startswith(prefixes))


# ----------------------------------------------------------------------------- one writer
_held: dict[Path, tuple[int, int]] = {}  # target -> (thread id, depth): re-entrant per thread
_held_guard = threading.Lock()


@contextmanager
def writer_lock(save_dir: str | Path, timeout: float = 0.0) -> Iterator[Path]:
    """Hold the one-writer lock of ``save_dir`` (re-entrant within a thread).

    ``timeout`` seconds to wait for another writer (0: fail at once, which is what
    memorize wants: waiting an hour behind another memorize is rarely what was meant).
    Raises :class:`LockedError` if the lock stays taken. While held, leftovers of killed
    writers are cleaned up (:func:`recover`).
    """
    from filelock import FileLock, Timeout

    target = _target(save_dir)
    me = threading.get_ident()
    with _held_guard:
        owner = _held.get(target)
        if owner is not None and owner[0] == me:
            _held[target] = (me, owner[1] + 1)
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield target
        finally:
            with _held_guard:
                tid, depth = _held[target]
                _held[target] = (tid, depth - 1)
        return

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(target)), timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(
            f"{target} is being written by another memorag process (lock {lock_path(target).name} is held). "
            "Wait for it to finish, or write to another --save-dir."
        ) from None
    try:
        with _held_guard:
            _held[target] = (me, 1)
        recover(target)
        yield target
    finally:
        with _held_guard:
            _held.pop(target, None)
        lock.release()


def recover(save_dir: str | Path) -> list[str]:
    """Repair what a killed writer left behind. Call only while holding :func:`writer_lock`.

    If the save dir is missing but an ``.old-*`` copy of it exists (a kill between the two
    renames of the fallback swap), the copy is renamed back. Every other temp/old dir is
    removed. Returns what was done, one line per action.
    """
    target = _target(save_dir)
    done: list[str] = []
    found = leftovers(target)
    if not target.exists():
        olds = [p for p in found if p.name.startswith(f".{target.name}.old-") and (p / MANIFEST).is_file()]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            os.rename(newest, target)
            _fsync_dir(target.parent)
            done.append(f"restored {target.name} from {newest.name}")
            found.remove(newest)
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(f"removed {p.name}")
    return done


# ------------------------------------------------------------------------- atomic swap
def _load_renameat2() -> Callable[[str, str, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.28 (musl, macOS, Windows)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd = -100

    def call(a: str, b: str, flags: int) -> int:
        return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags)

    return call


_renameat2 = _load_renameat2()
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths. False if this system cannot (caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(str(a), str(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # filesystem (or kernel < 3.15) without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash_and_sync(path: Path) -> str:
    # One read for both: hash the bytes and push them to disk, so a power cut after the
    # swap cannot leave the new dir with empty files (ext4 delays allocation).
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
        os.fsync(f.fileno())
    return h.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """The SHA-256 a manifest records of itself: its canonical JSON without the checksum field."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_SHA}
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def check_writable(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise StateError(f"{target} exists and is not a directory; refusing to overwrite it.")
    if target.is_dir() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise StateError(f"{target} exists and is not a memorag save dir; refusing to overwrite it.")


def write_save_dir(save_dir: str | Path, fill: Callable[[Path], dict], *, lock_timeout: float = 0.0) -> dict:
    """Create ``save_dir`` by calling ``fill(tmp_dir)`` then swapping it in.

    An existing save dir is replaced only once the new one is complete and on disk, so an
    error or a kill midway leaves the old dir as it was (nothing lost). Holds the writer
    lock (see :func:`writer_lock`) for the whole call.
    """
    with writer_lock(save_dir, lock_timeout) as target:
        check_writable(target)  # before the (possibly long) fill, not after
        tmp = _sibling(target, "tmp", f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            manifest = fill(tmp)
            files = {}
            for p in sorted(tmp.rglob("*")):
                if p.is_symlink():
                    raise StateError(f"refusing to save a symlink ({p.relative_to(tmp)}) into a save dir")
                if p.is_file():
                    rel = p.relative_to(tmp).as_posix()
                    files[rel] = {"bytes": p.stat().st_size, "sha256": _hash_and_sync(p)}
            for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, key=lambda x: -len(x.parts)):
                _fsync_dir(d)
            manifest = {"format_version": FORMAT_VERSION, "memorag_version": __version__,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest, "files": files}
            manifest[MANIFEST_SHA] = manifest_checksum(manifest)
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
                f.write(json.dumps(manifest, indent=1, ensure_ascii=False))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            check_writable(target)  # unchanged under the lock unless someone bypassed it
            if not target.exists():
                os.rename(tmp, target)
            elif _exchange(tmp, target):
                pass  # tmp now names the old dir; removed below
            else:
                # No atomic exchange here: a kill between these renames leaves the target
                # missing and the old dir as .old-*, which recover() renames back.
                old = _sibling(target, "old", f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
                os.rename(target, old)
                try:
                    os.rename(tmp, target)
                except BaseException:
                    os.rename(old, target)
                    raise
                tmp = old
            _fsync_dir(target.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# ----------------------------------------------------------------------------- reading
def _find(d: Path) -> Path:
    """``d`` itself, after repairing a fallback swap that a kill left between its two renames."""
    if d.exists() or not any(p.name.startswith(f".{d.name}.old-") for p in leftovers(d)):
        return d
    for _ in range(40):
        try:
            # Lock free = no writer alive, so the .old-* dir is a leftover: rename it back.
            with writer_lock(d, timeout=0):
                return d
        except LockedError:
            pass  # a live writer is between its two renames (microseconds): look again
        except OSError:
            return d  # cannot take the lock here (read-only dir): report the dir as missing
        time.sleep(0.05)
        if d.exists():
            return d
    raise StateError(f"Save dir {d} is being replaced by another process; try again.")


def _check_tree(d: Path, files: dict) -> None:
    """Refuse symlinks, unexpected files, and manifest paths that leave the dir."""
    for rel in files:
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts:
            raise StateError(f"{d} is corrupt: its manifest names a file outside the dir ({rel!r}).")
    for root, dirs, names in os.walk(d):
        for name in dirs + names:
            p = Path(root) / name
            rel = p.relative_to(d).as_posix()
            if p.is_symlink():
                raise StateError(f"{d} holds a symlink ({rel}); memorag never writes one, so the dir was "
                                 "altered. Memorize the document again.")
            if name in names and rel != MANIFEST and rel not in files:
                raise StateError(f"{d} holds a file its manifest does not list ({rel}); the dir was altered "
                                 "or mixed with another. Memorize the document again.")


def read_manifest(save_dir: str | Path, *, verify: bool = True) -> dict:
    """Read and check a save dir's manifest (and, with ``verify``, every file's size and hash).

    The manifest's own checksum is always checked; ``verify`` adds the walk over the dir
    (no symlinks, no unlisted files) and the size and sha256 of every listed file.
    """
    d = _find(Path(save_dir).expanduser())
    if not d.exists():
        raise StateError(f"Save dir {d} does not exist. Memorize a document with --save-dir first.")
    if d.is_symlink():
        d = d.resolve()  # a symlink to a save dir is fine; symlinks inside one are not
    path = d / MANIFEST
    if path.is_symlink() or not path.is_file():
        if path.is_symlink():
            raise StateError(f"{path} is a symlink; memorag never writes one. Memorize the document again.")
        raise StateError(f"{d} is not a memorag save dir (no {MANIFEST}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StateError(f"{path} is corrupt (not valid JSON). Memorize the document again.") from None
    if not isinstance(manifest, dict):
        raise StateError(f"{path} is corrupt (not a JSON object). Memorize the document again.")
    fmt = manifest.get("format_version")
    if isinstance(fmt, bool) or fmt not in READABLE_FORMATS:
        raise StateError(
            f"{d} was written in save format {fmt!r} (memorag "
            f"{manifest.get('memorag_version')}); this memorag {__version__} reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}. Memorize the document again."
        )
    if (fmt >= 2 or MANIFEST_SHA in manifest) and manifest.get(MANIFEST_SHA) != manifest_checksum(manifest):
        raise StateError(f"{path} is corrupt (its checksum does not match its content). Memorize the document again.")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(m, dict) for m in files.values()):
        raise StateError(f"{path} is corrupt (no file list). Memorize the document again.")
    if verify:
        _check_tree(d, files)
        for rel, meta in files.items():
            f = d / rel
            if not f.is_file():
                raise StateError(f"{d} is incomplete: {rel} is missing. Memorize the document again.")
            if f.stat().st_size != meta.get("bytes") or sha256_file(f) != meta.get("sha256"):
                raise StateError(f"{d} is corrupt: {rel} does not match its recorded size/hash. "
                                 "Memorize the document again.")
    return manifest


def _identity(d: Path) -> tuple:
    try:
        st = os.stat(d)
        return st.st_dev, st.st_ino, (d / MANIFEST).read_bytes()
    except OSError:
        return ()


def load_consistent(save_dir: str | Path, load: Callable[[Path, dict], T], attempts: int = 3) -> T:
    """Verify ``save_dir`` and run ``load(dir, manifest)``, retried if the dir was swapped meanwhile.

    A writer may swap in a new save dir while a reader is between reading the manifest and
    reading the memory or the chunks; the reader would then hold parts of two states. The
    dir's inode and manifest bytes are compared before and after ``load``: if they changed,
    the load is repeated (a :class:`StateError` raised because files vanished mid-read is
    retried the same way).
    """
    d = Path(save_dir).expanduser()
    for attempt in range(attempts):
        before = _identity(d)
        try:
            manifest = read_manifest(d)
            result = load(d, manifest)
        except StateError:
            if attempt + 1 < attempts and _identity(d) != before:
                continue
            raise
        if _identity(d) == before:
            return result
    raise StateError(f"Save dir {d} kept changing while it was being loaded (another process is "
                     "rewriting it); try again when it has finished.")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

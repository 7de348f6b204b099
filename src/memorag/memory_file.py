"""A saved memory as one file: ``Memory.save("cache/x/memory.bin")`` writes one file, as the
original MemoRAG does.

The file is an uncompressed zip archive of what a memory directory holds (``memory.json``
and the backend's state file, e.g. llama.cpp's KV-cache dump): plain names only, read back
by name, never unpickled. Writing goes to a temporary file beside the target that is
renamed over it, so a kill leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from memorag.errors import InputError, StateError

_NOT_OURS = ("is not a memory saved by memorag (files from the original MemoRAG cannot be read); memorize "
             "the document again and save it.")


def is_memory_file(path: Path, meta_name: str) -> bool:
    """Whether ``path`` is a file this module wrote (a zip holding ``meta_name``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return meta_name in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def write_memory_file(path: Path, meta_name: str, fill: Callable[[Path], dict]) -> dict:
    """``fill(directory)`` writes a memory directory; its files become the one file ``path``.

    An existing file at ``path`` is replaced only if it is a memory saved by memorag (anything
    else, e.g. a file of the original MemoRAG, is left alone: :class:`InputError`).
    Returns what ``fill`` returned."""
    if path.exists() and not is_memory_file(path, meta_name):
        raise InputError(f"{path} exists and is not a memory saved by memorag; not overwriting it. Choose "
                         "another path, or move the file away.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        directory = Path(tmp) / "memory"
        directory.mkdir()
        info = fill(directory)
        packed = Path(tmp) / "packed"
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as zf:
            for p in sorted(directory.iterdir()):
                if not p.is_file() or p.is_symlink():
                    raise StateError(f"The memory backend wrote {p.name!r}, which is not a plain file; save the "
                                     "memory to a directory instead.")
                zf.write(p, p.name)
        with open(packed, "rb") as f:
            os.fsync(f.fileno())
        os.replace(packed, path)
    return info


def unpack_memory_file(path: Path, meta_name: str, directory: Path) -> None:
    """Extract a file written by :func:`write_memory_file` into the empty ``directory``.

    Only what that function writes is accepted: uncompressed entries with plain names (no
    directories, no path separators, no leading dot), one of them ``meta_name``."""
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
            if meta_name not in {e.filename for e in entries}:
                raise StateError(f"{path} {_NOT_OURS}")
            for e in entries:
                name = e.filename
                if e.is_dir() or "/" in name or "\\" in name or name.startswith(".") \
                        or e.compress_type != zipfile.ZIP_STORED:
                    raise StateError(f"{path} holds an entry memorag does not write ({name!r}); it is not a "
                                     "memory saved by memorag.")
                with zf.open(e) as src, open(directory / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:  # not a zip, or an entry whose checksum fails
        raise StateError(f"{path} is corrupt or {_NOT_OURS}") from None
    except OSError as exc:
        raise StateError(f"Cannot read the memory file {path}: {exc.strerror or exc}.") from None


__all__ = ["is_memory_file", "unpack_memory_file", "write_memory_file"]

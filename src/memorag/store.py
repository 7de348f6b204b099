"""Save directories: written atomically, described by a manifest, verified on load.

A save dir holds the memory state (``memory/``), the chunks and vectors (``retrieval/``)
and ``manifest.json``: format version, memorag version, the models used, counts, and the
size and sha256 of every file. Loading refuses a dir whose format or files do not match,
so a truncated copy or a dir made by other models fails with a clear message rather than
garbage answers. Nothing here uses pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from memorag._version import __version__
from memorag.errors import StateError
from memorag.models.packaged import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_save_dir(save_dir: str | Path, fill: Callable[[Path], dict]) -> dict:
    """Create ``save_dir`` by calling ``fill(tmp_dir)`` then swapping it in.

    An existing save dir is replaced only once the new one is complete, so an error or a
    kill midway never leaves a half-written dir behind (nothing lost).
    """
    target = Path(save_dir).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        manifest = fill(tmp)
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(tmp).as_posix()
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = {"format_version": FORMAT_VERSION, "memorag_version": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        old = None
        if target.exists():
            if not (target / MANIFEST).is_file() and any(target.iterdir()):
                raise StateError(f"{target} exists and is not a memorag save dir; refusing to overwrite it.")
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(save_dir: str | Path, *, verify: bool = True) -> dict:
    """Read and check a save dir's manifest (and, with ``verify``, every file's size and hash)."""
    d = Path(save_dir).expanduser()
    if not d.exists():
        raise StateError(f"Save dir {d} does not exist. Memorize a document with --save-dir first.")
    path = d / MANIFEST
    if not path.is_file():
        raise StateError(f"{d} is not a memorag save dir (no {MANIFEST}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StateError(f"{path} is corrupt (not valid JSON). Memorize the document again.") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StateError(
            f"{d} was written in save format {manifest.get('format_version')!r} (memorag "
            f"{manifest.get('memorag_version')}); this memorag {__version__} reads format {FORMAT_VERSION}. "
            "Memorize the document again."
        )
    if verify:
        for rel, meta in manifest.get("files", {}).items():
            f = d / rel
            if not f.is_file():
                raise StateError(f"{d} is incomplete: {rel} is missing. Memorize the document again.")
            if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
                raise StateError(f"{d} is corrupt: {rel} does not match its recorded size/hash. "
                                 "Memorize the document again.")
    return manifest


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

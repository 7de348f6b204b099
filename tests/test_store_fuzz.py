"""Fuzzing a real save dir: every damaged copy is refused with one StateError.

Two real save dirs are built once (two short texts memorized with the default memory model
and embedder). Then >= 500 seeded cases damage a copy of the first — truncation, bit flips,
overwritten ranges, appended bytes, a file swapped with the other document's, a symlink
(even to an identical copy outside), a missing file, a file turned into a directory, an
extra file, manifest edits — and each copy is loaded through ``MemoRAG.load``, the path
``memorag ask`` takes. Each must raise exactly one :class:`StateError`, quickly; none may
load (a load would answer from damaged state) or crash. A second group damages files but
recomputes every hash (a buggy or hostile writer), to show the loaders behind the hashes
also refuse truncated files instead of raising a traceback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memorag.errors import StateError
from memorag.store import MANIFEST, MANIFEST_SHA, manifest_checksum, read_manifest

N_CASES = 520
SEED = 12


@pytest.fixture(scope="module")
def saved(tmp_path_factory, sample_text, default_llm):
    """(pipeline, dir of document A, dir of document B), built once for the module."""
    from memorag import MemoRAG

    root = tmp_path_factory.mktemp("fuzz")
    # The session's llama.cpp model answers (never called here); this pipeline's own
    # 0.5B memory model reads, with a small window to keep the state file ~2 MB.
    pipe = MemoRAG(customized_gen_model=default_llm, n_ctx=1024)
    pipe.memorize(sample_text[:600], save_dir=root / "a", progress=False)
    pipe.memorize(sample_text[2000:2600], save_dir=root / "b", progress=False)
    pipe.load(root / "a")  # the pristine dir loads
    return pipe, root / "a", root / "b"


def _files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def _copy(src: Path, dst: Path) -> None:
    # Hard links keep 500 copies cheap; a file is un-shared before it is damaged.
    shutil.copytree(src, dst, copy_function=os.link)


def _own(p: Path) -> bytes:
    data = p.read_bytes()
    p.unlink()
    p.write_bytes(data)
    return data


def _edit_manifest(rng: random.Random, m: dict) -> str:
    """One random change to one value of the manifest (never a no-op)."""
    leaves: list[tuple[list, object]] = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, [*path, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, i])
        if path:
            leaves.append((path, node))

    walk(m, [])
    path, value = rng.choice(leaves)
    parent = m
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    action = rng.choice(["change", "delete", "add"])
    if action == "delete" or (action == "change" and value is None):
        del parent[key]
    elif action == "add" and isinstance(value, dict):
        value["extra" + str(rng.randrange(1000))] = 1
    elif isinstance(value, bool):
        parent[key] = not value
    elif isinstance(value, int | float):
        parent[key] = value + rng.choice([-1, 1, 1000])
    elif isinstance(value, str):
        parent[key] = value[:-1] + ("x" if value[-1:] != "x" else "y") if value else "x"
    else:
        parent[key] = None
    return "/".join(map(str, path))


def _damage(rng: random.Random, d: Path, other: Path, outside: Path, kind: str, rel: str) -> None:
    p = d / rel
    if kind == "truncate":
        data = _own(p)
        p.write_bytes(data[: rng.randrange(len(data))])
    elif kind == "bitflip":
        data = bytearray(_own(p))
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
    elif kind == "overwrite":
        data = bytearray(_own(p))
        i = rng.randrange(len(data))
        n = rng.randint(1, 64)
        new = bytes(rng.randrange(256) for _ in range(n))
        if data[i : i + n] == new[: len(data[i : i + n])]:
            new = bytes(b ^ 0xFF for b in new)
        data[i : i + n] = new[: len(data[i : i + n])]
        p.write_bytes(bytes(data))
    elif kind == "append":
        _own(p)
        with open(p, "ab") as f:
            f.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))))
    elif kind == "swap":  # the same file of the other document
        assert (other / rel).read_bytes() != p.read_bytes()
        p.unlink()
        shutil.copyfile(other / rel, p)
    elif kind == "symlink_same":  # a symlink to an identical copy outside the dir
        copy = outside / f"{rng.randrange(10**9)}-{p.name}"
        shutil.copyfile(p, copy)
        p.unlink()
        p.symlink_to(copy)
    elif kind == "symlink_other":
        p.unlink()
        p.symlink_to(other / rel)
    elif kind == "missing":
        p.unlink()
    elif kind == "to_dir":
        p.unlink()
        p.mkdir()
        (p / "x").write_bytes(b"x")
    elif kind == "extra":
        where = d / rng.choice(["", "memory", "retrieval", "new_sub"])
        where.mkdir(exist_ok=True)
        (where / f"extra{rng.randrange(1000)}.bin").write_bytes(os.urandom(rng.randint(0, 64)))
    elif kind == "symlink_subdir":
        sub = rng.choice(["memory", "retrieval"])
        shutil.rmtree(d / sub)
        (d / sub).symlink_to(other / sub, target_is_directory=True)
    elif kind == "manifest_edit":
        m = json.loads(_own(d / MANIFEST))
        _edit_manifest(rng, m)
        (d / MANIFEST).write_text(json.dumps(m, indent=1), encoding="utf-8")
    elif kind == "manifest_other":  # the other document's manifest over this one's files
        (d / MANIFEST).unlink()
        shutil.copyfile(other / MANIFEST, d / MANIFEST)
    elif kind == "manifest_garbage":
        _own(d / MANIFEST)
        (d / MANIFEST).write_bytes(rng.choice([b"", b"[]", b"null", b"{}", b"\xff\xfe{", b'{"format_version": 2}',
                                               os.urandom(100)]))
    else:  # pragma: no cover
        raise AssertionError(kind)


FILE_KINDS = ["truncate", "bitflip", "overwrite", "append", "swap", "symlink_same", "symlink_other", "missing",
              "to_dir"]
DIR_KINDS = ["extra", "symlink_subdir", "manifest_edit", "manifest_other", "manifest_garbage"]


def test_every_damaged_copy_is_refused(saved, tmp_path):
    pipe, a, b = saved
    names = _files(a)
    assert {"manifest.json", "memory/kv_state.bin", "memory/memory.json", "retrieval/chunks.json",
            "retrieval/vectors.npy"} <= set(names)
    outside = tmp_path / "outside"
    outside.mkdir()
    rng = random.Random(SEED)
    kinds: Counter = Counter()
    slowest = 0.0
    for i in range(N_CASES):
        d = tmp_path / f"case{i}"
        _copy(a, d)
        kind = rng.choice(FILE_KINDS + DIR_KINDS)
        rel = rng.choice(names)
        _damage(rng, d, b, outside, kind, rel)
        kinds[kind] += 1
        t = time.perf_counter()
        with pytest.raises(StateError) as info:
            pipe.load(d)
        slowest = max(slowest, time.perf_counter() - t)
        msg = str(info.value)
        assert msg and "\n" not in msg, (kind, rel, msg)
        shutil.rmtree(d)
    assert sum(kinds.values()) >= 500 and set(kinds) == set(FILE_KINDS + DIR_KINDS), kinds
    assert slowest < 5.0  # never a hang: each refusal is a hash or a walk over ~2 MB
    # The pristine dir still loads after all that (failed loads did not break the pipeline).
    manifest = pipe.load(a)
    assert manifest["chunks"] == len(pipe.retriever.chunks) > 0


def _rehash(d: Path) -> None:
    """Recompute every recorded hash and the manifest checksum (what a buggy writer could do)."""
    from memorag.models.packaged import sha256_file

    m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    for rel in m["files"]:
        m["files"][rel] = {"bytes": (d / rel).stat().st_size, "sha256": sha256_file(d / rel)}
    m[MANIFEST_SHA] = manifest_checksum(m)
    (d / MANIFEST).write_text(json.dumps(m), encoding="utf-8")


@pytest.mark.parametrize("rel", ["memory/memory.json", "retrieval/chunks.json", "retrieval/vectors.npy"])
def test_loaders_refuse_truncated_files_even_with_matching_hashes(saved, tmp_path, rel):
    pipe, a, _ = saved
    size = (a / rel).stat().st_size
    rng = random.Random(rel)
    for n in sorted({0, 1, size // 2, size - 1, *(rng.randrange(size) for _ in range(20))}):
        d = tmp_path / f"cut{n}"
        _copy(a, d)
        _own(d / rel)
        with open(d / rel, "r+b") as f:
            f.truncate(n)
        _rehash(d)
        read_manifest(d)  # the hashes match: only the loader can tell
        with pytest.raises(StateError):
            pipe.load(d)
        shutil.rmtree(d)


def test_cli_refuses_a_damaged_dir_with_one_line(saved, tmp_path):
    from memorag.cli import app

    _, a, b = saved
    rng = random.Random(1)
    for kind, rel in [("bitflip", "memory/kv_state.bin"), ("swap", "retrieval/chunks.json"),
                      ("symlink_same", "retrieval/vectors.npy"), ("manifest_edit", MANIFEST)]:
        d = tmp_path / kind
        _copy(a, d)
        _damage(rng, d, b, tmp_path, kind, rel)
        t = time.perf_counter()
        result = CliRunner().invoke(app, ["ask", str(d), "Who is rich?"])
        # Refused before any model is loaded: from_saved verifies first.
        assert time.perf_counter() - t < 5.0
        assert result.exit_code == 1, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

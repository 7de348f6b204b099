import json

import pytest

from memorag.errors import StateError
from memorag.store import MANIFEST, read_manifest, write_save_dir

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


def _fill(payload: bytes):
    def fill(tmp):
        (tmp / "a").mkdir()
        (tmp / "a" / "data.bin").write_bytes(payload)
        return {"models": {"memory": {"spec": "x"}}}

    return fill


def test_manifest_round_trip_and_corruption(tmp_path):
    d = tmp_path / "state"
    m = write_save_dir(d, _fill(b"hello"))
    assert m["files"]["a/data.bin"]["bytes"] == 5
    assert read_manifest(d)["models"]["memory"]["spec"] == "x"

    (d / "a" / "data.bin").write_bytes(b"hellO")  # same size, different bytes
    with pytest.raises(StateError, match="corrupt"):
        read_manifest(d)
    (d / "a" / "data.bin").write_bytes(b"hel")  # truncated
    with pytest.raises(StateError, match="corrupt"):
        read_manifest(d)
    (d / "a" / "data.bin").unlink()
    with pytest.raises(StateError, match="missing"):
        read_manifest(d)


def test_manifest_errors(tmp_path):
    with pytest.raises(StateError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(StateError, match="not a memorag save dir"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format_version": 999}))
    with pytest.raises(StateError, match="format"):
        read_manifest(tmp_path)


def test_failed_save_keeps_the_old_state(tmp_path):
    d = tmp_path / "state"
    write_save_dir(d, _fill(b"old"))

    def broken(tmp):
        (tmp / "partial").write_bytes(b"x")
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        write_save_dir(d, broken)
    assert (d / "a" / "data.bin").read_bytes() == b"old"
    # no partial dirs left behind; the writer lock file stays (flock locks need a stable inode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state.lock", "state"]


def test_refuses_to_overwrite_foreign_dir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(StateError, match="not a memorag save dir"):
        write_save_dir(tmp_path, _fill(b"x"))
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_format_1_dirs_without_a_manifest_checksum_still_load(tmp_path):
    from memorag.store import MANIFEST_SHA

    d = tmp_path / "state"
    write_save_dir(d, _fill(b"hello"))
    m = json.loads((d / MANIFEST).read_text())
    del m[MANIFEST_SHA]
    m["format_version"] = 1  # as written by memorag before the checksum existed
    (d / MANIFEST).write_text(json.dumps(m))
    assert read_manifest(d)["models"]["memory"]["spec"] == "x"
    m["format_version"] = 2  # format 2 without its checksum is refused
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StateError, match="checksum"):
        read_manifest(d)


def test_writer_lock_is_reentrant_and_refuses_a_second_holder_in_another_thread(tmp_path):
    import threading

    from memorag.errors import LockedError
    from memorag.store import writer_lock

    d = tmp_path / "state"
    errors = []
    with writer_lock(d):
        write_save_dir(d, _fill(b"x"))  # save inside memorize's lock: same thread, no deadlock

        def other():
            try:
                with writer_lock(d):
                    pass
            except LockedError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert len(errors) == 1
    with writer_lock(d):  # released: free again
        pass


def test_load_consistent_rereads_a_dir_swapped_midway(tmp_path):
    from memorag.store import load_consistent

    d = tmp_path / "state"
    write_save_dir(d, _fill(b"first"))
    seen = []

    def load(dd, manifest):
        seen.append((dd / "a" / "data.bin").read_bytes())
        if len(seen) == 1:  # another writer swaps a new state in while this one reads
            write_save_dir(d, _fill(b"second"))
        return manifest["files"]["a/data.bin"]["bytes"]

    assert load_consistent(d, load) == len(b"second")
    assert seen == [b"first", b"second"]

import pytest

from memorag.errors import InputError
from memorag.text import check_text, detect_language, read_text_file

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


def test_detect_language():
    assert detect_language("It is a truth universally acknowledged.") == "en"
    assert detect_language("这是一个关于记忆增强检索的测试文档，其中包含一些英文 words。") == "zh"


@pytest.mark.parametrize("bad", ["", "   \n\t ", "abc\x00def"])
def test_check_text_refuses_empty_and_binary(bad):
    with pytest.raises(InputError):
        check_text(bad)


def test_check_text_refuses_non_string():
    with pytest.raises(InputError, match="must be a string"):
        check_text(b"bytes")  # type: ignore[arg-type]


def test_read_text_file(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text("\ufeffhello world", encoding="utf-8")
    assert read_text_file(ok) == "hello world"

    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(InputError, match="binary"):
        read_text_file(binary)

    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_text_file(latin)

    with pytest.raises(InputError, match="not found"):
        read_text_file(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="directory"):
        read_text_file(tmp_path)

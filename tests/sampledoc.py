"""The document the default-pipeline tests share (tests/conftest.py, ``default_pipeline``):
the bundled sample with one invented paragraph, :data:`FACT`, in its middle."""

from __future__ import annotations

FACT = ("In the spring of that year the Netherfield housekeeper, Mrs. Oakshott, hid the silver key "
        "to the east library inside a blue porcelain jar on the kitchen mantelpiece.")
QUESTION = "Where did Mrs. Oakshott hide the silver key to the east library?"


def with_fact(sample_text: str) -> str:
    """The sample with :data:`FACT` as a paragraph in the middle of ~4.5K tokens of Austen:
    neither its first nor its last chunk."""
    paras = sample_text.split("\n\n")
    mid = len(paras) // 2
    return "\n\n".join(paras[:mid] + [FACT] + paras[mid:])

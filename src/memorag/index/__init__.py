"""Vector index backends. :class:`VectorIndex` is the protocol."""

from memorag.index.base import VectorIndex

__all__ = ["VectorIndex"]

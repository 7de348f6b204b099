"""Embedding backends. :class:`Embedder` is the protocol."""

from memorag.embed.base import Embedder

__all__ = ["Embedder"]

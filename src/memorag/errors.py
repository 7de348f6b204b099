"""Errors that memorag raises on purpose.

Every error a user can cause (bad input, missing model, corrupt save dir, unreachable
server) is a :class:`MemoRAGError` with a message that says what to do. The CLI prints
the message and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class MemoRAGError(Exception):
    """Base class: a problem the user can fix, with a message saying how."""


class InputError(MemoRAGError, ValueError):
    """The text or file given to memorag cannot be used (empty, binary, not UTF-8...)."""


class ModelNotFoundError(MemoRAGError):
    """A model spec could not be resolved to something loadable on this machine."""


class NotMemorizedError(MemoRAGError):
    """A question was asked before any document was memorized or loaded."""


class StateError(MemoRAGError):
    """A saved state directory is missing, corrupt, or was made with other models/format."""


class LockedError(StateError):
    """Another process is writing the same save dir (one writer at a time)."""


class ContextTooLongError(MemoRAGError):
    """The document does not fit the memory model's context window."""


class BackendError(MemoRAGError):
    """A model backend or remote server failed in a way retrying did not fix."""

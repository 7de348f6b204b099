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


class NotFoundError(MemoRAGError):
    """A named document (or job) does not exist in the document store."""


class ConflictError(MemoRAGError):
    """The request clashes with the store's state (the name is taken, or is being memorized)."""


class BusyError(MemoRAGError):
    """The service cannot take this request now (a memory is being built, or the queue is full).

    ``retry_after`` says how many seconds to wait before trying again."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReadOnlyError(MemoRAGError):
    """A write (memorize, upload, append, delete) was sent to a read-only service replica."""

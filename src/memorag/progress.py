"""One progress-bar adapter: tqdm driven by ``progress(done, total)`` callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from memorag.llm.base import ProgressFn, StageProgressFn


def for_stage(progress: bool | StageProgressFn | None, stage: str) -> bool | ProgressFn:
    """Narrow a caller's ``progress(stage, done, total)`` callback to one stage's
    ``(done, total)``; True/False (draw bars or not) pass through."""
    if callable(progress):
        report = progress
        return lambda done, total: report(stage, done, total)
    return bool(progress)


@contextmanager
def progress_bar(desc: str, unit: str, enabled: bool | ProgressFn = True) -> Iterator[ProgressFn | None]:
    """Yield a ``progress(done, total)`` callback that drives a tqdm bar (None when disabled).

    A callable ``enabled`` is the caller's own callback (the service and the demo report
    progress themselves) and is yielded as is. Backends report absolute progress and learn
    the total only once they start, so the bar's total and position are set on each call
    rather than incremented.
    """
    if callable(enabled):
        yield enabled
        return
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()

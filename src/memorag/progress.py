"""One progress-bar adapter: tqdm driven by ``progress(done, total)`` callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from memorag.llm.base import ProgressFn


@contextmanager
def progress_bar(desc: str, unit: str, enabled: bool = True) -> Iterator[ProgressFn | None]:
    """Yield a ``progress(done, total)`` callback that drives a tqdm bar (None when disabled).

    Backends report absolute progress and learn the total only once they start, so the
    bar's total and position are set on each call rather than incremented.
    """
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

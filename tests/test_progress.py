"""Progress callbacks (what `memorag serve` and the demo show): stages in order, counts that
end at their totals, and no tqdm bars drawn when a callback is given."""

from __future__ import annotations

from memorag.memory import Memory


def test_memory_reports_compress_then_memory_stages(default_llm, sample_text, capsys):
    # A 2,048-token window makes the ~4.3K-token sample a long document: compress, then read.
    memory = Memory(llm=default_llm.twin(n_ctx=2048))
    events: list[tuple[str, int, int]] = []
    stats = memory.memorize(sample_text, progress=lambda stage, done, total: events.append((stage, done, total)))
    stages = [e[0] for e in events]
    assert stages == sorted(stages, key=["compress", "memory"].index), "stages out of order"
    compress = [e for e in events if e[0] == "compress"]
    reading = [e for e in events if e[0] == "memory"]
    assert compress[-1][1] == compress[-1][2] == stats["compression"]["windows"]
    assert reading[-1][1] == reading[-1][2] == stats["memory_tokens"]
    assert [d for _, d, _ in reading] == sorted(d for _, d, _ in reading)
    assert "memory: reading" not in capsys.readouterr().err  # no tqdm bar beside the callback


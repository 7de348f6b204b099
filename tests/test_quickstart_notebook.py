"""docs/quickstart.ipynb runs top to bottom on the default models, so it cannot rot.

It loads the real default models and memorizes the sample (about a minute and a half on 2
cores), hence `slow`: run it with `-m slow` when the notebook or the calls it makes change. The
default suite already runs the same calls end to end on the same models (tests/test_e2e_default.py,
tests/test_demo_questions.py), and it had grown past its 15 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "quickstart.ipynb"


def _printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_quickstart_notebook_runs_and_answers_the_sample_question(tmp_path):
    # Imported here so that collecting the unit tier never needs Jupyter.
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, naming the cell, if any cell fails.
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = {i: _printed(cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    ask = next(text for text in printed.values() if text.startswith("clues (recalled spans):"))
    answer = ask.split("\nanswer:", 1)[1]
    assert "bingley" in answer.lower(), ask  # the bundled sample's own answer
    assert "evidence:" in ask and "chunk " in ask
    assert any("answer after reload:" in text for text in printed.values())
    assert any("plain RAG answer:" in text for text in printed.values())

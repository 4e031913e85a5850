"""The walkthrough notebook: committed with outputs, in sync with its builder, and it runs.

Executing it trains two small models on the built-in dataset (a few minutes on 2 cores), so
the run is marked slow; ``make test`` runs it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COMMITTED = NOTEBOOKS / "walkthrough.ipynb"


def builder():
    spec = importlib.util.spec_from_file_location(
        "build_walkthrough", NOTEBOOKS / "build_walkthrough.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_committed_notebook_matches_its_builder():
    """Edit build_walkthrough.py, then rebuild with --execute: the two never drift apart."""
    committed = nbformat.read(COMMITTED, as_version=4)
    assert sources(committed) == sources(builder().build())


def test_committed_notebook_has_the_outputs_of_a_clean_run():
    nb = nbformat.read(COMMITTED, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a code cell was never run"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were run out of order"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8, "the readers' pictures are missing"


def conclusion(nb) -> str:
    last = nb.cells[-1]
    return "".join(o.get("data", {}).get("text/markdown", "") for o in last.outputs)


def test_committed_conclusion_quotes_the_notebooks_own_numbers():
    nb = nbformat.read(COMMITTED, as_version=4)
    text = conclusion(nb)
    assert "official mIoU" in text
    # the printed evaluation lines of the same run hold the numbers the conclusion quotes
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    for line in printed.splitlines():
        if line.strip().startswith(("ce:", "focal:")):
            miou = line.split("official mIoU")[1].split()[0]
            assert miou in text, f"{miou} from {line!r} not in the conclusion"


@pytest.mark.slow
def test_notebook_executes_from_scratch(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = builder().build()
    monkeypatch.setenv("BDDSEG_WALKTHROUGH_OUT", str(tmp_path / "out"))  # the kernel inherits it
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()  # raises CellExecutionError on the first failing cell
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / "runs" / "ce" / "best.pt").is_file()
    assert (tmp_path / "out" / "runs" / "focal" / "best.pt").is_file()
    assert "official mIoU" in conclusion(nb)

"""The Colab notebook runs headless, end to end, on CPU, and produces its table and figure."""

import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "fedjax_syn_colab.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_a_tiny_table_headless(tmp_path, monkeypatch):
    out = tmp_path / "out"
    # The kernel inherits this environment: the package from this checkout, a tiny table.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FEDJAX_SYN_NOTEBOOK_TABLE", "digits_table")
    monkeypatch.setenv("FEDJAX_SYN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("FEDJAX_SYN_NOTEBOOK_GRID", "algorithm=fedavg")
    monkeypatch.setenv("FEDJAX_SYN_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    texts = json.dumps([c.get("outputs", []) for c in notebook.cells])
    assert "nothing to install" in texts
    assert "backend cpu" in texts
    table = (out / "tables" / "digits_table.md").read_text()
    assert "| 0.1 | fedavg | 1/1 |" in table and "| 1 | fedavg | 1/1 |" in table
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and (out / "figures" / "digits_table_alpha.png").is_file()
    assert any("fedavg" in o.get("data", {}).get("text/markdown", "") for o in outputs)

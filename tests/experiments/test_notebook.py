"""Executes notebooks/explore.ipynb end to end (nbclient) so it never rots: it trains its own tiny
synthetic run, shows tables, curves, recommendations and the catalog plots of a catalog JSON."""

from __future__ import annotations

import os

import pytest

from tests.experiments.fake_runs import catalog_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "notebooks", "explore.ipynb")

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_explore_notebook_runs(tmp_path, monkeypatch):
    cat = tmp_path / "catalog.json"
    catalog_json(str(cat))
    monkeypatch.delenv("SRS_WORKDIR", raising=False)
    monkeypatch.setenv("SRS_CATALOG_JSON", str(cat))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") if o.output_type == "stream" else
                     "\n".join(str(v) for v in o.get("data", {}).values()) for o in outputs)
    assert "| Dataset | Loss | BS |" in text  # the run's table row
    assert "top-10" in text and "a new user who saw" in text  # recommendations
    assert "| cce | 10,000,000 | ok |" in text  # the catalog table
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3  # training curves + memory + step time

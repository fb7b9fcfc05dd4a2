"""Every tutorial notebook runs top to bottom, and is committed executed.

Each notebook runs in a fresh kernel of *this* interpreter: the test writes a
kernel spec for ``sys.executable`` (with ipykernel from the ``test`` extra)
into a temporary folder and starts the kernel from it, so a ``python3``
kernel registered elsewhere on the machine (another Python, another venv) is
never picked up. Any cell error fails the test with the cell and traceback.
One test per notebook, so pytest-xdist spreads them over workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TUTORIALS = ["01_quickstart", "02_classic_optimizers", "03_classic_training",
             "04_learning_rates_and_regularization", "05_custom_transformation",
             "06_real_training_code"]


def test_every_tutorial_is_there():
  assert [p.stem for p in NOTEBOOKS][:len(TUTORIALS)] == TUTORIALS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path):
  """Outputs are committed so the plots show on the repository page."""
  notebook = json.loads(path.read_text())
  code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
  not_run = [i for i, c in enumerate(code) if c["source"] and c["execution_count"] is None]
  assert not not_run, f"{path.name}: code cells {not_run} have no outputs; execute and save it"
  assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), (
      f"{path.name} was not executed top to bottom in one kernel")
  errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
  assert not errors, f"{path.name} is committed with an error output"
  last = notebook["cells"][-1]
  assert last["cell_type"] == "markdown" and "What to try next" in "".join(last["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
  write_kernel_spec(tmp_path / "python3")
  kernel = AsyncKernelManager(kernel_name="python3",
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path)]))
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, km=kernel, timeout=600,
                          resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
  client.execute(cleanup_kc=True)  # raises CellExecutionError naming the cell on any error
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for c in notebook.cells if c.cell_type == "code" for o in c.outputs) or (
      path.stem == "01_quickstart"), f"{path.name} drew no plot"

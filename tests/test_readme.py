"""The README's promises: its example runs, and its two commands are what CI runs."""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_example_runs():
  code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
  assert len(code.splitlines()) <= 25
  namespace: dict = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  assert namespace["state"]["adam"].mu["w"].shape == (10,)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
  commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
  assert [c.split("#")[0].strip() for c in commands] == ["python3 dev.py demo",
                                                         "python3 dev.py test"]
  assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_every_notebook():
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    assert f"notebooks/{notebook.name}" in README, notebook.name


def _dev_module():
  spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_one_python_floor_in_pyproject_readme_and_dev_py_which_says_what_to_do():
  dev = _dev_module()
  floor = ".".join(map(str, dev.MIN_PYTHON))
  pyproject = (ROOT / "pyproject.toml").read_text()
  assert re.search(r'requires-python = ">=([\d.]+)"', pyproject).group(1) == floor
  assert re.search(r'\[tool\.mypy\]\npython_version = "([\d.]+)"', pyproject).group(1) == floor
  assert f"Python {floor}+" in README
  dev.check_python(dev.MIN_PYTHON)  # the floor itself passes
  with pytest.raises(SystemExit, match=rf"needs Python {floor} or newer .*this is Python 3\.10"):
    dev.check_python((3, 10))

"""The README's promises: its example runs, and its two commands are what CI runs."""

import pathlib
import re

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

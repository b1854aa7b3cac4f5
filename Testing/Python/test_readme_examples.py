"""The console-scripting examples in README.md run as written, on a real slicer-core scene."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, capsys):
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(EXAMPLES[index], f"README.md example {index + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "each example prints what it computed"

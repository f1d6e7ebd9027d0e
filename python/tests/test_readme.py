"""Goal: the README's Python example runs as printed (16 threads, results checked in it).
Method: take the README's first ```python block and exec it, on the backend under test."""
import os
import re

import pytest

from conftest import BACKEND

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_python_example(monkeypatch, capsys):
    if not os.path.isfile(README):
        pytest.skip("README.md not beside the tests")
    text = open(README, encoding="utf-8").read()
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, "README.md has no ```python block"
    monkeypatch.setenv("STREAMPOOL_BACKEND", BACKEND)
    exec(compile(m.group(1), "README.md", "exec"), {})
    assert "bytes peak" in capsys.readouterr().out

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


def test_readme_encoder_example(monkeypatch, capsys, tmp_path):
    """The README's encoder block, as printed, with "all-MiniLM-L6-v2" a link to the tiny fixture
    (the block's code is not changed; the real model's check is test_encoder.py's)."""
    if not os.path.isfile(README):
        pytest.skip("README.md not beside the tests")
    text = open(README, encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "EncoderBatcher" in b]
    assert blocks, "README.md has no ```python block with EncoderBatcher"
    tiny = os.path.join(os.path.dirname(README), "tests", "fixtures", "encoder", "tiny_bert")
    os.symlink(os.path.abspath(tiny), tmp_path / "all-MiniLM-L6-v2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMPOOL_BACKEND", BACKEND)
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "(3, 32)" in capsys.readouterr().out

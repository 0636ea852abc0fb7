"""The README's first example runs as written, and every other Python block in it parses."""

import ast
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_first_example_runs_and_finds_the_nan():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[0], "README.md", "exec"), {"__name__": "readme"})
    first, header = out.getvalue().splitlines()[:2]
    assert first == "Dense_1:__call__[0] 8 NaN", first  # as the comment in the README says
    assert header.startswith("Inspection: apply MLP on cpu:0"), header


def test_every_python_block_parses():
    assert len(BLOCKS) > 3
    for block in BLOCKS:
        ast.parse(block)

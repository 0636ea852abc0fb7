"""Text (golden), rich and static HTML views of an Inspection."""

import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from rich.console import Console

import inspector as fi
from inspector.demo import demo_inspection
from inspector.views.terminal import render_rich
from models import LogNet

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; rerun with UPDATE_GOLDEN=1 if intended"


def nan_inspection():
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    return fi.inspect_apply(lambda m, x: m(x), model)(variables, x)


def test_demo_text_golden():
    insp = demo_inspection()
    check_golden("demo.txt", insp.to_text(timings=False).replace(insp.device, "<device>"))


def test_nan_text_golden():
    insp = nan_inspection()
    check_golden("lognet.txt", insp.to_text(timings=False).replace(insp.device, "<device>"))


def test_rich_tree_has_the_text_content_and_highlights_nonfinite():
    insp = nan_inspection()
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(render_rich(insp))
    plain = console.export_text(clear=False)
    assert "first non-finite: d3:__call__[0]" in plain
    for line in insp.to_text(timings=False).splitlines():
        m = re.match(r"\s*#\d+ (\S+)", line)
        if m:
            assert m.group(1) in plain
    ansi = console.export_text(styles=True)
    assert "\x1b[1;31mfirst non-finite: d3:__call__[0]" in ansi  # bold red
    assert "\x1b[31mfloat32[2,2] mean nan" in ansi  # non-finite leaves in red


def test_static_html_escapes_user_text_and_marks_first_nonfinite():
    class Evil(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "<img src=x onerror=alert(1)>", x)
            return nn.Dense(2, name="<b>d</b>")(x)

    model, x = Evil(), jnp.ones((1, 2))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    page = fi.inspect_apply(lambda m, x: m(x), model)(variables, x).to_html()
    assert "<img" not in page and "<b>d" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;d&lt;/b&gt;" in page
    nan_page = nan_inspection().to_html()
    assert 'href="#fi-call-2"' in nan_page and 'id="fi-call-2" class="fi-first" open' in nan_page
    assert "http://" not in nan_page and "https://" not in nan_page  # offline, no CDN


def test_demo_main_writes_html(tmp_path, capsys):
    from inspector.demo import main

    out = tmp_path / "demo.html"
    main(["--html", str(out)])
    printed = capsys.readouterr().out
    assert "first non-finite" not in printed and "encoder/Dense_0:__call__[0]" in printed
    assert out.read_text().startswith("<!DOCTYPE html>")

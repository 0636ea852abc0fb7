"""The Attention tab's budgets on 12 layers x 12 heads x 128 x 128 (a flax transformer that sows its weights).

An inspection of a 12-layer transformer (d=96, 12 heads, ``nn.MultiHeadDotProductAttention(sow_weights=True)``,
batch 2 x 128 tokens) is made once, not timed. Then, per round (its maps' cache dropped first):

- widget: building the ``InspectionWidget`` (what shows before the tab is opened; it reads no map);
- first paint: what the kernel does when the Attention tab is opened: ``insp.attention()`` (one batch element
  of every map to the host, every head's summaries in float64) and the grid's payload (thumbnails, summaries),
  answered through the widget's message handler; its bytes are the message's JSON plus its buffer;
- a full map: the answer to a click on a head (float32 bytes of one 128 x 128 map), timed over 144 clicks.

Also printed: the bytes of the static page (``AttentionMaps.to_html``, every map embedded in 16 bits), and, with
``--browser`` (Debian's Chromium through Playwright), the browser's side: ``static/attention.js`` drawing the grid
of 144 thumbnails from the first paint's data, and one full map (canvas, 256 labels) with the layout done.
Targets: first paint <= 1 s and <= 150 kB, each map <= 100 ms. Run: ``python bench/bench_attention.py [--quick]``.
No assertions.
"""

from __future__ import annotations

import json
import statistics
import time

import common  # noqa: F401  (sets sys.path)
from common import fmt_bytes, log, machine, print_table, rounds_args


def transformer_inspection(layers: int = 12, heads: int = 12, seq: int = 128):
    import flax.linen as nn
    import jax

    import inspector as fi

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=heads, name="attn")(h, sow_weights=True)
            return x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(4 * x.shape[-1])(nn.LayerNorm()(x))))

    class Transformer(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(512, 8 * heads)(tokens)
            for i in range(layers):
                x = Block(name=f"block_{i}")(x)
            return nn.Dense(512)(x)

    model = Transformer()
    tokens = jax.random.randint(jax.random.key(0), (2, seq), 0, 512)
    variables = model.init(jax.random.key(1), tokens)
    return fi.inspect(model, variables, tokens)


BROWSER_JS = """() => {
  const data = JSON.parse(document.querySelector('script[type="application/json"]').textContent);
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const thumbs = bytes(data.thumbs);
  const m = data.maps[5][7], raw = bytes(m.codes), codes = new Uint16Array(raw.buffer, 0, raw.length / 2);
  const values = new Float32Array(codes.length).map((_, i) => m.lo + codes[i] * m.step);
  const host = document.createElement("div");
  document.body.append(host);
  const t0 = performance.now();
  const view = createAttention(host, data.grid, thumbs, () => {});
  void host.offsetHeight;  // layout done
  const t1 = performance.now();
  view.showMap(5, 7, values);
  void host.offsetHeight;
  const t2 = performance.now();
  host.remove();
  return [t1 - t0, t2 - t1];
}"""


def browser_times(page_html: str, rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds for the grid and for one full map, drawn by Chromium (see the module docstring)."""
    import tempfile
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    path = Path(tempfile.mkdtemp()) / "attention.html"
    path.write_text(page_html, encoding="utf-8")
    grid, full = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        for _ in range(rounds):
            g, f = page.evaluate(BROWSER_JS)
            grid.append(g)
            full.append(f)
        browser.close()
    return grid, full


def main() -> None:
    import sys

    browser = "--browser" in sys.argv
    if browser:
        sys.argv.remove("--browser")
    args = rounds_args(__doc__, default=7, quick=3, quick_help="3 rounds")
    from inspector.views.widgets import InspectionWidget

    log(machine())
    t0 = time.perf_counter()
    insp = transformer_inspection()
    log(f"inspection made in {time.perf_counter() - t0:.1f} s (not timed below)")
    widget_ms, paint_ms, map_ms, paint_bytes, map_bytes = [], [], [], [], []
    for r in range(args.rounds):
        insp.__dict__.pop("_attention", None)
        t = time.perf_counter()
        w = InspectionWidget(insp)
        widget_ms.append((time.perf_counter() - t) * 1000)
        sent: list[tuple[dict, list]] = []
        w.send = lambda content, buffers=None, sent=sent: sent.append((content, buffers or []))  # type: ignore
        t = time.perf_counter()
        w._on_msg({"kind": "attention", "what": "grid", "view": "bench"})
        grid, buffers = sent[-1]
        paint_bytes.append(len(json.dumps(grid)) + sum(len(b) for b in buffers))
        paint_ms.append((time.perf_counter() - t) * 1000)
        for layer in range(12):
            for head in range(12):
                t = time.perf_counter()
                w._on_msg({"kind": "attention", "what": "map", "view": "bench", "layer": layer, "head": head})
                content, buffers = sent[-1]
                map_ms.append((time.perf_counter() - t) * 1000)
                map_bytes.append(len(json.dumps(content)) + sum(len(b) for b in buffers))
        w.close()
        log(f"  round {r + 1}/{args.rounds}: first paint {paint_ms[-1]:.0f} ms")
    page = insp.attention().to_html()
    med = statistics.median
    rows = []
    if browser:
        grid_ms, full_ms = browser_times(page, args.rounds)
        rows = [("browser: the grid drawn (144 thumbnails, captions, layout)", f"{med(grid_ms):.0f} ms",
                 f"{min(grid_ms):.0f}-{max(grid_ms):.0f} ms", "", ""),
                ("browser: one full map drawn (128 x 128 canvas, 256 labels, layout)", f"{med(full_ms):.1f} ms",
                 f"{min(full_ms):.1f}-{max(full_ms):.1f} ms", "", "")]
    print_table(("measurement", "median", "range", "bytes", "target"), rows + [
        ("widget built (tab label only, no map read)", f"{med(widget_ms):.1f} ms",
         f"{min(widget_ms):.1f}-{max(widget_ms):.1f} ms", "", ""),
        ("first paint of the Attention tab (find, summarise, thumbnails)", f"{med(paint_ms):.0f} ms",
         f"{min(paint_ms):.0f}-{max(paint_ms):.0f} ms", fmt_bytes(med(paint_bytes)), "<= 1 s, <= 150 kB"),
        ("a full map on click (144 per round)", f"{med(map_ms):.2f} ms", f"{min(map_ms):.2f}-{max(map_ms):.2f} ms",
         fmt_bytes(med(map_bytes)), "<= 100 ms"),
        ("static page (`AttentionMaps.to_html`, every map in 16 bits)", "", "", fmt_bytes(len(page)), ""),
    ])


if __name__ == "__main__":
    main()

"""Attention maps as HTML: what the grid of heads is made of (shared by the widget's Attention tab and the
static page) and the self-contained static page.

The grid ships thumbnails only (:func:`thumbnail`: max-pooled to at most :data:`THUMB` cells a side, 8-bit,
scaled to the head's largest weight) and each head's summaries as the text view writes them; a head's full
map is sent on request (the widget: :func:`map_bytes`, float32) or embedded (the static page: 16-bit,
:func:`quantised`). The front end is ``static/attention.js``; it puts user text in as text only, and the
data is embedded in the page as JSON with ``<``, ``>`` and ``&`` escaped, so a token cannot end the script.
"""

from __future__ import annotations

import base64
import itertools
import json
import pathlib
from pathlib import Path
from typing import Any

import numpy as np

from inspector.attention import AttentionLayer, AttentionMaps
from inspector.names import safe
from inspector.views import palette
from inspector.views.attention_text import LEGEND, head_cells, header, layer_title, tokens_line
from inspector.views.format import esc

THUMB = 16
"""The most cells a thumbnail has along each side: 12 layers x 12 heads of 16 x 16 bytes is 36.9 kB."""
NAN_CODE = 255
"""A thumbnail cell holding NaN/Inf; the others are 0..254, scaled to the head's largest finite weight."""

_ids = itertools.count()
_STATIC = pathlib.Path(__file__).parent / "static"
JS = (_STATIC / "attention.js").read_text()
"""The front end of the grid and the full map (``static/attention.js``): ``createAttention``."""

CSS = """
.fi-attn{font:12px/1.4 var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,monospace);color:var(--fi-fg)}
.fi-attn .fi-attn-head-line{font-weight:600}.fi-attn .fi-attn-legend,.fi-attn .fi-attn-tokens{color:var(--fi-muted)}
.fi-attn .fi-attn-layer-title{margin:8px 0 2px 0;font-weight:600;overflow-wrap:anywhere}
.fi-attn .fi-attn-grid{display:flex;flex-wrap:wrap;gap:4px}
.fi-attn .fi-attn-thumb{display:flex;flex-direction:column;align-items:center;padding:2px;cursor:pointer;
border:1px solid var(--fi-line);border-radius:4px;background:var(--fi-bg);color:var(--fi-fg);font:inherit}
.fi-attn .fi-attn-thumb.fi-attn-on{border-color:var(--fi-accent);outline:2px solid var(--fi-accent)}
.fi-attn .fi-attn-thumb.fi-attn-bad{border-color:var(--fi-bad)}
.fi-attn .fi-attn-thumb-img{width:64px;height:64px;image-rendering:pixelated}
.fi-attn .fi-attn-cap{font-size:10px;line-height:1.25;color:var(--fi-muted);max-width:128px;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
.fi-attn .fi-attn-map{margin-top:10px;padding-top:6px;border-top:1px solid var(--fi-line)}
.fi-attn .fi-attn-map-title{font-weight:600;margin-bottom:4px;overflow-wrap:anywhere}
.fi-attn .fi-attn-body{display:grid;grid-template-columns:auto auto;justify-content:start;align-items:end}
.fi-attn .fi-attn-keys{display:grid;height:64px;align-items:end}
.fi-attn .fi-attn-key{writing-mode:vertical-rl;transform:rotate(180deg);font-size:10px;overflow:hidden;
white-space:nowrap;max-height:64px}
.fi-attn .fi-attn-queries{display:grid;justify-items:end;padding-right:4px}
.fi-attn .fi-attn-query{font-size:10px;overflow:hidden;white-space:nowrap;max-width:120px;line-height:1}
.fi-attn .fi-attn-corner{font-size:10px;color:var(--fi-muted)}
.fi-attn .fi-attn-map-img{image-rendering:pixelated;cursor:crosshair}
.fi-attn .fi-attn-readout{margin-top:4px;min-height:1.4em;overflow-wrap:anywhere}
"""
"""The grid's style (colours from the palette's ``--fi-*`` properties)."""


def _bins(n: int) -> np.ndarray:
    """Where each of at most :data:`THUMB` bins along an axis of ``n`` cells starts."""
    return np.linspace(0, n, min(n, THUMB) + 1).astype(np.int64)[:-1]


def thumbnail(weights: np.ndarray) -> np.ndarray:
    """One head's map ``[queries, keys]`` as at most :data:`THUMB` x :data:`THUMB` bytes: each cell the largest
    weight of its block, 0..254 of the head's largest finite weight, :data:`NAN_CODE` where a NaN/Inf is."""
    p = np.asarray(weights, dtype=np.float32)
    bad = ~np.isfinite(p)
    clean = np.where(bad, 0.0, p)
    rows, cols = _bins(p.shape[0]), _bins(p.shape[1])
    pooled = np.maximum.reduceat(np.maximum.reduceat(clean, rows, axis=0), cols, axis=1)
    top = float(pooled.max()) if pooled.size else 0.0
    codes = np.rint(np.clip(pooled, 0.0, None) * (254.0 / top)) if top > 0 else np.zeros_like(pooled)
    out = codes.astype(np.uint8)
    if bad.any():
        out[np.logical_or.reduceat(np.logical_or.reduceat(bad, rows, axis=0), cols, axis=1)] = NAN_CODE
    return out


def grid_payload(maps: AttentionMaps) -> tuple[dict[str, Any], bytes]:
    """What the grid shows, as JSON-ready data, and every thumbnail concatenated (layer, then head order)."""
    layers, thumbs, offset = [], [], 0
    for layer in maps.layers:
        cells = [thumbnail(layer.weights[h]) for h in range(len(layer.heads))]
        th, tw = cells[0].shape if cells else (0, 0)
        heads = [{"entropy": c[1], "max": c[2], "first": c[3], "rows": c[4], "flag": s.flag}
                 for c, s in zip(head_cells(layer), layer.heads)]
        layers.append({"name": safe(layer.name), "key": safe(layer.key), "title": safe(layer_title(layer)),
                       "q": int(layer.weights.shape[1]), "k": int(layer.weights.shape[2]),
                       "th": int(th), "tw": int(tw), "offset": offset, "heads": heads})
        data = b"".join(c.tobytes() for c in cells)
        thumbs.append(data)
        offset += len(data)
    grid = {"header": safe(f"Attention: {header(maps)}"), "legend": LEGEND, "tokens_line": safe(tokens_line(maps)),
            "tokens": None if maps.tokens is None else [safe(t) for t in maps.tokens], "layers": layers}
    return grid, b"".join(thumbs)


def map_bytes(layer: AttentionLayer, head: int) -> bytes:
    """A head's full map, ``[queries, keys]`` row-major, as float32 bytes (little-endian)."""
    return np.ascontiguousarray(layer.map(head), dtype="<f4").tobytes()


def quantised(layer: AttentionLayer, head: int) -> dict[str, Any]:
    """A head's full map in 16 bits for the static page: ``lo + code * step`` (code 65535: NaN/Inf)."""
    p = layer.map(head).astype(np.float64)
    finite = np.isfinite(p)
    lo = float(p[finite].min()) if finite.any() else 0.0
    hi = float(p[finite].max()) if finite.any() else 0.0
    step = (hi - lo) / 65534 if hi > lo else 1.0
    codes = np.where(finite, np.rint((np.where(finite, p, lo) - lo) / step), 65535).astype("<u2")
    return {"lo": lo, "step": step, "codes": base64.b64encode(codes.tobytes()).decode("ascii")}


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` (a token ``</script>`` cannot end it)."""
    return (json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


_PAGE_SCRIPT = """
(() => {
  const data = JSON.parse(document.getElementById(%(data_id)s).textContent);
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const host = document.getElementById(%(host_id)s);
  const view = createAttention(host, data.grid, bytes(data.thumbs), (li, h) => {
    const m = data.maps[li][h];
    const raw = bytes(m.codes);
    const codes = new Uint16Array(raw.buffer, 0, raw.length / 2);
    const values = new Float64Array(codes.length);
    codes.forEach((c, i) => { values[i] = c === 65535 ? NaN : m.lo + c * m.step; });
    view.showMap(li, h, values);
  });
})();
"""


def render_fragment(maps: AttentionMaps) -> str:
    """An embeddable ``<div>`` (its own style and script; every map embedded): the grid of heads; a click
    on a head shows its full map. Without scripts, the text view shows in its place (``<noscript>``)."""
    uid = f"fi-attn-{next(_ids)}"
    grid, thumbs = grid_payload(maps)
    data = {"grid": grid, "thumbs": base64.b64encode(thumbs).decode("ascii"),
            "maps": [[quantised(layer, h) for h in range(len(layer.heads))] for layer in maps.layers]}
    host, data_id = f"{uid}-host", f"{uid}-data"
    script = _PAGE_SCRIPT % {"data_id": json.dumps(data_id), "host_id": json.dumps(host)}
    return (f'<div class="fi-attn-root"><style>{palette.custom_properties(".fi-attn-root")}{CSS}</style>'
            f'<div id="{host}"></div><noscript><pre>{esc(maps.to_text())}</pre></noscript>'
            f'<script type="application/json" id="{data_id}">{_script_json(data)}</script>'
            f"<script>{JS}\n{script}</script></div>")


def render_page(maps: AttentionMaps, title: str = "Attention maps") -> str:
    """A whole HTML document around :func:`render_fragment` (no network: works from ``file://``)."""
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title></head>'
            f'<body style="margin:12px">{render_fragment(maps)}</body></html>\n')


def export(maps: AttentionMaps, path: str | Path | None = None) -> str:
    """:func:`render_page`, written to ``path`` when given (UTF-8). Returns the page."""
    page = render_page(maps)
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page

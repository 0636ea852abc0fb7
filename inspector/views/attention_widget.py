"""The Inspection widget's Attention tab: the kernel side of ``static/attention.js``.

The tab is shown only when the inspection holds attention maps (:func:`tab_label`, which reads no
array). Nothing is computed or sent until the tab is first opened; then a view asks, by messages
naming its view id (``view``), and the reply echoes it:

- ``{kind: "attention", what: "grid", view}`` -> ``{kind: "attention", what: "grid", view, grid}`` with one
  buffer, every thumbnail (:func:`~inspector.views.attention_html.grid_payload`);
- ``{kind: "attention", what: "map", view, layer, head}`` -> ``{..., what: "map", layer, head, q, k}`` with one
  buffer, that head's map as float32 (:func:`~inspector.views.attention_html.map_bytes`).

The maps shown are the last ones asked for with :meth:`Inspection.attention` (its ``tokens``, ``names``, ``batch``),
else the default search's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.attention import AttentionMaps, attention, sources
from inspector.model import Inspection
from inspector.names import safe
from inspector.views.attention_html import grid_payload, map_bytes
from inspector.views.format import plural


def tab_label(insp: Inspection | None) -> str:
    """What the Attention tab's button says (``Attention (2 layers)``), or ``''``: no tab (no maps found, or
    their arrays were not kept)."""
    if insp is None:
        return ""
    maps = insp.__dict__.get("_attention")
    if isinstance(maps, AttentionMaps):
        return f"Attention ({plural(len(maps.layers), 'layer')})"
    found, _ = sources(insp)
    found = [s for s in found if s.leaf.kept]
    return f"Attention ({plural(len(found), 'layer')})" if found else ""


def maps_of(insp: Inspection) -> AttentionMaps:
    """The maps the tab shows: the last :meth:`Inspection.attention`'s, else the default search's (kept)."""
    maps = insp.__dict__.get("_attention")
    if not isinstance(maps, AttentionMaps):
        maps = insp.__dict__["_attention"] = attention(insp)
    return maps


def answer(insp: Inspection | None, msg: dict[str, Any], send: Callable[[dict[str, Any], list[bytes]], None]) -> None:
    """Answers one request from a view (see the module docstring) through ``send(content, buffers)``."""
    if insp is None:
        return
    view, what = msg.get("view"), msg.get("what")
    try:
        maps = maps_of(insp)
    except LookupError as e:
        send({"kind": "attention", "what": "error", "view": view, "error": safe(str(e))}, [])
        return
    if what == "grid":
        grid, thumbs = grid_payload(maps)
        send({"kind": "attention", "what": "grid", "view": view, "grid": grid}, [thumbs])
    elif what == "map":
        layer_index, head = int(msg.get("layer", -1)), int(msg.get("head", -1))
        if not (0 <= layer_index < len(maps.layers) and 0 <= head < len(maps.layers[layer_index].heads)):
            return
        layer = maps.layers[layer_index]
        send({"kind": "attention", "what": "map", "view": view, "layer": layer_index, "head": head,
              "q": int(layer.weights.shape[1]), "k": int(layer.weights.shape[2])}, [map_bytes(layer, head)])

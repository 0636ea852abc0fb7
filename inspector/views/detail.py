"""What the detail pane shows for one selected row, as one self-contained HTML fragment.

A leaf: its metadata and statistics, a histogram, and a bounded preview of its array drawn by
treescope (the fragment carries treescope's ``<script>``: a view must run it, e.g. in an iframe's
``srcdoc``; ``ipywidgets.HTML`` would not). A mutation: before and after. A compared pair: both
sides. Every user-controlled string is escaped.
"""

from __future__ import annotations

from typing import Any

from inspector.model import Leaf, LeafDelta, LeafDiff
from inspector.views import format as F

PREVIEW_ELEMENTS = 65_536
"""The most elements of an array the detail pane draws (leading slices, spread over the axes)."""


def preview_index(shape: tuple[int, ...], max_elements: int = PREVIEW_ELEMENTS) -> tuple[slice, ...]:
    """Leading slices that keep at most ``max_elements``, spread evenly over the axes."""
    out: list[slice] = []
    budget = max_elements
    for i, d in enumerate(reversed(shape)):
        remaining = len(shape) - i
        cap = max(1, int(budget ** (1 / remaining)))
        n = min(d, cap)
        out.append(slice(0, n))
        budget = max(1, budget // max(n, 1))
    return tuple(reversed(out))


def detail_header(title: str, leaf: Leaf, note: str = "") -> str:
    s = leaf.full_stats()
    rows = [("shape", F.shape(leaf)), ("bytes", F.nbytes(leaf.nbytes)), ("device", leaf.device)]
    if leaf.sharding:
        rows.append(("sharding", leaf.sharding))
    if leaf.shard_shape is not None:
        rows.append(("per device", f"[{','.join(map(str, leaf.shard_shape))}] {F.nbytes(leaf.per_device_bytes)}"))
    if s is not None:
        rows += [("mean / std", f"{F.num(s.mean)} / {F.num(s.std)}"), ("min / max", f"{F.num(s.min)} / {F.num(s.max)}"),
                 ("abs max", F.num(s.abs_max)), ("zeros", f"{s.zeros:,} ({s.frac_zero:.1%})"),
                 ("non-finite", F.nonfinite(s) or "none")]
        if s.hist and any(s.hist):
            rows.append(("histogram", f"{s.hist_sample:,} of {s.count:,} elements, evenly spread"
                         if s.hist_sample else "every finite element"))
    table = "".join(f"<tr><th>{F.esc(k)}</th>"
                    f"<td>{F.esc(v)}</td></tr>" for k, v in rows)
    hist = ""
    if s is not None and s.hist and max(s.hist):
        top = max(s.hist)
        bars = "".join(f"<rect x='{i * 10}' y='{40 - 40 * h / top:.1f}' width='9' height='{40 * h / top:.1f}'/>"
                       for i, h in enumerate(s.hist))
        hist = f"<svg class='fi-hist' width='{10 * len(s.hist)}' height='40'>{bars}</svg>"
    return (f"<div class='fi-detail'><div class='fi-title'>{F.esc(title)}</div><table>{table}</table>{hist}"
            f"<div class='fi-note'>{F.esc(note)}</div></div>")



def array_html(array: Any) -> str:
    """A treescope heatmap of a (small, host) array as HTML (with treescope's script); a scalar as text."""
    import treescope

    if getattr(array, "ndim", 0) == 0:
        return f"<code>{F.esc(repr(array))}</code>"
    return treescope.render_array(array)._repr_html_()


def _one(title: str, leaf: Leaf, note: str = "") -> str:
    """The header of ``leaf`` under ``title`` (with ``note``), then its array where one was kept."""
    if leaf.opaque is not None:
        return detail_header(title, leaf, leaf.opaque)
    if not leaf.kept:
        return detail_header(title, leaf, note or "statistics only (keep='stats')")
    index = preview_index(leaf.shape)
    shown = 1
    for sl in index:
        shown *= sl.stop
    cut = f"showing [{', '.join(f':{s.stop}' for s in index)}] of {leaf.size:,}" if shown < leaf.size else ""
    return detail_header(title, leaf, "; ".join(n for n in (note, cut) if n)) + array_html(leaf.preview(index))


def leaf_detail(title: str, item: Leaf | LeafDiff) -> str:
    """The detail of a leaf, or of a mutation (after, then before), under ``title``."""
    if not isinstance(item, LeafDiff):
        return _one(title, item)
    return "".join(_one(f"{title} ({label})", leaf) for label, leaf in (("after", item.after), ("before", item.before))
                   if leaf is not None)


def pair_detail(labels: tuple[str, str], d: LeafDelta) -> str:
    """The detail of a compared pair: each side's header (with the delta line) and array."""
    return "".join(_one(f"{label}: {d.key}", leaf, F.delta(d)) for label, leaf in zip(labels, (d.a, d.b))
                   if leaf is not None and leaf.opaque is None)

"""What the detail pane shows for one selected row, as one self-contained HTML fragment.

A leaf: its metadata and statistics, a histogram, and a bounded preview of its array drawn by
treescope (the fragment carries treescope's ``<script>``: a view must run it, e.g. in an iframe's
``srcdoc``; ``ipywidgets.HTML`` would not). A mutation: before, after and Δ side by side. A compared pair:
both sides and their Δ. The Δ heatmap colours the changed elements and greys out the others; its counts
(:class:`DeltaPreview`) are over the shown part. Every user-controlled string is escaped.
"""

from __future__ import annotations

import dataclasses
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
    return detail_header(title, leaf, "; ".join(n for n in (note, cut) if n)) + _array(leaf, index)


def _array(leaf: Leaf, index: tuple[slice, ...]) -> str:
    """:func:`array_html` of ``leaf[index]``; a note where the array has no host form (PRNG keys)."""
    try:
        values = leaf.preview(index)
    except TypeError:  # typed PRNG keys: numpy cannot hold them
        return "<div class='fi-note'>no array view of PRNG keys (jax.random.key_data gives their words)</div>"
    return array_html(values)


SIDE_BY_SIDE = ("<style>.fi-sbs{display:grid;grid-template-columns:repeat(auto-fit,minmax(14em,1fr));gap:6px 14px;"
                "align-items:start}.fi-sbs>div{min-width:0;overflow-x:auto}"
                ".fi-delta-line{font-weight:600;margin:2px 0 6px}</style>")
"""The fragment's own layout: the columns (before, after, Δ) side by side, wrapping on a narrow pane."""


@dataclasses.dataclass(frozen=True)
class DeltaPreview:
    """Δ = ``b - a`` over the shown part of two arrays of one shape (``index``), in float64 on the host
    (``|b - a|`` for complex), and what changed there: ``changed`` (as :func:`~inspector.stats.host_delta`
    decides it: NaN where NaN is not a change), ``to_nan``/``from_nan``/``inf`` (changes that are not
    numbers, as :func:`~inspector.stats.host_nonfinite_delta` counts them) and ``max_abs`` over the
    changes that are numbers (0 where there is none)."""

    delta: Any
    mask: Any
    index: tuple[slice, ...]
    shown: int
    changed: int
    to_nan: int
    from_nan: int
    inf: int
    max_abs: float

    def line(self) -> str:
        """``Δ over [:4, :8]: 3 of 32 changed (1 to nan), max|Δ| 0.5``."""
        where = "Δ" + (f" over [{', '.join(f':{s.stop}' for s in self.index)}]" if self.index else "")
        nf = ", ".join(f"{n:,} {what}" for n, what in ((self.to_nan, "to nan"), (self.from_nan, "from nan"),
                                                      (self.inf, "to/from inf")) if n)
        text = f"{where}: {self.changed:,} of {self.shown:,} changed" + (f" ({nf})" if nf else "")
        return text + (f", max|Δ| {F.num(self.max_abs)}" if self.max_abs else "")


def delta_preview(a: Leaf, b: Leaf, index: tuple[slice, ...] | None = None) -> DeltaPreview | None:
    """:class:`DeltaPreview` of the shown part (``index``: :func:`preview_index` by default) of two kept
    arrays of one shape and dtype; None where there is no such pair (a PRNG key, a value not kept)."""
    import numpy as np

    if not (a.kept and b.kept) or a.shape != b.shape or a.dtype != b.dtype or a.opaque or b.opaque:
        return None
    index = preview_index(a.shape) if index is None else index
    try:
        va, vb = np.asarray(a.preview(index)), np.asarray(b.preview(index))
    except Exception:  # noqa: BLE001 - no host form (PRNG keys): no Δ to draw
        return None
    if va.dtype.kind not in "biufc" and str(va.dtype) != "bfloat16":
        return None
    if va.dtype.kind == "c":
        wa, wb = va.astype(np.complex128), vb.astype(np.complex128)
        same = ((wa.real == wb.real) | (np.isnan(wa.real) & np.isnan(wb.real))) & (
            (wa.imag == wb.imag) | (np.isnan(wa.imag) & np.isnan(wb.imag)))
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.abs(wb - wa)
        nan_a, nan_b = np.isnan(wa.real) | np.isnan(wa.imag), np.isnan(wb.real) | np.isnan(wb.imag)
        inf_a, inf_b = np.isinf(wa.real) | np.isinf(wa.imag), np.isinf(wb.real) | np.isinf(wb.imag)
    else:
        wa, wb = va.astype(np.float64), vb.astype(np.float64)
        same = (va == vb) if va.dtype.kind in "biu" else (wa == wb) | (np.isnan(wa) & np.isnan(wb))
        with np.errstate(invalid="ignore", over="ignore"):
            delta = wb - wa
        nan_a, nan_b, inf_a, inf_b = np.isnan(wa), np.isnan(wb), np.isinf(wa), np.isinf(wb)
    changed = ~same
    to_nan, from_nan = changed & nan_b & ~nan_a, changed & nan_a & ~nan_b
    inf = changed & ~nan_a & ~nan_b & (inf_a | inf_b)
    numbers = changed & ~nan_a & ~nan_b
    mags = np.abs(delta[numbers])
    max_abs = float(mags.max()) if mags.size else 0.0
    shown = 1
    for sl in index:
        shown *= sl.stop
    cut = index if shown < a.size else ()
    return DeltaPreview(np.asarray(delta), np.asarray(changed), cut, int(va.size), int(changed.sum()),
                        int(to_nan.sum()), int(from_nan.sum()), int(inf.sum()), max_abs)


def delta_html(p: DeltaPreview) -> str:
    """The Δ heatmap: changed elements coloured (diverging around 0; NaN as X, Inf as I), unchanged ones
    masked out (grey dots), under :meth:`DeltaPreview.line`."""
    import treescope

    line = f"<div class='fi-note'>{F.esc(p.line())}</div>"
    if not p.changed:
        return line
    if getattr(p.delta, "ndim", 0) == 0:
        return line + f"<code>{F.esc(repr(p.delta))}</code>"
    figure = treescope.render_array(p.delta, valid_mask=p.mask, around_zero=True, trim_outliers=False)
    return line + figure._repr_html_()


def _column(title: str, leaf: Leaf, index: tuple[slice, ...]) -> str:
    """One side of a pair: its header and its array (the same ``index`` as the other side)."""
    if leaf.opaque is not None or not leaf.kept:
        return _one(title, leaf)
    return detail_header(title, leaf) + _array(leaf, index)


def _side_by_side(head: str, sides: list[tuple[str, Leaf | None]], fact: str) -> str:
    """``head`` and ``fact`` over one column per side and, where both sides are kept arrays of one shape,
    a Δ column (second minus first) with the changed elements highlighted."""
    present = [(t, leaf) for t, leaf in sides if leaf is not None]
    if len(present) < 2:
        return "".join(_one(f"{head} ({t})", leaf, fact) for t, leaf in present)
    (ta, a), (tb, b) = present
    same = a.shape == b.shape
    cols = [_column(ta, a, preview_index(a.shape)), _column(tb, b, preview_index(b.shape))]
    p = delta_preview(a, b, preview_index(a.shape)) if same else None
    if p is not None:
        cols.append(f"<div class='fi-detail'><div class='fi-title'>Δ = {F.esc(tb)} − {F.esc(ta)}</div></div>"
                    + delta_html(p))
    title = f"<div class='fi-detail'><div class='fi-title'>{F.esc(head)}</div>" \
            f"<div class='fi-delta-line'>{F.esc(fact)}</div></div>"
    return SIDE_BY_SIDE + title + "<div class='fi-sbs'>" + "".join(f"<div>{c}</div>" for c in cols) + "</div>"


def leaf_detail(title: str, item: Leaf | LeafDiff) -> str:
    """The detail of a leaf, or of a mutation: before, after and Δ = after − before side by side, the
    changed elements highlighted in the Δ heatmap, under the mutation's line (its changed count first)."""
    if not isinstance(item, LeafDiff):
        return _one(title, item)
    return _side_by_side(title, [("before", item.before), ("after", item.after)], F.delta(item))


def pair_detail(labels: tuple[str, str], d: LeafDelta) -> str:
    """The detail of a compared pair: both sides' headers and arrays side by side, then the Δ heatmap
    (``b − a``), under the pair's delta line."""
    sides: list[tuple[str, Leaf | None]] = [(label, leaf if leaf is None or leaf.opaque is None else None)
                                            for label, leaf in zip(labels, (d.a, d.b))]
    return _side_by_side(f"{labels[0]} vs {labels[1]}: {d.key}", sides, F.delta(d))

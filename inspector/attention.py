"""Attention maps of an inspection: where they are, and what each head does.

:func:`attention` finds attention weights among an inspection's captured values (what
``nn.MultiHeadDotProductAttention(..., sow_weights=True)`` sows as ``attention_weights``, shaped
``[batch, heads, queries, keys]``, or arrays the caller names, with the caller's axes), reads one
batch element of each to the host and summarises every head on the stored values in float64:
entropy (nats, mean over queries), max weight, mean attention to the first key, and whether each
row sums to 1. The result (:class:`AttentionMaps`) is plain data (numpy, no jax, no widgets); the
views render it (``views/attention_text.py``, ``views/attention_html.py``, the widget's Attention tab).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inspector.model import Inspection, Leaf, MethodCall, format_path

SOWN_NAME = "attention_weights"
"""What flax's ``MultiHeadDotProductAttention`` sows into ``'intermediates'`` with ``sow_weights=True``
(``flax/linen/attention.py``: ``module.sow('intermediates', 'attention_weights', attn_weights)``)."""
SOWN_AXES = "bhqk"
"""The axes of a sown map: batch, heads, queries, keys."""
AXIS_LETTERS = {"b": "batch", "h": "head", "q": "query", "k": "key"}

Selector = Sequence[str] | Callable[[MethodCall, Leaf], bool]
"""Which captured arrays are attention maps: keys or globs (``'Block_0/attn:weights'``, ``'Block_*/attn/weights'``,
a call's key or its output's path), or a predicate ``(call, leaf) -> bool``."""


class AttentionNotFoundError(LookupError):
    """No attention map in the inspection (the message names what was searched)."""


class AttentionNotKeptError(LookupError):
    """Attention maps were found, but the inspection kept only their statistics (``keep='stats'``)."""


def row_sum_tolerance(dtype: str) -> float:
    """How far a row's sum may be from 1 before it is flagged: rounding each stored weight to ``dtype``
    moves the sum by up to half an ulp per weight, relative (bf16 ``2**-9``, f16 ``2**-12``), so
    4 ulps of the stored type, and at least 1e-3."""
    eps = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}.get(dtype, 2.0 ** -23)
    return max(1e-3, 4 * eps)


@dataclasses.dataclass
class HeadSummary:
    """One head's map ``[queries, keys]`` summarised in float64 on the stored values.

    Attributes:
        entropy: ``-sum_k p log p`` (``0 log 0 = 0``) of each query's row, in nats, averaged over queries.
        max_weight: the largest weight.
        first_token: the weight on the first key, averaged over queries.
        row_sum_error: the largest ``|sum of a row - 1|``.
        nonfinite: NaN and Inf weights (the summaries are then NaN).
        rows_ok: every row sums to 1 within :func:`row_sum_tolerance` and nothing is NaN or Inf.
    """

    entropy: float
    max_weight: float
    first_token: float
    row_sum_error: float
    nonfinite: int
    rows_ok: bool

    @property
    def flag(self) -> str:
        """``''`` for a well-formed map, else what is wrong: ``NaN/Inf`` or ``rows sum off by 0.5``."""
        if self.nonfinite:
            return f"{self.nonfinite:,} NaN/Inf"
        if not self.rows_ok:
            return f"rows sum off by {self.row_sum_error:.3g}"
        return ""


def summarise(weights: np.ndarray, dtype: str = "float32") -> HeadSummary:
    """The summary of one head's map ``[queries, keys]`` (any float dtype), computed in float64."""
    p = np.asarray(weights, dtype=np.float64)
    nonfinite = int(p.size - np.count_nonzero(np.isfinite(p)))
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), np.where(np.isnan(p), np.nan, 0.0))
    entropy = float(np.mean(-plogp.sum(axis=-1))) if p.shape[0] else math.nan
    row_error = float(np.max(np.abs(p.sum(axis=-1) - 1.0))) if p.size else 0.0
    max_weight = float(np.max(p)) if p.size else math.nan
    first = float(np.mean(p[:, 0])) if p.size else math.nan
    ok = nonfinite == 0 and row_error <= row_sum_tolerance(dtype)
    return HeadSummary(entropy, max_weight, first, row_error, nonfinite, ok)


@dataclasses.dataclass
class AttentionLayer:
    """One attention map's source (a layer): its heads' maps for the chosen batch element.

    Attributes:
        name: the layer, by module path (``Block_0/attn``), with the call's index when it ran more than once.
        key: the captured value's key (``Block_0/attn:attention_weights[0]``).
        order: the call's place in execution order.
        dtype: the stored dtype.
        shape: the stored shape (all axes).
        weights: ``[heads, queries, keys]`` for the chosen batch element, as stored (numpy, stored dtype).
        heads: one :class:`HeadSummary` per head.
    """

    name: str
    key: str
    order: int
    dtype: str
    shape: tuple[int, ...]
    weights: np.ndarray = dataclasses.field(repr=False)
    heads: list[HeadSummary]

    def map(self, head: int) -> np.ndarray:
        """Head ``head``'s map, ``[queries, keys]``, as float32 (float64 for a float64 map)."""
        m = self.weights[head]
        return np.asarray(m, dtype=np.float64 if m.dtype == np.float64 else np.float32)


@dataclasses.dataclass
class AttentionMaps:
    """The attention maps of one inspection: layers in execution order, each with its heads.

    Attributes:
        layers: the maps found, in execution order.
        batch: the batch element shown (``None`` when the maps have no batch axis).
        batch_size: how many batch elements the maps have (1 without a batch axis).
        tokens: labels of the positions (queries and keys), or None.
        searched: what was searched for (said in errors and headers).
    """

    layers: list[AttentionLayer]
    batch: int | None = 0
    batch_size: int = 1
    tokens: list[str] | None = None
    searched: str = ""

    @property
    def queries(self) -> int:
        return self.layers[0].weights.shape[1] if self.layers else 0

    @property
    def keys(self) -> int:
        return self.layers[0].weights.shape[2] if self.layers else 0

    def layer(self, name: str) -> AttentionLayer:
        """A layer by :attr:`AttentionLayer.name` or :attr:`AttentionLayer.key`."""
        for layer in self.layers:
            if name in (layer.name, layer.key):
                return layer
        raise KeyError(f"no attention layer {name!r}; layers: {', '.join(layer.name for layer in self.layers)}")

    def token(self, i: int) -> str:
        """Position ``i``'s label: its token when given, else its index."""
        return self.tokens[i] if self.tokens is not None and i < len(self.tokens) else str(i)

    def flagged(self) -> list[tuple[str, int, str]]:
        """``(layer name, head, flag)`` for every head whose map has NaN/Inf or rows not summing to 1."""
        return [(layer.name, h, s.flag) for layer in self.layers for h, s in enumerate(layer.heads) if s.flag]

    def to_text(self) -> str:
        """Per layer, a table of its heads' summaries (the golden oracle of the other views)."""
        from inspector.views.attention_text import render_text

        return render_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        from inspector.views.attention_text import header

        return f"<AttentionMaps {header(self)}>"

    def to_html(self, path: Any = None) -> str:
        """A self-contained page (no network; works from ``file://``): a grid of heads per layer, a click
        opens a head's full map; written to ``path`` when given."""
        from inspector.views.attention_html import export

        return export(self, path)

    def __rich__(self) -> Any:
        from inspector.views.attention_text import render_rich

        return render_rich(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from inspector.views.attention_html import render_fragment

        return {"text/plain": repr(self), "text/html": render_fragment(self)}


@dataclasses.dataclass(frozen=True)
class Source:
    """A captured array holding attention maps, and its axes (letters of ``bhqk``)."""

    call: MethodCall
    leaf: Leaf
    axes: str


def _normalise_axes(axes: str | Sequence[str], ndim: int, key: str) -> str:
    letters = "".join(a[0].lower() for a in axes) if not isinstance(axes, str) else axes.lower()
    if (len(letters) != ndim or len(set(letters)) != len(letters) or not set(letters) <= set(AXIS_LETTERS)
            or not {"q", "k"} <= set(letters)):
        raise ValueError(f"axes {axes!r} for {key!r} (shape of {ndim} axes): give one letter per axis, each once, "
                         "from b (batch), h (head), q (query), k (key); q and k are required")
    return letters


def _matches(pattern: str, call: MethodCall, leaf: Leaf) -> bool:
    """``pattern`` (a glob) matches the call's key (with or without ``[index]``), its output's path (written
    with ``/``, with or without the ``[index]`` flax adds to a sown name) or ``path/method``."""
    raw = "/".join(leaf.path)
    names = {call.key, re.sub(r"\[\d+\]$", "", call.key), raw, re.sub(r"\[\d+\]$", "", raw), format_path(leaf.path),
             "/".join((*call.path, call.method))}
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def sources(insp: Inspection, names: Selector | None = None,
            axes: str | Sequence[str] | None = None) -> tuple[list[Source], str]:
    """The captured arrays that hold attention maps, in execution order, and a description of what was
    searched. Reads no array (cheap: the widget calls it to decide whether to show its Attention tab)."""
    found: list[Source] = []
    if names is None:
        searched = (f"sown '{SOWN_NAME}' of shape [batch, heads, queries, keys] (nn.MultiHeadDotProductAttention "
                    "called with sow_weights=True)")
        for call in insp.calls:
            if call.sown and call.method == SOWN_NAME:
                for leaf in call.outputs:
                    if leaf.opaque is None and len(leaf.shape) == len(axes or SOWN_AXES):
                        found.append(Source(call, leaf, _normalise_axes(axes or SOWN_AXES, len(leaf.shape), call.key)))
        return found, searched
    if callable(names):
        searched = "captured arrays matching the given predicate"
        match: Callable[[MethodCall, Leaf], bool] = names
    else:
        patterns = [names] if isinstance(names, str) else list(names)
        searched = f"captured arrays named {', '.join(repr(p) for p in patterns)}"
        match = lambda call, leaf: any(_matches(p, call, leaf) for p in patterns)  # noqa: E731
    for call in insp.calls:
        for leaf in call.outputs:
            if leaf.opaque is None and match(call, leaf):
                default = SOWN_AXES if len(leaf.shape) == 4 else "hqk" if len(leaf.shape) == 3 else "qk"
                found.append(Source(call, leaf, _normalise_axes(axes or default, len(leaf.shape), call.key)))
    return found, searched


def _layer_name(call: MethodCall, leaf: Leaf, calls_here: int) -> str:
    name = format_path(call.path) or "/"
    sub = call.output_path(leaf)
    if sub:
        name += f"/{format_path(sub)}"
    return name + (f"[{call.index}]" if calls_here > 1 else "")


def attention(insp: Inspection, names: Selector | None = None, *, batch: int = 0, tokens: Sequence[str] | None = None,
              axes: str | Sequence[str] | None = None) -> AttentionMaps:
    """The attention maps in ``insp`` (see the module docstring).

    Args:
        insp: an inspection made with ``keep='arrays'`` (the default), or with a capture filter that kept the maps.
        names: which captured arrays are maps (see :data:`Selector`); by default what flax's
            ``MultiHeadDotProductAttention`` sows with ``sow_weights=True``.
        batch: the batch element shown.
        tokens: labels of the positions (as many as queries; keys too when their count is the same).
        axes: the stored axes, one letter each of ``b`` (batch), ``h`` (head), ``q`` (query), ``k`` (key)
            (``'bhqk'``, or a sequence of names such as ``('batch', 'query', 'key', 'head')``); by default
            ``bhqk`` for 4 axes, ``hqk`` for 3, ``qk`` for 2.

    Returns:
        An :class:`AttentionMaps`, layers in execution order.

    Raises:
        AttentionNotFoundError: nothing matched (the message names what was searched).
        AttentionNotKeptError: the maps' arrays were not kept (``keep='stats'``).
        IndexError: ``batch`` is outside the maps' batch axis.
    """
    found, searched = sources(insp, names, axes)
    if not found:
        sown = [c.key for c in insp.calls if c.sown][:8]
        hint = f"; sown values captured: {', '.join(sown)}" if sown else "; no sown values were captured"
        raise AttentionNotFoundError(
            f"no attention maps found: searched {searched} among {len(insp.calls)} captured calls{hint}. "
            "Call the attention module with sow_weights=True, or name the arrays: insp.attention(names=[...], "
            "axes='bhqk')")
    missing = [s.call.key for s in found if not s.leaf.kept]
    if missing:
        raise AttentionNotKeptError(
            f"found {len(found)} attention maps ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), "
            "but this inspection kept only their statistics (keep='stats'): inspect again with keep='arrays' "
            "(or a capture filter that keeps those arrays) to read the maps")
    per_call: dict[tuple[Any, str], int] = {}
    for s in found:
        per_call[(s.call.path, s.call.method)] = per_call.get((s.call.path, s.call.method), 0) + 1
    layers = []
    batch_size = 1
    has_batch = any("b" in s.axes for s in found)
    for s in found:
        size = s.leaf.shape[s.axes.index("b")] if "b" in s.axes else 1
        batch_size = max(batch_size, size)
        if "b" in s.axes and not -size <= batch < size:
            raise IndexError(f"batch={batch} is outside {s.call.key}'s batch axis of {size}")
        index = tuple(batch if a == "b" else slice(None) for a in s.axes)
        stored = np.asarray(s.leaf.preview(index))  # sliced on the device: one batch element crosses
        kept_axes = s.axes.replace("b", "")
        if "h" not in kept_axes:
            stored, kept_axes = stored[None], "h" + kept_axes
        weights = np.transpose(stored, [kept_axes.index(a) for a in "hqk"])
        name = _layer_name(s.call, s.leaf, per_call[(s.call.path, s.call.method)])
        layers.append(AttentionLayer(name, s.call.key, s.call.order, s.leaf.dtype, tuple(s.leaf.shape), weights,
                                     [summarise(w, s.leaf.dtype) for w in weights]))
    token_list = None if tokens is None else [str(t) for t in tokens]
    if token_list is not None and layers and len(token_list) < max(layers[0].weights.shape[1:]):
        raise ValueError(f"{len(token_list)} tokens for maps of {layers[0].weights.shape[1]} queries x "
                         f"{layers[0].weights.shape[2]} keys")
    return AttentionMaps(layers, batch if has_batch else None, batch_size, token_list, searched)

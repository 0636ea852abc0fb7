"""Attention maps as plain text (the golden oracle of the attention views) and as rich tables."""

from __future__ import annotations

from typing import Any

from inspector.attention import AttentionLayer, AttentionMaps
from inspector.names import safe
from inspector.views.format import num, plural

COLUMNS = ("head", "entropy", "max", "first", "rows")
"""The table's columns: head index, entropy (nats, mean over queries), max weight, mean weight on the
first key, and the rows check (``ok`` or what is wrong)."""
LEGEND = ("entropy: nats, mean over queries; max: largest weight; first: mean weight on the first key; "
          "rows: each row sums to 1")


def header(maps: AttentionMaps) -> str:
    """``2 layers x 4 heads, 5 queries x 5 keys, batch 0 of 2``."""
    heads = sorted({len(layer.heads) for layer in maps.layers})
    head_text = plural(heads[0], "head") if len(heads) == 1 else f"{'/'.join(map(str, heads))} heads"
    batch = f", batch {maps.batch} of {maps.batch_size}" if maps.batch is not None else ""
    return f"{plural(len(maps.layers), 'layer')} x {head_text}, {maps.queries} queries x {maps.keys} keys{batch}"


def layer_title(layer: AttentionLayer) -> str:
    """``Block_0/attn (Block_0/attn:attention_weights[0], float32[2,4,5,5])``."""
    return f"{layer.name} ({layer.key}, {layer.dtype}[{','.join(map(str, layer.shape))}])"


def head_cells(layer: AttentionLayer) -> list[tuple[str, ...]]:
    """One row of cells per head, as in :data:`COLUMNS`."""
    return [(str(h), num(s.entropy), num(s.max_weight), num(s.first_token), f"!! {s.flag}" if s.flag else "ok")
            for h, s in enumerate(layer.heads)]


def tokens_line(maps: AttentionMaps) -> str:
    """``tokens: <bos> the cat ...`` (positions by index), or ``''`` without tokens."""
    if maps.tokens is None:
        return ""
    return "tokens: " + " ".join(f"{i}={t}" for i, t in enumerate(maps.tokens))


def render_text(maps: AttentionMaps) -> str:
    """Every layer's table of heads, under a header line and the legend."""
    lines = [f"Attention: {header(maps)}", LEGEND]
    if maps.tokens is not None:
        lines.append(tokens_line(maps))
    for layer in maps.layers:
        lines.append(layer_title(layer))
        cells = [COLUMNS, *head_cells(layer)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(map(safe, lines))


def render_rich(maps: AttentionMaps) -> Any:
    """A rich group: the header, then one table per layer (flagged heads in red)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(safe(f"Attention: {header(maps)}"), style="bold cyan"), Text(LEGEND, style="dim")]
    if maps.tokens is not None:
        parts.append(Text(safe(tokens_line(maps))))
    for layer in maps.layers:
        table = Table(title=safe(layer_title(layer)), title_justify="left", show_edge=False, pad_edge=False)
        for c in COLUMNS:
            table.add_column(c, justify="left" if c in ("head", "rows") else "right")
        for cells, s in zip(head_cells(layer), layer.heads):
            table.add_row(*map(safe, cells), style="red" if s.flag else None)
        parts.append(table)
    return Group(*parts)

"""A site's histograms over steps as plain text: the oracle the charts are checked against."""

from __future__ import annotations

import numpy as np

from inspector.history import HIST_LOW, HIST_SIDE, StepHistograms
from inspector.names import safe

BARS = " ▁▂▃▄▅▆▇█"


def bin_label(b: int) -> str:
    """The values bin ``b`` holds: ``0``, or a sign and a range of magnitudes (``[2^-2, 2^0)``)."""
    if b == HIST_SIDE:
        return "0"
    k = b - HIST_SIDE - 1 if b > HIST_SIDE else HIST_SIDE - 1 - b
    lo, hi = 2 * k - HIST_LOW, 2 * k + 2 - HIST_LOW
    mag = ("(0, " if k == 0 else f"[2^{lo}, ") + ("inf)" if k == HIST_SIDE - 1 else f"2^{hi})")
    return ("-" if b < HIST_SIDE else "+") + mag


def histogram_table(h: StepHistograms) -> str:
    """One line per row: its step (``a-b`` where merged), how many values it counts, and a bar per
    bin (the row's largest bin full height) over the bins occupied in any row; a header names them."""
    head = f"histograms of {safe(str(h.site))}: {len(h.first)} row{'' if len(h.first) == 1 else 's'}"
    occupied = np.flatnonzero(h.counts.sum(axis=0)) if len(h.first) else np.zeros(0, np.int64)
    if not len(occupied):
        return head + ", no finite value"
    lo, hi = int(occupied[0]), int(occupied[-1])
    lines = [head + f", bins {bin_label(lo)} to {bin_label(hi)} (zero at column {HIST_SIDE - lo + 1})"
             if lo <= HIST_SIDE <= hi else head + f", bins {bin_label(lo)} to {bin_label(hi)}"]
    width = max(len(f"{a}-{b}") if a != b else len(str(a)) for a, b in zip(h.first, h.last))
    for a, b, c in zip(h.first, h.last, h.counts):
        step = f"{a}-{b}" if a != b else str(a)
        top = c.max()
        bars = "".join(BARS[0 if v == 0 else max(1, int(np.ceil(v / top * (len(BARS) - 1))))] for v in c[lo:hi + 1])
        lines.append(f"{step:>{width}}  {int(c.sum()):>12,}  |{bars}|")
    return "\n".join(lines)

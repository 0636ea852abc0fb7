"""fi.watch's host side at scale: a History's memory and the cost of adding to it and reading it.

Filled the way fi.watch fills it (one record per site per step, 8 elements each, a NaN at two
steps) for 5,000 and 10,000 steps of 43 sites (the bench transformer) and 10,000 steps of 500
sites; then each view timed once, warm (pandas imported first). Memory by ``tracemalloc`` (numpy
reports its buffers to it), against the same records kept the old way (a dict of frozen
dataclasses per site). The live widget's redraw is timed on the longest history.

Targets (issue 23): <= 8 MB for 5,000 steps x 43 sites and flat beyond the budget; on 10,000
steps x 500 sites, ``first_nonfinite``, ``to_text``, ``to_pandas``, ``to_html`` each <= 1 s;
``to_html`` <= 1 MB for 220 steps x 27 sites; a widget redraw <= 200 ms.
Run: ``python bench/bench_history.py [--quick]`` (quick: 43 sites only). No assertions.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import common  # noqa: F401  (sets sys.path)
from common import fmt_bytes, log, machine, print_table

from inspector.history import History, Scalars, Site


def sites(n: int) -> list[Site]:
    return [Site("activation" if j < n // 2 else "grad", f"block_{j}/Dense_0:__call__[0]") for j in range(n)]


def fill(h, steps: int, where: list[Site], bad=(1_234, 4_321)) -> float:
    """Records every site at every step; returns the seconds per record."""
    t = time.perf_counter()
    for step in range(steps):
        for j, site in enumerate(where):
            nan = int(step in bad and j == 3)
            h.add(step, site, Scalars(0.01 * step, 1.0, 2.5, 0.25, nan, 0, 3.0, 0.001 if j % 2 else None, 8))
    return (time.perf_counter() - t) / (steps * len(where))


class OldHistory:
    """The records kept as before issue 23 (a dict of frozen dataclasses per site), for memory."""

    def __init__(self) -> None:
        self.series: dict = {}

    def add(self, step: int, site: Site, scalars: Scalars) -> None:
        self.series.setdefault(site, {})[step] = scalars


def memory(make, steps: int, n: int) -> int:
    where = sites(n)
    gc.collect()
    tracemalloc.start()
    h = make()
    fill(h, steps, where)
    if isinstance(h, History):
        h.snapshot()  # written through
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del h
    return size


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="43 sites only")
    args = ap.parse_args()
    log(machine())
    import pandas  # noqa: F401  (imported before timing to_pandas)

    rows = []
    for steps, n in ((5_000, 43), (10_000, 43), (20_000, 43)):
        log(f"memory {steps} x {n}")
        new, old = memory(History, steps, n), memory(OldHistory, steps, n)
        rows.append((f"{steps:,} steps x {n} sites", fmt_bytes(new), fmt_bytes(old), f"{old / new:.1f}x"))
    print(machine())
    print_table(("history", "memory (History)", "memory (dict of dataclasses)", "ratio"), rows)

    rows = []
    shapes = ((10_000, 43),) if args.quick else ((10_000, 43), (10_000, 500))
    built = []
    for steps, n in shapes:
        log(f"views {steps} x {n}")
        h = History()
        per_add = fill(h, steps, sites(n))
        snap = h.snapshot()
        row = [f"{steps:,} x {n}", f"{per_add * 1e6:.1f}", f"{h.stored:,}", f"{len(snap.steps):,}"]
        for view in ("first_nonfinite", "to_text", "to_pandas", "to_html"):
            s, out = timed(getattr(h, view))
            row.append(f"{s * 1e3:.0f}")
        row.append(fmt_bytes(len(out)))
        rows.append(tuple(row))
        built.append(h)
    print_table(("steps x sites", "add us/record", "stored records", "stored rows", "first_nonfinite ms",
                 "to_text ms", "to_pandas ms", "to_html ms", "html size"), rows)

    h = History()
    fill(h, 220, sites(27), bad=(150,))
    page = h.to_html()
    print(f"\nto_html of 220 steps x 27 sites: {fmt_bytes(len(page))}")
    try:
        from inspector.views.history_widget import WatchWidget
    except ImportError:
        return
    for h in built:
        w = WatchWidget(h, interval=3600)
        try:
            times = [timed(w.refresh)[0] for _ in range(5)]
            print(f"live widget redraw on {len(h.sites())} sites, {h.steps()[-1] + 1:,} steps: "
                  f"median {sorted(times)[2] * 1e3:.0f} ms of 5")
        finally:
            w.close()


if __name__ == "__main__":
    main()

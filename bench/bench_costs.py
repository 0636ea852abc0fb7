"""``insp.costs()`` vs ``Module.tabulate(compute_flops=True)`` on the 8-layer bench transformer.

Both answer "how many FLOPs does each module take". flax's ``tabulate`` compiles every module call on its own
to ask XLA for its cost; ``insp.costs()`` traces the call once, counts its jaxpr equation by equation
(:mod:`inspector.costs`) and compiles the whole program once for its memory. Each round times one
``insp.costs()`` on an inspection made beforehand (its cache dropped first, so every round computes anew;
``memory=False`` is timed too: no compile), one ``model.tabulate(..., compute_flops=True)`` and one with
``compute_vjp_flops=True`` as well (the backward pass's FLOPs too), in a shuffled order; the first round is
the first call of each in the process. Also printed: the total FLOPs each reports and XLA's
``cost_analysis()`` of the whole unoptimized program. Target: ``insp.costs()`` <= 2 s.
Run: ``python bench/bench_costs.py [--rounds N]``. No assertions.
"""

from __future__ import annotations

import argparse
import re
import time

import common  # noqa: F401  (sets sys.path)
from common import interleave, log, machine, med, paired, print_table, revision


def tabulate_flops(table: str) -> dict[str, int]:
    """``{path: flops}`` from the rows of ``Module.tabulate``'s table (the root's path is ``''``)."""
    flops: dict[str, int] = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", table).splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 6 and cells[2] and cells[5].isdigit():
            flops.setdefault(cells[1], int(cells[5]))
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (tabulate takes ~18 s each)")
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    import jax

    import inspector as fi
    from models import bench_config

    model, variables, tokens = bench_config(layers=args.layers)
    t0 = time.perf_counter()
    insp = fi.inspect(model, variables, tokens)
    log(f"fi.inspect (first call, not timed below): {time.perf_counter() - t0:.1f} s")

    def costs(memory: bool = True):
        insp.__dict__.pop("_inspector_costs_value", None)  # the cache: each round computes anew
        return insp.costs(memory=memory)

    def tabulate(vjp: bool = False):
        return model.tabulate(jax.random.key(0), tokens, compute_flops=True, compute_vjp_flops=vjp,
                              console_kwargs={"width": 400})

    variants = {"insp.costs()": costs, "insp.costs(memory=False)": lambda: costs(False), "tabulate": tabulate,
                "tabulate(compute_vjp_flops=True)": lambda: tabulate(True)}
    times = interleave(variants, rounds=args.rounds, warmup=0, log=log)

    c = costs()
    tab = tabulate_flops(tabulate())

    print(f"\nbench_costs: {args.layers}-layer transformer (d=256, 8 heads, batch 8 x 128), {args.rounds} rounds; "
          f"{machine()}; {revision()}\n")
    rows = []
    base = times["tabulate"]
    for name in variants:
        r, lo, hi = paired(times[name], base)
        rows.append((name, f"{med(times[name]) / 1000:.2f} s", f"{r:.3f}x [{lo:.3f}-{hi:.3f}]",
                     ", ".join(f"{t / 1000:.2f}" for t in times[name])))
    print_table(("variant", "median", "ratio to tabulate(compute_flops=True), per round med [range]",
                 "each round (s)"), rows)
    print()
    print(f"total FLOPs: insp.costs() {c.flops:,.0f}; XLA cost_analysis (unoptimized) {c.xla.get('flops', 0):,.0f}; "
          f"tabulate's root row {tab.get('', 0):,}")
    print("per module, insp.costs() / tabulate (tabulate compiles each call alone: optimized HLO, its own inputs):")
    for path in ("embed", "blocks_0", "blocks_0/attn", "blocks_0/mlp", "ln_f", "head"):
        if path in tab:
            ours = c.module(path).flops
            print(f"  {path:14s} {ours:>16,.0f} {tab[path]:>16,} {ours / tab[path] if tab[path] else float('nan'):.3f}")
    if c.memory is not None:
        m = c.memory
        print(f"compiled memory: peak {m.peak_bytes:,} B (arguments {m.argument_bytes:,}, outputs {m.output_bytes:,}, "
              f"temp {m.temp_bytes:,}, alias {m.alias_bytes:,})")
    print()
    print(c.to_text(max_depth=2))


if __name__ == "__main__":
    main()

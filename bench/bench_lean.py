"""Why a lean ``keep='stats'`` program cannot decide before the call that it needs no arrays.

A lean program (``plan_inspection(lean=True)``) returns only the in-call summaries of the captured
arrays, not the arrays: XLA reuses their buffers (or, on a GPU, never writes them: the reductions
fuse into the producers). A summary that can't be trusted (NaN/Inf, overflow, an ill-conditioned
variance) is redone exactly from the array, so the pipeline runs such a call once more with a program
that returns them (and keeps that program). Doing the exact redo inside the lean program instead,
so that nothing is decided after the call, means compiling the exact statistics into it:

- per array: ``lax.cond(trusted, keep the summary, exact row of this array)``, where the array is
  produced (its buffer still dies there);
- once: ``lax.cond(all trusted, nothing, exact rows of every array)`` at the end (every array stays
  alive to the end: what the lean program exists to avoid).

This prints the compile time of the summarizing program alone and of each alternative, on the
captured arrays of a model from ``bench_first.py`` (``--model mlp|t6|t8``). No assertions.

    .venv/bin/python bench/bench_lean.py [--model t6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets sys.path)
from common import log, machine, med, print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="t6", choices=["mlp", "t6", "t8"])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    from bench_first import MODELS, build
    from jax import lax

    import inspector as fi
    from inspector.stats import device, exact
    from inspector.stats.rows import layout, row_width

    module, fn, variables, x = build(args.model)
    insp = fi.inspect_apply(fn, module, capture_intermediates=True)(variables, x)
    shapes = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for call in insp.calls for leaf in call.outputs]
    width = row_width([s.dtype for s in shapes])

    def summaries(arrays):
        return device.summarize(arrays)

    def exact_per_array(arrays):
        rows = device.summarize(arrays)
        redone = [lax.cond(rows[i, 0] != 0,
                           lambda a: jnp.zeros((layout(a.dtype).width,), jnp.uint32), exact._exact, a)
                  for i, a in enumerate(arrays)]
        return rows, redone

    def exact_once(arrays):
        rows = device.summarize(arrays)
        redone = lax.cond(jnp.all(rows[:, 0] != 0), lambda a: jnp.zeros((len(a), width), jnp.uint32),
                          device.describe_many, arrays)
        return rows, redone

    variants = {"summaries alone (the lean program's statistics)": summaries,
                "+ exact redo per array (lax.cond each)": exact_per_array,
                "+ exact redo of all arrays (one lax.cond)": exact_once}
    times: dict[str, list[float]] = {k: [] for k in variants}
    jax.jit(lambda a: a[0] + 1).lower(shapes).compile()  # jax warmed up
    for r in range(args.rounds):
        for name, f in variants.items():
            t0 = time.perf_counter()
            jax.jit(lambda a, f=f: f(a)).lower(shapes).compile()  # a new function: nothing cached
            times[name].append((time.perf_counter() - t0) * 1000)
            log(f"round {r + 1}/{args.rounds}: {name}: {times[name][-1]:.0f} ms")
    print(f"\n{machine()}; {MODELS[args.model]}: {len(shapes)} captured arrays")
    base = med(times["summaries alone (the lean program's statistics)"])
    print_table(("statistics compiled into the program", "compile ms (median)", "vs summaries alone"),
                [(k, f"{med(v):.0f}", f"{med(v) / base:.1f}x") for k, v in times.items()])


if __name__ == "__main__":
    main()

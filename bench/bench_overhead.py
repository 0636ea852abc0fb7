"""Where the steady-state cost of ``inspect_apply`` goes, as ratios to plain jit (one process).

Same model as bench_core.py (8-layer d=256 Transformer, batch 8 x 128), interleaved rounds:

  plain            jax.jit(model.apply)
  capture only     fi.apply(..., capture_intermediates=C.calls): the 92 intermediates returned, no stats
  stats, nothing   inspect_apply(capture=C.nothing, keep='stats'): stats of the output (variables remembered)
  stats, calls     inspect_apply(keep='stats'): + stats of every __call__ output, arrays not returned
  ... returned     the same, with the arrays returned to the device for exact redos (session 12's program)
  ... untied       the same, with every summary traced after the call (not tied where it is captured)
  arrays, calls    inspect_apply(keep='arrays'), the default: + the arrays returned (left on device)
  new variables    the default, but with fresh variable arrays every call (their stats recomputed)

Run: ``python bench/bench_overhead.py [--quick] [--rounds N] [--hot]``. No assertions: it prints numbers.
"""

from __future__ import annotations


import common  # noqa: F401  (sets sys.path)
from common import rounds_args, interleave, log, machine, med, paired, print_table


def main() -> None:
    args = rounds_args(__doc__, 10, 2, "2-layer model, 2 rounds: a smoke run")
    rounds = args.rounds

    import jax

    import inspector as fi
    from inspector import capture as C
    from models import bench_config, forward

    layers = 2 if args.quick else 8
    model, variables, tokens = bench_config(layers=layers)
    print(f"machine: {machine()}")
    print(f"model:   Transformer {layers} layers, d=256, tokens {tuple(tokens.shape)}; {rounds} rounds\n")

    plain = jax.jit(model.apply)
    capture_only = fi.apply(forward, model, capture_intermediates=C.calls)
    nothing = fi.inspect_apply(forward, model, capture_intermediates=C.nothing, keep="stats")
    stats = fi.inspect_apply(forward, model, keep="stats")
    arrays = fi.inspect_apply(forward, model)
    returned = fi.inspect_apply(forward, model, keep="stats")
    returned.runner = returned._make_runner(True, False)  # not lean: the arrays come back to the device
    untied = fi.inspect_apply(forward, model, keep="stats")
    untied.runner.hooks.ties_captures = False  # summaries traced after the call
    for run in (nothing, stats, arrays, returned, untied):  # past the first call, described on the host
        run(variables, tokens)
        run.settle()
    # distinct arrays with the same values, one more set than inspector remembers: never a hit
    from inspector.inspection import variables as input_variables

    copies = [jax.tree.map(lambda v: v + 0, variables) for _ in range(input_variables.input_stats.size + 1)]
    turn = [0]

    def new_variables():
        turn[0] += 1
        return arrays(copies[turn[0] % len(copies)], tokens)

    variants = {
        "plain": lambda: plain(variables, tokens),
        "capture only": lambda: capture_only(variables, tokens),
        "stats, nothing captured": lambda: nothing(variables, tokens),
        "stats, calls (keep='stats')": lambda: stats(variables, tokens),
        "... arrays returned to the device": lambda: returned(variables, tokens),
        "... summaries traced after the call": lambda: untied(variables, tokens),
        "arrays, calls (default)": lambda: arrays(variables, tokens),
        "default, new variables each call": new_variables,
    }
    log("interleaving ...")
    t = interleave(variants, rounds, log=log, hot=args.hot)
    head = ("variant", "median ms", "ratio of medians", "per-round ratio med [IQR]")
    rows = []
    for name, xs in t.items():
        pr, lo, hi = paired(xs, t["plain"])
        rows.append((name, f"{med(xs):.1f}", f"{med(xs) / med(t['plain']):.2f}x", f"{pr:.2f}x [{lo:.2f}-{hi:.2f}]"))
    print_table(head, rows)


if __name__ == "__main__":
    main()

"""Host work of a warm inspected call: ``fi.inspect_apply(fn, model, capture_intermediates=True)`` against
plain ``jax.jit`` of flax's ``apply``, interleaved in one process (issue 26, item 3: ≤ 0.3 ms per 100
captured calls).

Two models: a 49-layer MLP of ``Dense(4)`` (batch 2: the device does next to nothing, so the difference
to plain jit is inspector's host work and the larger program's dispatch), and bench_first.py's 6-layer
transformer (``build("t6")``). Per model, per round, one call of each variant (shuffled order, the garbage
collector run before each; the inspection's output is what is waited for: the call itself waited for its
program, and reading its calls is not part of the call), then:

- ``over plain``: the inspected call's wall time minus plain jit's, per 100 captured calls (on the MLP, where
  the device does next to nothing, this is host work: Python and the dispatch of a program with more outputs);
- ``over its program``: the inspected call's wall time minus that of its own program alone (the runner's
  ``run`` of the same cached program, its results and statistics waited for), per 100 captured calls: the
  host work of the inspection around the program (choosing the runner, the variables' statistics,
  decoding the rows, building the ``Inspection``, the hooks that remember its inputs). On the
  transformer, ``over plain`` is mostly the device computing the statistics inside the program;
- ``unpacked: over plain``: ``over plain`` of the same run traced with every captured array its own
  output of the program (``packing.PACK_MAX = 0``), what packing the small ones saves.

Run: ``python bench/bench_host.py [--quick] [--rounds N] [--hot]``. No assertions: it prints numbers.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path)
from common import interleave, log, machine, med, paired, print_table, rounds_args


def main() -> None:
    args = rounds_args(__doc__, default=60, quick=10, quick_help="10 rounds")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import inspector as fi
    from bench_first import build
    from inspector.inspection import packing

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(49):
                x = nn.Dense(4, use_bias=False)(x)
            return x

    def mlp():
        m, x = MLP(), jnp.ones((2, 4))
        return m, MLP.__call__, m.init(jax.random.key(0), x), x

    def measure(name: str, model, fn, v, x) -> tuple:
        plain = jax.jit(nn.apply(fn, model))
        run = fi.inspect_apply(fn, model, capture_intermediates=True)
        run(v, x)
        run.settle()  # past the first call: the program that summarizes inside the call
        n = len(run(v, x).calls)
        # the same run with every captured array its own output (packing is decided when traced)
        unpacked = fi.inspect_apply(lambda m, *a: fn(m, *a), model, capture_intermediates=True)
        pack_max, packing.PACK_MAX = packing.PACK_MAX, 0
        try:
            unpacked(v, x)
            unpacked.settle()
            unpacked(v, x)
        finally:
            packing.PACK_MAX = pack_max

        def program_only():
            return run.runner.run((v, x), {})[:2]  # the same cached program: its results and statistics

        log(f"{name}: {n} captured calls")
        t = interleave({"plain jit": lambda: plain(v, x), "program only": program_only,
                        "inspect_apply": lambda: run(v, x).output, "unpacked": lambda: unpacked(v, x).output},
                       args.rounds, warmup=3, log=log, hot=args.hot)
        per100 = 100 / n
        over = [(a - b) * per100 for a, b in zip(t["inspect_apply"], t["plain jit"])]
        host = [(a - b) * per100 for a, b in zip(t["inspect_apply"], t["program only"])]
        unpacked_over = [(a - b) * per100 for a, b in zip(t["unpacked"], t["plain jit"])]
        ratio, lo, hi = paired(t["inspect_apply"], t["plain jit"])
        return (name, n, f"{med(t['plain jit']):.3f}", f"{med(t['program only']):.3f}",
                f"{med(t['inspect_apply']):.3f}", f"{ratio:.2f}x [{lo:.2f}-{hi:.2f}]", _iqr(over), _iqr(host),
                _iqr(unpacked_over))

    rows = [measure("MLP 49 x Dense(4), batch 2", *mlp())]
    rows.append(measure("t6 (bench_first)", *build("t6")))
    print(f"\n{machine()}; {args.rounds} rounds{' (hot)' if args.hot else ''}")
    print_table(("model", "captured calls", "plain ms", "its program ms", "inspect_apply ms", "ratio med [IQR]",
                 "over plain, ms per 100 calls med [IQR]", "over its program, ms per 100 calls med [IQR]",
                 "unpacked: over plain, ms per 100 calls"), rows)


def _iqr(xs: list[float]) -> str:
    import statistics

    q = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs):.3f} [{q[0]:.3f}-{q[2]:.3f}]"


if __name__ == "__main__":
    main()

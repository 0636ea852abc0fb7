"""What the private jax touchpoint that exists for speed buys (``inspector/_compat.py``), measured against
the same call with the touchpoint switched off, in interleaved rounds of one process.

- ``direct_call`` (jax's ``Compiled._params`` + ``create_cpp_call``): a cached ``fi.apply`` call goes straight
  into jax's C++ dispatch. Off: ``engine.direct.direct_call`` returns None, so the runner calls its
  ``jax.jit`` function (the public path).

Each variant has a runner of its own (equal drop-ins share one runner through ``api.shared_run``: a variant
built after another would run the other's direct path). The models are tiny (width 4, batch 2; 2 and 50
input leaves): the call is all dispatch, where any Python in front of jit shows. Ratios are per round
(median [25th-75th percentile]) against plain ``jax.jit(nn.apply(...))``.

Run: ``python bench/bench_touchpoints.py [--quick] [--rounds N]``. No assertions: it prints numbers.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path)
from common import interleave, log, machine, med, paired, print_table, rounds_args


def main() -> None:
    args = rounds_args(__doc__, default=40, quick=10, quick_help="10 rounds")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import inspector as fi
    from inspector.engine import direct as R

    from inspector.api import forget_shared_runs

    def mlp(layers: int):
        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                for _ in range(layers):
                    x = nn.Dense(4, use_bias=False)(x)
                return x
        return MLP()

    original_direct = R.direct_call

    def refused(*a, **k):  # the touchpoint switched off: the runner keeps calling its jax.jit function
        return None

    def measure(leaves: int) -> list[tuple]:
        model, x = mlp(leaves - 1), jnp.ones((2, 4))
        v = model.init(jax.random.key(0), x)
        per_sample = 2000 if leaves == 2 else 200

        def calls(f, direct=True):
            def run():
                R.direct_call = original_direct if direct else refused
                try:
                    out = None
                    for _ in range(per_sample):
                        out = f(v, x)
                finally:
                    R.direct_call = original_direct
                return out
            return run

        def own_runner():
            forget_shared_runs()  # a runner of this variant's own
            return fi.apply(type(model).__call__, model)

        variants = {"plain jit": calls(jax.jit(nn.apply(type(model).__call__, model))),
                    "fi.apply": calls(own_runner()),
                    "fi.apply, no direct_call": calls(own_runner(), direct=False)}
        log(f"{leaves} input leaves")
        times = interleave(variants, args.rounds, warmup=2, log=log, hot=args.hot)
        rows = []
        for name, ts in times.items():
            r, lo, hi = paired(ts, times["plain jit"])
            rows.append((leaves, name, f"{med(ts) / per_sample * 1000:.2f}", f"{r:.3f}x [{lo:.3f}-{hi:.3f}]"))
        return rows

    rows = measure(2) + measure(50)
    print(f"\n{machine()}; {args.rounds} rounds; tiny MLPs (width 4, batch 2)")
    print_table(("input leaves", "variant", "µs per call", "vs plain jit"), rows)

if __name__ == "__main__":
    main()

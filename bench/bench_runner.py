"""Per-call cost of the cached drop-in ``fi.apply`` vs plain ``jax.jit(nn.apply(fn, module))``,
and the host work of a cached ``inspect_apply`` (building the Inspection).

(a) MLPs of bias-free Dense layers with 2, 50 and 200 input leaves (the parameters plus ``x``),
    at two sizes: ``tiny`` (width 4, batch 2: the call is all dispatch, the worst case for any
    Python in front of jit) and ``small`` (width 128, batch 32). One timed sample is a batch of
    calls; variants run in interleaved rounds (common.interleave).
    A training-style call too: ``tiny`` with dropout, its typed PRNG key passed in ``rngs``.
(b) ``inspection.assemble.assemble`` for a model with 100 captured calls, its statistics already on the host
    side of the call (what a cached ``inspect_apply`` does after the device finishes).

Run: ``python bench/bench_runner.py [--quick] [--rounds N]``. No assertions: it prints numbers.
"""

from __future__ import annotations

import time

import common  # noqa: F401  (sets sys.path)
from common import rounds_args, interleave, log, machine, med, paired, print_table


def mlp(layers: int, width: int):
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(layers):
                x = nn.Dense(width, use_bias=False)(x)
            return x

    return MLP()


def dropout_mlp(width: int):
    import flax.linen as nn

    class Dropped(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dropout(0.5, deterministic=False)(nn.Dense(width)(x))

    return Dropped()


def main() -> None:
    args = rounds_args(__doc__, 15, 3, "fewer rounds and calls: a smoke run")
    rounds = args.rounds

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import inspector as fi
    from inspector import capture as C
    from inspector.inspection.assemble import assemble
    from inspector.inspection.variables import input_arrays, input_stats
    from inspector.model import Timings

    print(f"machine: {machine()}")
    print(f"{rounds} rounds\n")
    rows = []
    fn = lambda m, x: m(x)

    def compare(name: str, leaves: int, model, x, calls: int, **kwargs) -> None:
        """One row: ``calls`` cached calls of ``fi.apply`` against plain jit, in interleaved rounds."""
        variables = model.init(jax.random.key(0), x)
        plain, ours = jax.jit(nn.apply(fn, model)), fi.apply(fn, model)

        def batch_of(f):
            def run():
                for _ in range(calls):
                    y = f(variables, x, **kwargs)
                return y
            return run

        log(f"{name} {leaves} leaves: {calls} calls per sample")
        t = interleave({"plain": batch_of(plain), "fi.apply": batch_of(ours)}, rounds, warmup=2)
        pr, lo, hi = paired(t["fi.apply"], t["plain"])
        per_plain, per_ours = med(t["plain"]) / calls * 1000, med(t["fi.apply"]) / calls * 1000
        rows.append((name, leaves, f"{per_plain:.1f}", f"{per_ours:.1f}", f"{per_ours - per_plain:+.1f}",
                     f"{med(t['fi.apply']) / med(t['plain']):.2f}x", f"{pr:.2f}x [{lo:.2f}-{hi:.2f}]"))
        assert ours.traces == 1

    quarter = 4 if args.quick else 1
    for size, width, batch in (("tiny", 4, 2), ("small", 128, 32)):
        for leaves in (2, 50, 200):
            calls = max(20, (2000 if size == "tiny" else 400) // (1 + leaves // 10)) // quarter
            compare(size, leaves, mlp(leaves - 1, width), jnp.ones((batch, width)), calls)
    # a training-style call: a typed PRNG key for dropout, passed in ``rngs``
    compare("tiny + dropout key", 5, dropout_mlp(width=4), jnp.ones((2, 4)), 2000 // quarter,
            rngs={"dropout": jax.random.key(1)})
    print("(a) cached fi.apply / plain jax.jit(nn.apply(fn, module)), per call (target <= 1.10x)")
    print_table(("model", "input leaves", "plain us", "fi.apply us", "difference us", "ratio of medians",
                 "per-round ratio med [IQR]"), rows)

    model = mlp(100, 16)
    x = jnp.ones((4, 16))
    variables = model.init(jax.random.key(0), x)
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=C.calls)
    insp = run(variables, x)
    result, stats_arrays, record, _ = run.runner.run((variables, x), {})
    stats_arrays = jax.device_get(stats_arrays)
    described = input_stats.soon(input_arrays("apply", (variables, x)))  # remembered from the first call
    described.result()
    n = len(insp.calls)
    reps = 20 if args.quick else 100
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            assemble("apply", model, variables, result, stats_arrays, record.recorded, Timings(), "arrays", described)
        samples.append((time.perf_counter() - t0) / reps * 1000)
    print(f"\n(b) assemble, {n} captured calls, 100 variables: median {med(samples):.3f} ms per "
          "Inspection (target <= 1 ms)")


if __name__ == "__main__":
    main()

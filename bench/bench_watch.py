"""A watched training step vs the same step unwatched, on the bench model (warm).

The step: next-token cross-entropy of the bench transformer (8 layers, d=256, batch 8 x 128),
``jax.grad``, ``optax.adam``, jitted once. The watched step changes two lines: the forward pass
is ``watch.at(step).apply(...)`` (activations of every ``__call__``, the default filter) and
``watch.step(step, params=..., grads=..., updates=...)``. Each timed call runs ten consecutive
steps (so ``every=10`` records once per call), results waited for; variants interleave.

Targets: <= 1.05x at ``every=10`` and <= 1.25x at ``every=1``.
Run: ``python bench/bench_watch.py [--quick] [--rounds N]``. No assertions. The history the watch
fills, at scale (memory, views): bench/bench_history.py.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path)
from common import interleave, log, machine, med, paired, print_table, rounds_args

STEPS = 10  # steps per timed call


def build(layers: int, every: int | None):
    """A function running ``STEPS`` train steps from a fixed state (watched every ``every`` steps)."""
    import jax
    import jax.numpy as jnp
    import optax
    from models import bench_config

    import inspector as fi

    model, variables, tokens = bench_config(layers=layers)
    tx = optax.adam(1e-4)
    params, opt = variables["params"], tx.init(variables["params"])
    watch = fi.watch(model, every=every) if every else None

    def loss_fn(p, step):
        v = {"params": p}
        logits = watch.at(step).apply(v, tokens) if watch else model.apply(v, tokens)
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    @jax.jit
    def train_step(params, opt, step):
        grads = jax.grad(loss_fn)(params, step)
        updates, opt = tx.update(grads, opt, params)
        if watch:
            watch.step(step, params=params, grads=grads, updates=updates)
        return optax.apply_updates(params, updates), opt

    def run():
        p, o = params, opt
        for i in range(STEPS):
            p, o = train_step(p, o, jnp.int32(i))
        return p

    return run, watch


def main() -> None:
    args = rounds_args(__doc__, default=12, quick=4, quick_help="2 layers, 4 rounds")
    layers = 2 if args.quick else 8
    log(machine())
    runs = {"plain": build(layers, None)[0]}
    watches = {}
    for every in (10, 1):
        runs[f"every={every}"], watches[every] = build(layers, every)
    times = interleave(runs, args.rounds, warmup=2, log=log)
    rows = []
    for every in (10, 1):
        name = f"every={every}"
        r, lo, hi = paired(times[name], times["plain"])
        rows.append((f"{layers}-layer d=256 transformer, batch 8x128, adam", name,
                     f"{med(times['plain']) / STEPS:.2f}", f"{med(times[name]) / STEPS:.2f}",
                     f"{r:.3f}x [{lo:.3f}-{hi:.3f}]", len(watches[every].history.sites())))
    print(machine())
    print_table(("model", "watch", "plain step ms", "watched step ms", "ratio med [IQR]", "sites"), rows)


if __name__ == "__main__":
    main()

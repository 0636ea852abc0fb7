"""A watched training step vs the same step unwatched (warm, interleaved in one process).

Models: a small MLP (6 x Dense(64), batch 32, mean squared error) and the bench transformer (8 layers,
d=256, batch 8 x 128, next-token cross-entropy), both with ``optax.adam``. The watched step changes
two lines: the forward pass is ``watch.at(step).apply(...)`` (activations of every ``__call__``, the
default filter) and ``watch.step(step, params=..., grads=..., updates=...)``. Two ways to compile it:

* ``watch.jit(train_step)``: two programs, the host picks by step number (an unrecorded step is the
  unwatched program);
* ``jax.jit(train_step)`` with a traced step: one program, ``lax.cond``s and a host callback.

Each timed call runs ``STEPS`` consecutive steps, numbered on from the previous call (so ``every=10``
records once per call and no step is recorded twice); results waited for; variants interleave.
Also reported: the host work ``watch.jit`` does per recorded step (reading the rows into the history),
which is inside the watched figures.

Targets (issue 23): MLP <= 1.03x at every=10 and <= 1.5x at every=1; transformer <= 1.03x / <= 1.15x.
Run: ``python bench/bench_watch.py [--quick] [--rounds N]`` (``BENCH_WATCH_MODELS=mlp`` or ``=transformer``
for one model). Also: the cost of following the run with the live view (``watch.widget()``, its thread
redrawing) at every=1, against the same loop without it. No assertions. The history the watch
fills, at scale (memory, views): bench/bench_history.py.
"""

from __future__ import annotations

import os

import itertools
import time

import common  # noqa: F401  (sets sys.path)
from common import interleave, log, machine, med, paired, print_table, rounds_args

STEPS = 10  # steps per timed call


def mlp():
    """``(model, params, loss(apply, params, step))``: 6 x Dense(64), batch 32, mean squared error."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(6):
                x = nn.Dense(64)(x)
                x = nn.relu(x) if i < 5 else x
            return x

    model = MLP()
    x = jax.random.normal(jax.random.key(1), (32, 64))
    y = jax.random.normal(jax.random.key(2), (32, 64))
    params = model.init(jax.random.key(0), x)["params"]
    return model, params, lambda apply, p: jnp.mean((apply({"params": p}, x) - y) ** 2)


def transformer(layers: int):
    import jax
    import jax.numpy as jnp
    from models import bench_config

    model, variables, tokens = bench_config(layers=layers)

    def loss(apply, p):
        logp = jax.nn.log_softmax(apply({"params": p}, tokens)[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    return model, variables["params"], loss


def build(spec, every: int | None, way: str):
    """A function running ``STEPS`` train steps from a fixed state, steps numbered on across calls."""
    import jax
    import optax

    import inspector as fi

    model, params, loss = spec
    tx = optax.adam(1e-4)
    opt = tx.init(params)
    watch = fi.watch(model, every=every) if every else None

    def train_step(params, opt, step):
        apply = watch.at(step).apply if watch else model.apply
        grads = jax.grad(lambda p: loss(apply, p))(params)
        updates, opt = tx.update(grads, opt, params)
        if watch:
            watch.step(step, params=params, grads=grads, updates=updates)
        return optax.apply_updates(params, updates), opt

    step_fn = watch.jit(train_step) if way == "watch.jit" else jax.jit(train_step)
    counter = itertools.count()

    def run():
        p, o = params, opt
        for _ in range(STEPS):
            p, o = step_fn(p, o, next(counter))  # a Python int: traced by jax.jit
        return p

    return run, watch


def ingest_us(spec) -> float:
    """Microseconds of host work per recorded step: the history reading one step's returned rows."""
    import jax

    run, watch = build(spec, 1, "watch.jit")
    jax.block_until_ready(run())
    records = []
    watch._received = records.append  # keep them: time the reading alone
    for _ in range(5):
        jax.block_until_ready(run())
    for r in records:
        jax.block_until_ready(r.arrays)
    t = time.perf_counter()
    for r in records:
        watch._pending.append(r)
        watch._drain(wait=True)
    return (time.perf_counter() - t) / len(records) * 1e6


def live_view_cost(spec, steps: int = 2000, rounds: int = 5) -> tuple[float, float, float]:
    """``(ratio, lo, hi)``: ``steps`` watched steps (``watch.jit``, every=1) while the live view follows
    the history (its thread redrawing every 0.5 s) over the same steps without it; interleaved."""
    import jax

    run, watch = build(spec, 1, "watch.jit")

    def loop(live: bool):
        def go():
            view = watch.widget() if live else None
            try:
                for _ in range(steps // STEPS):
                    out = run()
                jax.block_until_ready(out)
                watch.history  # noqa: B018 - read: the view's last redraw happens while the loop runs
            finally:
                if view is not None:
                    view.close()
        return go

    times = interleave({"alone": loop(False), "followed": loop(True)}, rounds, warmup=1)
    return paired(times["followed"], times["alone"])


def main() -> None:
    args = rounds_args(__doc__, default=12, quick=4, quick_help="MLP and a 2-layer transformer, 4 rounds")
    layers = 2 if args.quick else 8
    where = machine()  # read once: the commit is the one measured, whatever lands meanwhile
    log(where)
    rows = []
    models = {"mlp": ("MLP 6 x Dense(64), batch 32, adam", mlp),
              "transformer": (f"{layers}-layer d=256 transformer, batch 8x128, adam", lambda: transformer(layers))}
    chosen = os.environ.get("BENCH_WATCH_MODELS", "mlp,transformer").split(",")  # e.g. =mlp alone
    for label, spec in ((models[m][0], models[m][1]()) for m in chosen):
        log(label)
        runs = {"plain": build(spec, None, "jit")[0]}
        watches = {}
        for way in ("watch.jit", "jit"):
            for every in (10, 1):
                runs[f"{way} every={every}"], watches[way, every] = build(spec, every, way)
        times = interleave(runs, args.rounds, warmup=2, log=log)
        for way in ("watch.jit", "jit"):
            for every in (10, 1):
                name = f"{way} every={every}"
                r, lo, hi = paired(times[name], times["plain"])
                rows.append((label, name, f"{med(times['plain']) / STEPS * 1e3:.0f}",
                             f"{med(times[name]) / STEPS * 1e3:.0f}", f"{r:.3f}x [{lo:.3f}-{hi:.3f}]",
                             len(watches[way, every].history.sites())))
        rows.append((label, "host work per recorded step (watch.jit)", "", f"{ingest_us(spec):.0f}", "", ""))
        if label.startswith("MLP"):
            r, lo, hi = live_view_cost(spec)
            rows.append((label, "watch.jit every=1, live view following vs not", "", "",
                         f"{r:.3f}x [{lo:.3f}-{hi:.3f}]", ""))
    print(where)
    print_table(("model", "watch", "plain step us", "watched step us", "ratio med [IQR]", "sites"), rows)


if __name__ == "__main__":
    main()

"""First inspected call and warm cost vs plain ``jax.jit(model.apply)``, on three models.

Models (the statistics-engine targets): a 4-layer MLP of width 64 (batch 32), a 6-layer
d=128 transformer (batch 8 x 64) and the 8-layer d=256 bench transformer (batch 8 x 128).

* **first call**: each measurement runs in a fresh Python process (jax warmed up on a
  trivial function first, variables never described before), so nothing compiled by an
  earlier variant is reused. Variants alternate ``plain, arrays, stats`` for ``--reps``
  rounds; the ratio per round is inspected / plain of that round.
* **warm**: in one process, interleaved rounds of plain jit, ``inspect_apply(...,
  capture_intermediates=True)`` with keep='arrays' and keep='stats'; overhead in ms and ratio.

* **the first N calls** (``--window N``): the cumulative time of a fresh process's first 1, 2, 3, 5, 10,
  20, 40 calls with the same inputs, inspected / plain, the largest over every N from 1 to N, the
  whole curve, and the slowest single call after the first against a warm plain call (issue 26's
  targets: <= 1.5x for every N, no call over 3x). ``--empty-cache``: every process starts with no
  statistics program saved (a brand-new user); by default the user's cache directory. ``--read``: every
  inspection's statistics are read after its call and counted in its time (kept arrays are described
  when first read; without it, as in a loop that keeps only the output, they never are).

Run: ``python bench/bench_first.py [--quick] [--reps N] [--models mlp,t6,t8] [--hot]
[--variants | --breakdown | --window N [--empty-cache] [--read]]``.
No assertions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import common  # noqa: F401  (sets sys.path)
from common import HERE, fresh_process_rounds, interleave, log, machine, med, paired, print_table

MODELS = {"mlp": "4-layer MLP, width 64", "t6": "6-layer d=128 transformer, batch 8x64",
          "t8": "8-layer d=256 transformer, batch 8x128"}


def build(which: str):
    """``(module, fn, variables, x)`` for a model name."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from models import Transformer, forward

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(4):
                x = nn.relu(nn.Dense(64)(x))
            return x

    if which == "mlp":
        m, x, fn = MLP(), jnp.ones((32, 64)), (lambda mod, x: mod(x))
    elif which == "t6":
        m = Transformer(layers=6, d=128, heads=4, max_len=64)
        x, fn = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (8, 64)), jnp.int32), forward
    else:
        m = Transformer()
        x, fn = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (8, 128)), jnp.int32), forward
    v = jax.block_until_ready(jax.jit(m.init)(jax.random.key(0), x))
    return m, fn, v, x


def one_first_call(which: str, variant: str) -> float:
    """Runs in a child process: milliseconds of the first call of ``variant``."""
    import jax

    import inspector as fi

    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    m, fn, v, x = build(which)
    t0 = time.perf_counter()
    if variant == "plain":
        jax.block_until_ready(jax.jit(m.apply)(v, x))
    else:
        insp = fi.inspect_apply(fn, m, capture_intermediates=True, keep=variant)(v, x)
        jax.block_until_ready(insp.output)
    return (time.perf_counter() - t0) * 1000


WINDOW = (1, 2, 3, 5, 10, 20, 40)


def first_calls_window(which: str, variant: str, n: int, empty_cache: bool = False, read: bool = False) -> str:
    """Runs in a child process: JSON of the milliseconds of each of the first ``n`` calls of
    ``variant`` (``plain``, ``arrays``, ``stats``) with the same inputs, results waited for.
    ``empty_cache``: no statistics program saved (a brand-new user: an empty cache directory).
    ``read``: every inspection's statistics are read after its call (a user who looks at each:
    kept arrays are described when read), and counted in that call's time."""
    if empty_cache:
        import os
        import tempfile

        os.environ["INSPECTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-first-empty-")
    import jax

    import inspector as fi

    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    m, fn, v, x = build(which)
    call = jax.jit(m.apply) if variant == "plain" else fi.inspect_apply(fn, m, capture_intermediates=True,
                                                                        keep=variant)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = call(v, x)
        jax.block_until_ready(out if variant == "plain" else out.output)
        if read and variant != "plain":
            assert out.first_nonfinite() is None and all(leaf.stats for c in out.calls for leaf in c.outputs)
        times.append((time.perf_counter() - t0) * 1000)
    return json.dumps(times)


def window(which: str, reps: int, n: int, empty_cache: bool = False, read: bool = False
           ) -> tuple[list[tuple], list[str]]:
    """Rows of the cumulative time of the first N calls, inspected / plain, per N in :data:`WINDOW`
    (median [IQR] over ``reps`` rounds of fresh processes, plain and both keeps alternating), the
    largest median over every N from 1 to ``n``, and the slowest single call over the median warm
    plain call (the plain run's calls 5 to n, or its last); and the whole curve (medians, N = 1..n)."""
    child = f"window:{which}:{n}:{'empty' if empty_cache else ''}:{'read' if read else ''}"
    rounds = fresh_process_rounds("bench_first.py", [child], reps, f"{which} window ", parse=json.loads)
    rows, curves = [], []
    for variant in ("arrays", "stats"):
        def ratios(k: int, variant: str = variant) -> list[float]:
            return sorted(sum(a[:k]) / sum(p[:k]) for a, p in zip(rounds[variant], rounds["plain"]))

        cells = []
        for k in (k for k in WINDOW if k <= n):
            r = ratios(k)
            cells.append(f"{med(r):.2f}x [{r[len(r) // 4]:.2f}-{r[(3 * len(r)) // 4]:.2f}]")
        curve = [med(ratios(k)) for k in range(1, n + 1)]
        worst = max(range(n), key=lambda i: curve[i])
        warm_plain = med([t for p in rounds["plain"] for t in p[min(4, n - 1):]])  # from call 5 (or the last)
        slowest = max(max(a[1:]) for a in rounds[variant]) / warm_plain if n > 1 else float("nan")
        rows.append((MODELS[which], variant, *cells, f"{curve[worst]:.2f}x (N={worst + 1})", f"{slowest:.1f}x"))
        curves.append(f"{which} {variant}: " + " ".join(f"{c:.2f}" for c in curve))
    return rows, curves


def compare_first_call(leaves: int) -> float:
    """Runs in a child process: ms of the first ``fi.compare`` of two inspections with ``leaves``
    variable leaves of a few shapes (every pair measured element-wise)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import inspector as fi

    class Many(nn.Module):
        n: int

        @nn.compact
        def __call__(self, x):
            for i in range(self.n):
                self.param(f"p{i}", nn.initializers.normal(), ((4,), (8, 4), (16,))[i % 3])
            return x

    import numpy as np

    rng = np.random.default_rng(0)
    m, x = Many(leaves), jnp.ones(3)
    v = {"params": {f"p{i}": jnp.asarray(rng.normal(size=((4,), (8, 4), (16,))[i % 3]), jnp.float32)
                    for i in range(leaves)}}
    w = jax.tree.map(lambda a: a * 1.5, v)
    run = fi.inspect_apply(lambda mod, x: mod(x), m, capture_intermediates=False)
    a, b = run(v, x), run(w, x)
    t0 = time.perf_counter()
    c = fi.compare(a, b)
    ms = (time.perf_counter() - t0) * 1000
    assert sum(d.status == "differs" for d in c.deltas) == leaves
    return ms


def first_calls(which: str, reps: int) -> dict[str, list[float]]:
    return fresh_process_rounds("bench_first.py", [which], reps, f"{which} first-call ")


def settled_runs(m, fn, v, x) -> dict:
    """A keep='arrays' and a keep='stats' run, each past its first call (which describes on the
    host) and with its summarizing program compiled: warm calls summarize in the call."""
    import inspector as fi

    runs = {}
    for keep in ("arrays", "stats"):
        runs[keep] = fi.inspect_apply(fn, m, capture_intermediates=True, keep=keep)
        runs[keep](v, x)
        runs[keep].settle()
    return runs


def warm(which: str, rounds: int, hot: bool = False) -> dict[str, list[float]]:
    import jax

    m, fn, v, x = build(which)
    plain = jax.jit(m.apply)
    runs = settled_runs(m, fn, v, x)
    return interleave({"plain": lambda: plain(v, x), "arrays": lambda: runs["arrays"](v, x),
                       "stats": lambda: runs["stats"](v, x)}, rounds, warmup=2, hot=hot)


VARIANTS = ("stats", "stats, untied", "stats, arrays returned", "stats, session 12", "arrays", "arrays, untied")


def variants(which: str, rounds: int, hot: bool) -> dict[str, list[float]]:
    """Warm calls of keep='stats' and keep='arrays' runs, each also with one of this session's
    changes undone: ``untied`` (summaries traced after the call, not where captured), ``arrays
    returned`` (keep='stats' returning the captured arrays to the device), ``session 12`` (both)."""
    import jax

    import inspector as fi

    m, fn, v, x = build(which)
    runs = {}
    for name in VARIANTS:
        run = fi.inspect_apply(fn, m, capture_intermediates=True, keep=name.split(",")[0])
        if "returned" in name or "12" in name:
            run.runner = run._make_runner(True, False)
        if "untied" in name or "12" in name:
            run.runner.hooks.ties_captures = False
        run(v, x)
        run.settle()
        runs[name] = run
    plain = jax.jit(m.apply)
    calls = {"plain": lambda: plain(v, x)} | {k: (lambda r=r: r(v, x)) for k, r in runs.items()}
    return interleave(calls, rounds, warmup=2, hot=hot)


BREAKDOWN = ("flax capture", "arrays, program", "arrays", "stats, program", "stats")


def breakdown(which: str, rounds: int, hot: bool) -> dict[str, list[float]]:
    """Where a warm call's time goes: flax's own ``capture_intermediates`` under ``jax.jit``
    (returning the captured arrays, nothing else), and for each keep its program alone (the
    runner's dispatch and device time) and the whole call (with the assembly)."""
    import jax

    m, fn, v, x = build(which)
    plain = jax.jit(m.apply)
    capture = jax.jit(lambda v, x: m.apply(v, x, capture_intermediates=True))
    runs = settled_runs(m, fn, v, x)

    def program(run):
        return lambda: run.runner.run((v, x), {})[:2]

    calls = {"plain": lambda: plain(v, x), "flax capture": lambda: capture(v, x),
             "arrays, program": program(runs["arrays"]), "arrays": lambda: runs["arrays"](v, x),
             "stats, program": program(runs["stats"]), "stats": lambda: runs["stats"](v, x)}
    return interleave(calls, rounds, warmup=2, hot=hot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="MLP only, 2 reps, few warm rounds")
    ap.add_argument("--reps", type=int, default=None, help="fresh-process rounds per model (default 4)")
    ap.add_argument("--models", default=None, help="comma-separated subset of mlp,t6,t8")
    ap.add_argument("--hot", action="store_true",
                    help="warm rounds only, with warm caches (no garbage collection before each call)")
    ap.add_argument("--variants", action="store_true",
                    help="warm only: this session's changes undone one at a time (see variants())")
    ap.add_argument("--breakdown", action="store_true",
                    help="warm only: flax's capture alone, and each keep's program alone and whole call")
    ap.add_argument("--window", type=int, default=None, metavar="N",
                    help="only the cumulative time of the first N calls (fresh processes), inspected / plain")
    ap.add_argument("--empty-cache", action="store_true",
                    help="--window: each process starts with no statistics program saved (a brand-new user)")
    ap.add_argument("--read", action="store_true",
                    help="--window: every inspection's statistics are read after its call, in its time")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        which, variant = args.child
        if which.startswith("window:"):
            parts = which.split(":")
            print(first_calls_window(parts[1], variant, int(parts[2]), "empty" in parts[3:], "read" in parts[3:]))
            return
        print(compare_first_call(int(variant)) if which == "compare" else one_first_call(which, variant))
        return
    models = (args.models or ("mlp" if args.quick else "mlp,t6,t8")).split(",")
    reps = args.reps or (2 if args.quick else 4)
    where = machine()
    log(where)
    rows, raw = [], {}
    if args.window:
        curves = []
        for which in models:
            more, curve = window(which, reps, args.window, args.empty_cache, args.read)
            rows += more
            curves += curve
        print(where, "; statistics programs:", "none saved" if args.empty_cache else "the user's cache",
              "; every inspection read after its call" if args.read else "; inspections not read")
        print_table(("model", "keep", *(f"N={k}" for k in WINDOW if k <= args.window),
                     f"largest, N=1..{args.window}", "slowest call after the first / warm plain"), rows)
        print(f"cumulative ratio, medians, N = 1..{args.window}:")
        print("\n".join(curves))
        return
    if args.variants or args.breakdown:
        print(machine())
        measure, names = (variants, VARIANTS) if args.variants else (breakdown, BREAKDOWN)
        for which in models:
            w = measure(which, 6 if args.quick else (50 if which != "t8" else 25), args.hot)
            rows = []
            for k in names:
                r, lo, hi = paired(w[k], w["plain"])
                rows.append((MODELS[which], k, f"{med(w[k]):.2f}", f"{r:.3f}x [{lo:.3f}-{hi:.3f}]"))
            print_table(("model", "variant", "ms", "ratio to plain [IQR]"), rows)
        return
    for which in models:
        w = warm(which, 6 if args.quick else (60 if which == "mlp" else 15), hot=args.hot)
        if args.hot:
            cells = []
            for v in ("arrays", "stats"):
                r, lo, hi = paired(w[v], w["plain"])
                cells.append(f"{med(w[v]):.2f} / {med(w[v]) - med(w['plain']):+.2f} / {r:.2f}x [{lo:.2f}-{hi:.2f}]")
            rows.append((MODELS[which], f"{med(w['plain']):.2f}", *cells))
            continue
        first = first_calls(which, reps)
        raw[which] = {"first": first, "warm": w}
        for variant in ("arrays", "stats"):
            r, lo, hi = paired(first[variant], first["plain"])
            wr, wlo, whi = paired(w[variant], w["plain"])
            rows.append((MODELS[which], variant, f"{med(first['plain']):.0f}", f"{med(first[variant]):.0f}",
                         f"{r:.2f}x [{lo:.2f}-{hi:.2f}]", f"{med(w['plain']):.2f}", f"{med(w[variant]):.2f}",
                         f"{med(w[variant]) - med(w['plain']):+.2f}", f"{wr:.2f}x [{wlo:.2f}-{whi:.2f}]"))
    if args.hot:
        print(machine())
        print_table(("model", "plain warm ms", "arrays: ms / overhead ms / ratio [IQR]",
                     "stats: ms / overhead ms / ratio [IQR]"), rows)
        return
    cmp = []
    for leaves in (() if args.quick else (1000, 2000)):
        cmd = [sys.executable, str(HERE / "bench_first.py"), "--child", "compare", str(leaves)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE.parent)
        cmp.append((f"{leaves:,}", f"{float(res.stdout.strip().splitlines()[-1]):.0f}"))
    print(machine())
    if cmp:
        print_table(("fi.compare leaves", "first call ms (fresh process)"), cmp)
    print_table(("model", "keep", "plain first ms", "inspect first ms", "first ratio med [IQR]",
                 "plain warm ms", "inspect warm ms", "warm overhead ms", "warm ratio med [IQR]"), rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f)


if __name__ == "__main__":
    main()

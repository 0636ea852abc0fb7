"""The bucketed statistics programs (``inspector/stats/programs.py``) against the numpy host path.

Describes the captured arrays of the 6-layer d=128 transformer (batch 8 x 64: its variables, every
``__call__``'s output and the model's output, as ``fi.inspect_apply`` captures them):

(a) in one process, interleaved rounds: numpy (the host path) vs the bucketed programs, warm, vs the
    chooser ``stats.host_stats_many`` (numpy whatever the size: on XLA:CPU the programs were slower
    than numpy for float arrays at every size, (d)), and vs the host summaries a run's first calls
    give (``stats.summaries_after_the_call``: five reductions per large float array, exact where a
    summary can't be trusted);
(b) fresh processes: the first description by the programs with an empty cache directory (they
    compile), with the cache a previous process saved (they load: 0 compiles), and by numpy;
(c) new models: programs compiled for the 6-layer model, then a 4-layer transformer of the same width
    (known buckets: 0 compiles) and the 8-layer d=256 one (some new buckets);
(d) per array size and dtype (float32, bfloat16, int32; 2^12 to 2^24 elements): numpy vs a ready
    program, one array and a batch of 8 (``--sizes``: this part alone).

    .venv/bin/python bench/bench_stats_programs.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent


def captured(which: str) -> list:
    """The arrays an inspected call of ``which`` describes: variables, calls' outputs, the output."""
    import jax
    import numpy as np
    from models import Transformer, forward

    import flax.linen as nn

    if which == "t6":
        m, shape = Transformer(layers=6, d=128, heads=4, max_len=64), (8, 64)
    elif which == "t4":
        m, shape = Transformer(layers=4, d=128, heads=4, max_len=64), (8, 64)
    else:
        m, shape = Transformer(), (8, 128)
    x = jax.numpy.asarray(np.random.default_rng(0).integers(0, 1000, shape), jax.numpy.int32)
    v = jax.jit(m.init)(jax.random.key(0), x)
    y, state = jax.jit(lambda v, x: nn.apply(forward, m, capture_intermediates=True, mutable=["intermediates"])(v, x))(
        v, x)
    return jax.block_until_ready([*jax.tree_util.tree_leaves(v), *jax.tree_util.tree_leaves(state), y])


def load() -> str:
    """The machine's load average (1, 5, 15 minutes), printed beside the figures: other jobs slow XLA:CPU's
    thread pool unevenly."""
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def sizes_measured(quick: bool) -> list[tuple[str, int, int]]:
    """``(dtype, log2 size, arrays)`` of part (d): the sizes the host chooser once split at (2^12..2^24)."""
    out = []
    for dtype in ("float32", "bfloat16", "int32"):
        for p in (12, 14, 16, 17, 18, 20, 22, 24):
            out.append((dtype, p, 1))
            if p <= 18 and not (quick and p % 2):
                out.append((dtype, p, 8))
    return out


def values(rng, dtype: str, n: int):
    """``n`` values of ``dtype`` (numpy; bfloat16 through ml_dtypes)."""
    import ml_dtypes
    import numpy as np

    if dtype == "int32":
        return rng.integers(-1000, 1000, n, dtype=np.int32)
    return rng.normal(size=n).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)


def child(mode: str) -> None:
    """In a fresh process: milliseconds of the first description of the 6-layer model's arrays."""
    import jax

    from inspector import stats
    from inspector.stats import programs

    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    arrays = captured("t6")
    t0 = time.perf_counter()
    if mode == "numpy":
        stats.host.numpy_stats_many(arrays)
    else:
        programs.describe_bucketed(arrays)
    ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({"ms": ms, "compiles": programs.compiles, "loads": programs.loads}))


def fresh(mode: str, cache: str) -> dict:
    env = dict(os.environ, INSPECTOR_CACHE_DIR=cache, PYTHONPATH=str(HERE.parent))
    out = subprocess.run([sys.executable, __file__, "--child", mode], env=env, capture_output=True, text=True,
                         check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--fresh", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--quick", action="store_true", help="5 rounds, 1 fresh process each")
    parser.add_argument("--sizes", action="store_true", help="only (d): per array size and dtype")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.rounds, args.fresh = 5, 1
    common.log(f"{common.machine()} | {common.revision()} | before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INSPECTOR_CACHE_DIR"] = str(Path(tmp) / "cache")
        import jax
        import numpy as np

        from inspector import stats
        from inspector.stats import programs

        arrays = captured("t6")
        sizes = sorted(int(np.size(a)) for a in arrays)
        common.log(f"6-layer model: {len(arrays)} arrays, {sum(sizes) / 1e6:.2f}M elements, largest {sizes[-1]}; "
                   f"{len(programs.keys(arrays))} programs (dtype x bucket)")

        rows: list[tuple[str, str, str]] = []
        if not args.sizes:
            # (b) fresh processes
            cold, disk, numpy_first = [], [], []
            for r in range(args.fresh):
                cache = str(Path(tmp) / f"fresh{r}")
                cold.append(fresh("programs", cache))
                disk.append(fresh("programs", cache))
                numpy_first.append(fresh("numpy", cache))
            rows += [("first description, fresh process: programs, empty cache (compiles)",
                      f"{common.med([c['ms'] for c in cold]):.0f}", f"compiles {cold[0]['compiles']}"),
                     ("first description, fresh process: programs, saved cache (loads)",
                      f"{common.med([c['ms'] for c in disk]):.0f}",
                      f"compiles {disk[0]['compiles']}, loads {disk[0]['loads']}"),
                     ("first description, fresh process: numpy",
                      f"{common.med([c['ms'] for c in numpy_first]):.1f}", "")]

            # (a) warm, interleaved
            def summarized(xs):  # what a run's first calls give (pipeline: summaries after the call)
                with stats.summaries_after_the_call():
                    return stats.host_stats_many(xs)

            programs.describe_bucketed(arrays)
            stats.host_stats_many(arrays)
            done = programs.prepare(arrays)
            assert done is None and programs.ready(arrays)
            times = common.interleave({
                "numpy": lambda: stats.host.numpy_stats_many(arrays),
                "programs": lambda: programs.describe_bucketed(arrays),
                "chooser": lambda: stats.host_stats_many(arrays),
                "host summaries": lambda: summarized(arrays),
            }, args.rounds)
            for name in ("programs", "chooser", "host summaries"):
                mid, lo, hi = common.paired(times[name], times["numpy"])
                ms = f"{common.med(times[name]):.1f} / {common.med(times['numpy']):.1f} ms"
                rows.append((f"warm: {name} / numpy ({ms})", f"{mid:.2f}x", f"IQR {lo:.2f}-{hi:.2f}; {load()}"))

            # (c) new models
            for which, label in (("t4", "4-layer d=128 (known buckets)"), ("t8", "8-layer d=256")):
                more = captured(which)
                before = programs.compiles
                t0 = time.perf_counter()
                programs.describe_bucketed(more)
                ms = (time.perf_counter() - t0) * 1000
                rows.append((f"new model {label}: first description by programs", f"{ms:.0f}",
                             f"compiles {programs.compiles - before}"))

        # (d) per size and dtype
        rng = np.random.default_rng(0)
        for dtype, p, k in sizes_measured(args.quick):
            batch = [jax.numpy.asarray(values(rng, dtype, 2**p - 5)) for _ in range(k)]
            programs.describe_bucketed(batch)  # compiled (or loaded) before the rounds
            t = common.interleave({"numpy": lambda b=batch: stats.host.numpy_stats_many(b),
                                   "programs": lambda b=batch: programs.describe_bucketed(b)},
                                  max(3, args.rounds // 3))
            mid, lo, hi = common.paired(t["programs"], t["numpy"])
            rows.append((f"2^{p} {dtype} x{k}: programs / numpy ({common.med(t['programs']):.2f} / "
                         f"{common.med(t['numpy']):.2f} ms)", f"{mid:.2f}x", f"IQR {lo:.2f}-{hi:.2f}; {load()}"))
        common.print_table(("measurement", "ms or ratio", "note"), rows)
        common.log(f"after: {load()}")


if __name__ == "__main__":
    main()

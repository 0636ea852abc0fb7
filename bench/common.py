"""Timing helpers shared by the benchmark scripts (not a benchmark itself).

Every ratio is measured inside one process: the variants being compared run in
interleaved rounds (a fresh random order per round), so slow phases of a noisy
machine hit all of them alike; we report medians and per-round paired ratios.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)


def block(x: Any) -> Any:
    """Wait for every device array in ``x`` (an Inspection: its output and kept arrays)."""
    import jax

    from inspector.model import Inspection

    if isinstance(x, Inspection):
        jax.block_until_ready(x.output)
        jax.block_until_ready([lf.handle for c in x.calls for lf in c.outputs if lf.handle is not None])
        return x
    return jax.block_until_ready(x)


def timed(fn: Callable[[], Any]) -> float:
    """Milliseconds for one call of ``fn``, results waited for."""
    t0 = time.perf_counter()
    out = fn()
    block(out)
    ms = (time.perf_counter() - t0) * 1000
    del out
    return ms


def interleave(variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
               seed: int = 0, log: Callable[[str], None] | None = None, hot: bool = False) -> dict[str, list[float]]:
    """``rounds`` timed calls per variant, one of each per round in a shuffled order.
    ``warmup`` untimed calls each first (compilation, allocator warm-up). Before each timed call
    the garbage collector runs (no collection inside a timed call; it also leaves the CPU caches
    cold, as the rest of a notebook does between two calls); with ``hot``, the collector is off
    during the rounds instead, so calls follow each other with warm caches."""
    for name, fn in variants.items():
        for _ in range(warmup):
            block(fn())
        if log:
            log(f"  warmed {name}")
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    if hot:
        gc.collect()
        gc.disable()
    try:
        for r in range(rounds):
            rng.shuffle(names)
            for name in names:
                if not hot:
                    gc.collect()
                times[name].append(timed(variants[name]))
                if log and (r + 1) % max(1, rounds // 4) == 0 and name == names[-1]:
                    log(f"  round {r + 1}/{rounds}")
    finally:
        if hot:
            gc.enable()
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Per-round ratios ``num[i] / den[i]``: (median, 25th, 75th percentile)."""
    rs = sorted(a / b for a, b in zip(num, den))
    if len(rs) < 4:
        return statistics.median(rs), rs[0], rs[-1]
    q = statistics.quantiles(rs, n=4)
    return statistics.median(rs), q[0], q[2]


def machine() -> str:
    import flax
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; python "
            f"{platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}; "
            f"devices {jax.devices()}; inspector at {revision()}")


def revision() -> str:
    """The git commit of the checkout, with '+changes' if inspector/ has uncommitted edits."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "inspector"], cwd=HERE.parent,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def print_table(head: tuple[str, ...], rows: list[tuple]) -> None:
    """A markdown table, columns padded (paste it into bench/README.md)."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]

    def line(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def rounds_args(doc: str, default: int, quick: int, quick_help: str) -> Any:
    """The ``--quick`` / ``--rounds`` / ``--hot`` command line every benchmark script takes;
    ``args.rounds`` is set (``--hot``: see :func:`interleave`)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {default}, quick {quick})")
    ap.add_argument("--hot", action="store_true", help="calls back to back, warm caches (no collection before each)")
    args = ap.parse_args()
    args.rounds = args.rounds or (quick if args.quick else default)
    return args


def fresh_process_rounds(script: str, child_args: list[str], reps: int, label: str = "",
                         parse: Callable[[str], Any] = float) -> dict[str, list[Any]]:
    """What each variant (``plain``, ``arrays``, ``stats``) measured in a fresh process running
    ``script --child *child_args variant``: its last stdout line through ``parse`` (milliseconds of
    its first call by default; a list of them sums in the log); the order alternates per round so
    neither side always runs on a warmer machine."""
    import subprocess

    out: dict[str, list[Any]] = {"plain": [], "arrays": [], "stats": []}
    for r in range(reps):
        for variant in (("plain", "arrays", "stats") if r % 2 == 0 else ("stats", "arrays", "plain")):
            cmd = [sys.executable, str(HERE / script), "--child", *child_args, variant]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
            if res.returncode:
                raise RuntimeError(f"{' '.join(cmd[1:])} failed:\n{res.stderr[-3000:]}")
            out[variant].append(parse(res.stdout.strip().splitlines()[-1]))
        log(f"  {label}round {r + 1}/{reps}: " + ", ".join(
            f"{k} {sum(v[-1]) if isinstance(v[-1], list) else v[-1]:.0f} ms" for k, v in out.items()))
    return out

"""Core overhead ratios of inspector, each measured in this one process.

Model: bench/models.py's pre-LN Transformer, 8 layers, d=256, batch 8 x 128 tokens.
Baseline: ``jax.jit(model.apply)``. Rows:

  (a) steady ``inspect_apply`` (stats on params + every ``__call__`` output) vs plain  -- target <= 1.10x
  (b) capture-all (``capture.everything``) with stats vs plain; and without stats (``fi.apply``)
  (c) first call (trace + compile + run + assemble) vs warm call
  (d) bytes fetched to the host per call vs total captured bytes (keep='arrays' and 'stats')
  (e) ``fi.apply`` (drop-in, no stats) vs plain
  (f) naive ``jax.jit(nn.apply(fn, model))`` rebuilt every call vs ``fi.apply`` built once

Steady-state variants run interleaved (one call of each per round, shuffled) in three
groups (light: plain/fi.apply, 3x rounds; rebuild: fi.apply/naive; heavy: plain/inspect_apply),
medians reported; every ratio is taken within one group. No assertions: this prints numbers.
``--quick``: 2-layer model, few rounds (a smoke run, not the target configuration).

Run: ``python bench/bench_core.py [--quick] [--rounds N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import common
from common import fmt_bytes, interleave, log, machine, med, paired, print_table, timed


def host_bytes_per_call(run, variables, tokens) -> tuple[int, int, int]:
    """One inspected call with every device->host transfer accounted for.

    Implicit transfers (``np.asarray(device_array)``, ``float(x)``...) are made errors
    by ``jax.transfer_guard_device_to_host('disallow')``; explicit ones can only go
    through ``jax.device_get``, which is wrapped to sum the ``nbytes`` of every array
    leaf it is handed. Returns ``(host bytes, device_get calls, arrays fetched)``.
    """
    import jax

    seen = {"bytes": 0, "calls": 0, "arrays": 0}
    original = jax.device_get

    def counting(x):
        seen["calls"] += 1
        for leaf in jax.tree.leaves(x):
            if hasattr(leaf, "nbytes") and isinstance(leaf, jax.Array):
                seen["bytes"] += int(leaf.nbytes)
                seen["arrays"] += 1
        return original(x)

    jax.device_get = counting
    try:
        with jax.transfer_guard_device_to_host("disallow"):
            insp = run(variables, tokens)
    finally:
        jax.device_get = original
    del insp
    return seen["bytes"], seen["calls"], seen["arrays"]


def captured_bytes(insp) -> tuple[int, int, int]:
    """(bytes of every captured intermediate, bytes of the variables, bytes of the outputs)."""
    inter = sum(lf.nbytes for c in insp.calls for lf in c.outputs)
    return inter, insp.variables.nbytes, sum(lf.nbytes for lf in insp.outputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2-layer model, 3 rounds: a smoke run")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds (heavy group; default 12, quick 3; light group gets 3x)")
    ap.add_argument("--first-reps", type=int, default=None, help="fresh first calls (default 2, quick 1)")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 12)
    first_reps = args.first_reps or (1 if args.quick else 2)

    import flax.linen as nn
    import jax

    import inspector as fi
    from inspector import capture as C
    from models import bench_config, forward, param_count

    layers = 2 if args.quick else 8
    model, variables, tokens = bench_config(layers=layers)
    config = (f"Transformer {layers} layers, d=256, 8 heads, vocab 1000, tokens {tuple(tokens.shape)}, "
              f"{param_count(variables) / 1e6:.2f}M params, float32")
    print(f"machine: {machine()}")
    print(f"model:   {config}")
    print(f"rounds:  {rounds} interleaved (medians); first-call reps: {first_reps}\n")

    # -- (c) first calls, each on a fresh wrapper (nothing cached) ----------------
    log("first calls ...")
    firsts, first_timings, plain_firsts = [], [], []
    default = None
    for i in range(first_reps):
        plain_fresh = jax.jit(lambda v, x: model.apply(v, x))  # a new function: traced and compiled anew
        plain_firsts.append(timed(functools.partial(plain_fresh, variables, tokens)))
        run = fi.inspect_apply(forward, model)
        t0 = time.perf_counter()
        insp = run(variables, tokens)
        common.block(insp)
        firsts.append((time.perf_counter() - t0) * 1000)
        first_timings.append(insp.timings)
        n_calls = len(insp.calls)
        inter_b, var_b, out_b = captured_bytes(insp)
        del insp
        default = run  # the last fresh one is reused, warm, below
        log(f"  first call {i + 1}: {firsts[-1]:.0f} ms ({first_timings[-1]})")

    # -- steady state, interleaved ------------------------------------------------
    plain = jax.jit(model.apply)
    stats_run = fi.inspect_apply(forward, model, keep="stats")
    all_run = fi.inspect_apply(forward, model, capture_intermediates=C.everything)
    all_apply = fi.apply(forward, model, capture_intermediates=C.everything)
    drop_in = fi.apply(forward, model)

    def naive():
        return jax.jit(nn.apply(forward, model))(variables, tokens)

    # Three groups, each interleaved on its own (a group's ratios never mix rounds of another):
    # the cheap calls get more rounds; the heavy inspect calls would swamp them in shared rounds.
    light = {
        "plain": lambda: plain(variables, tokens),
        "fi.apply": lambda: drop_in(variables, tokens),
        "apply everything": lambda: all_apply(variables, tokens),
    }
    rebuilt = {
        "fi.apply": lambda: drop_in(variables, tokens),
        "naive rebuilt": naive,
    }
    heavy = {
        "plain": lambda: plain(variables, tokens),
        "inspect arrays": lambda: default(variables, tokens),
        "inspect stats": lambda: stats_run(variables, tokens),
        "inspect everything": lambda: all_run(variables, tokens),
    }
    log("light group (plain, fi.apply) ...")
    t_light = interleave(light, 3 * rounds, log=log)
    log("naive rebuild group ...")
    t_rebuilt = interleave(rebuilt, rounds, log=log)
    log("heavy group (inspect_apply) ...")
    t = interleave(heavy, rounds, log=log)
    n_calls_all = len(all_run(variables, tokens).calls)

    # -- (d) host bytes ----------------------------------------------------------------
    host = {keep: host_bytes_per_call(r, variables, tokens)
            for keep, r in (("arrays", default), ("stats", stats_run))}
    total_b = inter_b + var_b + out_b

    # -- table ---------------------------------------------------------------------------
    m = {k: med(v) for k, v in t.items()}
    rows = []

    def ratio_row(label, num, den, target="", g=None):
        g = t if g is None else g
        a, b = med(g[num]), med(g[den])
        pr, lo, hi = paired(g[num], g[den])
        rows.append((label, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x", f"{pr:.2f}x [{lo:.2f}-{hi:.2f}]", target))

    ratio_row(f"(a) inspect_apply, stats, keep='arrays' ({n_calls} calls) / plain jit",
              "inspect arrays", "plain", "<= 1.10x")
    ratio_row("(a) inspect_apply, stats, keep='stats' / plain jit", "inspect stats", "plain", "<= 1.10x")
    ratio_row(f"(b) capture-all + stats (C.everything, {n_calls_all} calls) / plain jit",
              "inspect everything", "plain")
    ratio_row("(b) fi.apply capture-all, no stats / plain jit", "apply everything", "plain", g=t_light)
    first_med = med(firsts)
    rows.append(("(c) inspect_apply first call / warm call", f"{first_med:.0f}", f"{m['inspect arrays']:.1f}",
                 f"{first_med / m['inspect arrays']:.1f}x", "", ""))
    rows.append(("(c) for reference: plain jit first call / warm call", f"{med(plain_firsts):.0f}",
                 f"{med(t_light['plain']):.1f}", f"{med(plain_firsts) / med(t_light['plain']):.1f}x", "", ""))
    for keep in ("arrays", "stats"):
        hb, calls, arrays = host[keep]
        rows.append((f"(d) host bytes per call / captured+variables+output bytes, keep='{keep}'",
                     fmt_bytes(hb), fmt_bytes(total_b), f"{hb / total_b:.2e}",
                     f"{arrays} arrays in {calls} device_get", ""))
    ratio_row("(e) fi.apply (drop-in, no stats) / plain jit", "fi.apply", "plain", g=t_light)
    ratio_row("(f) naive jax.jit(nn.apply(...)) per call / fi.apply built once", "naive rebuilt", "fi.apply",
              g=t_rebuilt)

    head = ("measurement", "variant ms", "baseline ms", "ratio of medians", "per-round ratio med [IQR]", "target")
    print_table(head, rows)
    ft = first_timings[-1]
    print(f"\nfirst call breakdown (last rep): trace {ft.trace_ms:.0f} ms, compile {ft.compile_ms:.0f} ms, "
          f"run {ft.run_ms:.0f} ms (+ assemble); each first call: {', '.join(f'{x:.0f}' for x in firsts)} ms")
    print(f"(d) captured: intermediates {fmt_bytes(inter_b)}, variables {fmt_bytes(var_b)}, "
          f"outputs {fmt_bytes(out_b)}; stats arrays fetched = {fmt_bytes(host['stats'][0])}")
    for name, g in (("heavy", t), ("light", t_light), ("rebuild", t_rebuilt)):
        print(f"medians, {name} group ({len(next(iter(g.values())))} rounds, ms): "
              + ", ".join(f"{k} {med(v):.1f}" for k, v in g.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "machine": machine(),
                       "times_ms": {"heavy": t, "light": t_light, "rebuild": t_rebuilt}, "first_ms": firsts,
                       "plain_first_ms": plain_firsts,
                       "first_timings": [vars(x) for x in first_timings], "host": host,
                       "captured_bytes": {"intermediates": inter_b, "variables": var_b, "outputs": out_b}},
                      f, indent=1)


if __name__ == "__main__":
    main()

"""``fi.inspect_grad`` vs plain ``jax.jit(jax.value_and_grad(loss))`` on the 8-layer bench model.

The loss is the mean softmax cross-entropy of the next token (d=256, 8 heads, batch 8 x 128).
``inspect_grad`` captures every ``__call__`` (the default) and returns the gradient w.r.t. each
captured output, with statistics, beside d loss / d params.

* **first call**: each measurement runs in a fresh Python process (jax warmed up on a trivial
  function first); variants alternate ``plain, arrays, stats`` for ``--reps`` rounds, and the
  ratio per round is inspected / plain of that round.
* **warm**: in one process, interleaved rounds of the three; overhead in ms and ratio.

Targets: warm <= 1.3x, first call <= 1.5x. Run: ``python bench/bench_grad.py [--quick] [--reps N]``.
No assertions.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets sys.path)
from common import fresh_process_rounds, interleave, log, machine, med, paired, print_table


def build(layers: int):
    """``(model, loss_fn, variables, tokens)``: next-token cross-entropy of the bench transformer."""
    import jax
    import jax.numpy as jnp
    from models import bench_config

    model, variables, tokens = bench_config(layers=layers)

    def loss_fn(module, tokens):
        logp = jax.nn.log_softmax(module(tokens)[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    return model, loss_fn, variables, tokens


def plain_run(model, loss_fn):
    import jax

    return jax.jit(jax.value_and_grad(lambda p, rest, t: loss_fn(model.bind({"params": p, **rest}), t)))


def one_first_call(layers: int, variant: str) -> float:
    """Runs in a child process: milliseconds of the first call of ``variant``."""
    import jax

    import inspector as fi

    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    model, loss_fn, v, x = build(layers)
    t0 = time.perf_counter()
    if variant == "plain":
        jax.block_until_ready(plain_run(model, loss_fn)(v["params"], {}, x))
    else:
        insp = fi.inspect_grad(loss_fn, model, keep=variant)(v, x)
        jax.block_until_ready(insp.output)
    return (time.perf_counter() - t0) * 1000


def first_calls(layers: int, reps: int) -> dict[str, list[float]]:
    return fresh_process_rounds("bench_grad.py", [str(layers)], reps)


def warm(layers: int, rounds: int) -> dict[str, list[float]]:
    import inspector as fi

    model, loss_fn, v, x = build(layers)
    plain = plain_run(model, loss_fn)
    arrays = fi.inspect_grad(loss_fn, model, keep="arrays")
    stats = fi.inspect_grad(loss_fn, model, keep="stats")
    for run in (arrays, stats):  # the first call describes on the host; warm calls summarize in the call
        run(v, x)
        run.settle()
    return interleave({"plain": lambda: plain(v["params"], {}, x), "arrays": lambda: arrays(v, x),
                       "stats": lambda: stats(v, x)}, rounds, warmup=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 layers, 2 reps, few warm rounds")
    ap.add_argument("--reps", type=int, default=None, help="fresh-process rounds (default 4)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(one_first_call(int(args.child[0]), args.child[1]))
        return
    layers = 2 if args.quick else 8
    reps = args.reps or (2 if args.quick else 4)
    log(machine())
    first = first_calls(layers, reps)
    w = warm(layers, 6 if args.quick else 15)
    rows = []
    for variant in ("arrays", "stats"):
        r, lo, hi = paired(first[variant], first["plain"])
        wr, wlo, whi = paired(w[variant], w["plain"])
        rows.append((f"{layers}-layer d=256 transformer, batch 8x128", variant, f"{med(first['plain']):.0f}",
                     f"{med(first[variant]):.0f}", f"{r:.2f}x [{lo:.2f}-{hi:.2f}]", f"{med(w['plain']):.2f}",
                     f"{med(w[variant]):.2f}", f"{med(w[variant]) - med(w['plain']):+.2f}",
                     f"{wr:.2f}x [{wlo:.2f}-{whi:.2f}]"))
    print(machine())
    print_table(("model", "keep", "value_and_grad first ms", "inspect_grad first ms", "first ratio med [IQR]",
                 "value_and_grad warm ms", "inspect_grad warm ms", "warm overhead ms", "warm ratio med [IQR]"), rows)


if __name__ == "__main__":
    main()

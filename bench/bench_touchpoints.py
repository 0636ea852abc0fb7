"""What the private jax/flax touchpoints that exist for speed buy (``inspector/_compat.py``), each measured
against the same call with the touchpoint switched off, in interleaved rounds of one process.

- ``direct_call`` (jax's ``Compiled._params`` + ``create_cpp_call``): a cached ``fi.apply`` call goes straight
  into jax's C++ dispatch. Off: ``engine.runner.direct_call`` returns None, so the runner calls its
  ``jax.jit`` function (the public path).
- ``flax_flags`` (flax's ``Config._values`` dict): the flags a cached call reads. Off: the public attributes.

The model is tiny (width 4, batch 2, 50 input leaves): the call is all dispatch, where any Python in front of
jit shows. Ratios are per round (median [25th-75th percentile]) against plain ``jax.jit(nn.apply(...))``.

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
    from inspector import _compat
    from inspector.engine import runner as R

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(49):
                x = nn.Dense(4, use_bias=False)(x)
            return x

    model, x = MLP(), jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    plain = jax.jit(nn.apply(MLP.__call__, model))
    per_sample = 200

    original_direct, original_flags = R.direct_call, R._FLAX_FLAGS

    def refused(*a, **k):  # the touchpoint switched off: the runner keeps calling its jax.jit function
        return None

    def calls(f, flags=None, direct=True):
        def run():
            R._FLAX_FLAGS = flags if flags is not None else original_flags
            R.direct_call = original_direct if direct else refused
            out = None
            for _ in range(per_sample):
                out = f(v, x)
            R._FLAX_FLAGS, R.direct_call = original_flags, original_direct
            return out
        return run

    variants = {"plain jit": calls(plain), "fi.apply": calls(fi.apply(MLP.__call__, model)),
                "fi.apply, no direct_call": calls(fi.apply(MLP.__call__, model), direct=False),
                "fi.apply, flags by attribute": calls(fi.apply(MLP.__call__, model), _compat._PublicFlags())}
    times = interleave(variants, args.rounds, warmup=2, log=log, hot=args.hot)
    rows = []
    base = times["plain jit"]
    for name, ts in times.items():
        r, lo, hi = paired(ts, base)
        rows.append((name, f"{med(ts) / per_sample * 1000:.1f}", f"{r:.2f}x [{lo:.2f}-{hi:.2f}]"))
    print(f"\n{machine()}; {args.rounds} rounds of {per_sample} calls; 50 input leaves, tiny MLP")
    print_table(("variant", "µs per call", "vs plain jit"), rows)


if __name__ == "__main__":
    main()

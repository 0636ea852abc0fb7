"""Statistics of arrays sharded over 4 host devices (the device programs: no host path there),
under flax's CI settings, against numpy on the held values."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, ml_dtypes
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from inspector import stats
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b"))
    rng = np.random.default_rng(0)
    f = np.finfo(np.float32)
    raws = [rng.normal(size=(64, 96)).astype(np.float32) * 3 + 1,
            np.concatenate([np.full(3070, f.max, np.float32), [np.nan, -np.inf], np.zeros(3072)]).reshape(64, 96),
            (np.arange(64 * 96) + 2**31 - 7000).astype(np.int64).astype(np.int32).reshape(64, 96),
            rng.normal(size=(64, 96)).astype(ml_dtypes.bfloat16)]
    arrays = [jax.device_put(r, NamedSharding(mesh, P("a", "b"))) for r in raws]
    assert not stats.on_host(arrays)
    with jax.numpy_rank_promotion("raise"):
        rows = jax.device_get(stats.describe_many(arrays))
        summ = jax.device_get(jax.jit(stats.summarize)(arrays))
    exact = stats.unpack(rows, [a.dtype for a in arrays], [a.shape for a in arrays])
    summary = stats.unpack(summ, [a.dtype for a in arrays], [a.shape for a in arrays])
    for raw, s, c in zip(raws, exact, summary):
        floating = raw.dtype.kind == "f" or raw.dtype == ml_dtypes.bfloat16
        x = np.asarray(raw).astype(np.float64) if floating else np.asarray(raw, np.int64)
        fin = x[np.isfinite(x)]
        assert s.count == x.size and s.nan == np.isnan(x).sum() and s.neginf == (x == -np.inf).sum(), s
        assert s.zeros == (x == 0).sum() and s.min == fin.min() and s.max == fin.max(), s
        assert abs(s.mean - fin.mean()) <= 2e-5 * (abs(fin.mean()) + fin.std()), (s.mean, fin.mean())
        assert abs(s.std - fin.std()) <= 2e-5 * (abs(fin.mean()) + fin.std()), (s.std, fin.std())
        if c.trusted:  # a summary is exact where it says it can be trusted
            assert c.min == s.min and c.max == s.max and c.zeros == s.zeros
            assert abs(c.mean - s.mean) <= 2e-5 * (abs(s.mean) + s.std)
        full = stats.histogram(arrays[0], exact[0])
        assert sum(full.hist) == 4096 and full.hist == exact[0].hist
    assert not summary[1].trusted  # NaN and -inf: redone exactly by the caller
    b, a = arrays[2], jax.device_put(raws[2] + 1, NamedSharding(mesh, P("a", "b")))
    changed, mx, mean = stats.unpack_deltas(jax.device_get(stats.delta_exact(b, a)), [b.dtype])[0]
    assert changed == b.size and mx == 1 and abs(mean - 1) < 2e-5  # a float32 sum
    print("ok")
''')


def test_statistics_of_arrays_sharded_over_four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]

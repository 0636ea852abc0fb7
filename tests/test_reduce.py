"""Device statistics agree with numpy, for every supported dtype and non-finite values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inspector import reduce


def host_stats(a):
    floats, counts = jax.jit(lambda xs: reduce.describe(xs))([a])
    return reduce.unpack(floats, counts)[0]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.int8, jnp.bool_])
def test_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(37, 11)) * 3
    raw[raw < -2] = 0
    a = jnp.asarray(raw > 0 if dtype == jnp.bool_ else raw).astype(dtype)
    ref = np.asarray(a.astype(jnp.float32), dtype=np.float64)
    s = host_stats(a)
    assert s.count == ref.size
    np.testing.assert_allclose(s.mean, ref.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.std, ref.std(), rtol=1e-4, atol=1e-5)
    assert s.min == pytest.approx(ref.min()) and s.max == pytest.approx(ref.max())
    assert s.abs_max == pytest.approx(np.abs(ref).max())
    assert s.zeros == int((ref == 0).sum())
    assert (s.nan, s.posinf, s.neginf) == (0, 0, 0)
    assert sum(s.hist) == ref.size
    counts, _ = np.histogram(ref, bins=reduce.BINS, range=(ref.min(), ref.max()))
    assert s.hist[1:-1] == tuple(counts[1:-1])


def test_non_finite_values_are_counted_and_excluded():
    a = jnp.array([1.0, 2.0, jnp.nan, jnp.inf, -jnp.inf, -jnp.inf, 3.0, 0.0])
    s = host_stats(a)
    assert (s.nan, s.posinf, s.neginf, s.nonfinite) == (1, 1, 2, 4)
    finite = np.array([1.0, 2.0, 3.0, 0.0])
    assert s.mean == pytest.approx(finite.mean()) and s.std == pytest.approx(finite.std())
    assert (s.min, s.max) == (0.0, 3.0)
    assert sum(s.hist) == 4 and s.zeros == 1


def test_all_nan_and_empty():
    s = host_stats(jnp.full((3,), jnp.nan))
    assert s.nan == 3 and np.isnan(s.mean)
    e = host_stats(jnp.zeros((0, 4)))
    assert e.count == 0 and sum(e.hist) == 0


def test_prng_keys_are_skipped():
    assert not reduce.supported(jax.random.key(0))
    assert reduce.supported(jnp.ones(3, jnp.bfloat16)) and reduce.supported(np.ones(2, bool))
    assert not reduce.supported("text")


def test_deltas():
    b = jnp.array([1.0, 2.0, 3.0, jnp.nan])
    a = jnp.array([1.0, 2.5, 1.0, jnp.nan])
    changed, max_abs, mean_abs = np.asarray(jax.jit(reduce.deltas)([(b, a)]))[0]
    assert changed == 2 and max_abs == pytest.approx(2.0) and mean_abs == pytest.approx(2.5 / 4)


def test_batched_small_leaves_match_the_per_leaf_path_and_keep_order():
    rng = np.random.default_rng(1)
    arrays = [jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in [(300,), (5000,), (7, 3), (4100,)]]
    arrays[2] = arrays[2].at[0, 0].set(jnp.nan).at[1, 1].set(0.0)
    floats, counts = jax.jit(reduce.describe)(arrays)
    batched = reduce.unpack(floats, counts)
    single = [reduce.unpack(*[v[None] for v in reduce._one(a)])[0] for a in arrays]  # the per-leaf path
    for got, ref, a in zip(batched, single, arrays):
        assert got.count == a.size
        assert (got.nan, got.zeros, got.hist) == (ref.nan, ref.zeros, ref.hist)
        np.testing.assert_allclose([got.mean, got.std, got.min, got.max, got.abs_max],
                                   [ref.mean, ref.std, ref.min, ref.max, ref.abs_max], rtol=1e-4, atol=1e-6)


def test_many_small_leaves_compile_to_a_small_program():
    arrays = [jnp.ones((4,)) * i for i in range(2000)]
    hlo = jax.jit(reduce.describe).lower(arrays).as_text()
    assert hlo.count("reduce") < 200  # segment reductions, not 2000 x per-leaf reductions
    floats, counts = jax.jit(reduce.describe)(arrays)
    assert reduce.unpack(floats, counts)[1234].mean == 1234


@pytest.mark.parametrize("kind", ["normal", "relu", "offset", "int", "bool"])
def test_large_arrays_take_the_cheap_path_and_still_match_numpy(kind):
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(64, 33, 5)) * 2
    if kind == "relu":
        raw = np.maximum(raw, 0)
    if kind == "offset":  # mean far from zero, small spread: the one-pass variance must not cancel
        raw = 1000 + raw * 1e-2
    a = jnp.asarray(raw.astype(np.float32))
    if kind == "int":
        a = jnp.asarray(np.round(raw * 10)).astype(jnp.int32)
    if kind == "bool":
        a = jnp.asarray(raw > 0.5)
    assert a.size > reduce.SAMPLE
    ref = np.asarray(a.astype(jnp.float32), dtype=np.float64)
    s = host_stats(a)
    assert s.count == ref.size and s.nonfinite == 0
    np.testing.assert_allclose(s.mean, ref.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.std, ref.std(), rtol=1e-3, atol=1e-5)
    assert (s.min, s.max) == (pytest.approx(ref.min()), pytest.approx(ref.max()))
    assert s.abs_max == pytest.approx(np.abs(ref).max())
    assert s.zeros == int((ref == 0).sum())
    # the histogram comes from a spread sample, in the full array's [min, max] range
    assert s.hist_sample == sum(s.hist) and 0.9 * reduce.SAMPLE < s.hist_sample <= reduce.SAMPLE
    full, _ = np.histogram(ref, bins=reduce.BINS, range=(ref.min(), ref.max()))
    np.testing.assert_allclose(np.array(s.hist) / s.hist_sample, full / ref.size, atol=0.03)


def test_large_arrays_with_non_finite_values_are_counted_exactly():
    raw = np.random.default_rng(3).normal(size=(100, 100)).astype(np.float32)
    raw[3, 4], raw[50, 50], raw[99, 0], raw[7, 7] = np.nan, np.inf, -np.inf, 0.0
    s = host_stats(jnp.asarray(raw))
    finite = raw[np.isfinite(raw)].astype(np.float64)
    assert (s.nan, s.posinf, s.neginf, s.zeros) == (1, 1, 1, 1)
    assert s.hist_sample == 0 and sum(s.hist) == finite.size  # the exact path, every element
    np.testing.assert_allclose([s.mean, s.std, s.min, s.max], [finite.mean(), finite.std(), finite.min(),
                                                              finite.max()], rtol=1e-4)


def test_sample_positions_are_spread_over_every_axis():
    rows, cols = reduce._sample_positions((512, 256))
    assert len(set(zip(rows.tolist(), cols.tolist()))) == len(rows) > 0.9 * reduce.SAMPLE
    assert len(set(cols.tolist())) == 256 and len(set(rows.tolist())) == 512  # no stride lined up with an axis

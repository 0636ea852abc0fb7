"""Device statistics agree with numpy in float64 on the values each array holds.

Tolerances are the README's: min, max, abs_max, every count and the histogram are
exact; mean and std within ``RTOL[acc] * (|mean| + std)`` for float arrays and ``RTOL * std``
(plus the same of ``|mean|`` for the mean) for integer ones, where ``acc`` is the
accumulator (float32, or float64 for 64-bit arrays under x64).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from inspector import stats

RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
FLUSHES = bool(jax.jit(lambda x: x == 0)(jnp.float32(1e-40)))  # this device reads subnormals as 0


def held(a) -> np.ndarray:
    """What the device describes, as float64 (or Python ints for integers)."""
    x = np.asarray(a)
    if np.iscomplexobj(x):  # |z| in the array's own precision: beyond its range it is +inf
        with np.errstate(over="ignore"):
            x = np.abs(x).astype(np.float64)
    elif x.dtype == np.bool_:
        x = x.astype(np.int64)
    elif x.dtype.kind in "iu":
        return x.astype(object) if x.dtype.itemsize == 8 else x.astype(np.int64)
    x = x.astype(np.float64)
    if FLUSHES:
        wide = np.asarray(a).dtype == np.float64 or np.asarray(a).dtype == np.complex128
        tiny = np.finfo(np.float64 if wide else np.float32).tiny  # values are widened to 32 bits first
        x = np.where(np.abs(x) < tiny, np.copysign(0.0, x), x)
    return x


def check(a, s) -> None:
    """Every statistic of ``s`` against numpy on ``a``'s held values."""
    lay = stats.layout(a.dtype)
    x = held(a)
    flat = x.reshape(-1)
    assert s.count == flat.size
    if lay.kind == "int":
        ints = [int(v) for v in flat]
        assert (s.nan, s.posinf, s.neginf) == (0, 0, 0)
        assert s.zeros == sum(v == 0 for v in ints)
        if ints:
            assert (s.min, s.max) == (min(ints), max(ints))
            assert s.abs_max == max(abs(v) for v in ints)
            mean = sum(ints) / len(ints)
            std = math.sqrt(sum((v - mean) ** 2 for v in ints) / len(ints))
            tol = RTOL[lay.acc] * (std + abs(mean) * 1e-3) + 1e-9
            assert abs(s.mean - mean) <= tol + RTOL[lay.acc] * abs(mean) * 1e-3
            assert abs(s.std - std) <= tol
        return
    finite = flat[np.isfinite(flat)]
    assert s.nan == int(np.isnan(flat).sum())
    assert s.posinf == int((flat == np.inf).sum()) and s.neginf == int((flat == -np.inf).sum())
    assert s.zeros == int((flat == 0).sum())
    if not finite.size:
        assert math.isnan(s.mean)
        return
    if np.iscomplexobj(a):  # |z| is computed in the accumulator type: within one rounding
        assert s.min == pytest.approx(finite.min(), rel=1e-6) and s.max == pytest.approx(finite.max(), rel=1e-6)
    else:
        assert (s.min, s.max) == (finite.min(), finite.max())
        assert s.abs_max == np.abs(finite).max()
    mean, std = finite.mean(), finite.std()
    scale = abs(mean) + std
    assert abs(s.mean - mean) <= RTOL[lay.acc] * scale, (s.mean, mean)
    assert abs(s.std - std) <= RTOL[lay.acc] * scale, (s.std, std)
    assert s.of == ("|z|" if np.iscomplexobj(a) else "")


def check_hist(a, s) -> None:
    """The histogram is numpy's over the same elements with the edges the device used."""
    lay = stats.layout(a.dtype)
    x = held(a).reshape(-1)
    if s.hist_sample:
        x = held(a)[stats.rows._positions(tuple(np.shape(a)))]
    if not x.size:
        assert s.hist == (0,) * stats.rows.BINS
        return
    if lay.kind == "int":
        lo = s.min
        d = np.asarray([np.float64(lay.acc.type(int(v) - lo)) for v in x])
        edges = np.asarray([e - lo for e in s.hist_edges])  # exact: edges are lo + float
        counts, _ = np.histogram(d, bins=edges)
    elif np.iscomplexobj(a):
        assert sum(s.hist) == int(np.isfinite(x).sum())  # |z| rounds differently in numpy: totals only
        return
    else:
        x = x[np.isfinite(x)].astype(lay.acc).astype(np.float64)
        counts, _ = np.histogram(x, bins=np.asarray(s.hist_edges)) if x.size else (np.zeros(16, int), None)
    assert s.hist == tuple(int(c) for c in counts)


@pytest.fixture(autouse=True)
def device_histograms(monkeypatch):
    """Histograms by the device program here (on CPU they would be numpy's, tested by host_stats)."""
    monkeypatch.setattr(stats.host, "HOST", False)


def both(arrays):
    """Stats of concrete arrays by the exact program and by the in-call summary (with the
    exact redo that collect applies to untrusted rows)."""
    dtypes, shapes = [a.dtype for a in arrays], [np.shape(a) for a in arrays]
    exact = stats.unpack(jax.device_get(stats.describe_many(arrays)), dtypes, shapes)
    summary = stats.unpack(jax.device_get(jax.jit(stats.summarize)(arrays)), dtypes, shapes)
    summary = [s if s.trusted else e for s, e in zip(summary, exact)]
    summary = [s if s.hist else stats.histogram(a, s) for s, a in zip(summary, arrays)]  # as Leaf.full_stats
    host = [stats.host.host_stats(a) for a in arrays]
    return exact, summary, host


DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32,
          np.bool_, np.complex64]


def edge_values(dtype) -> list:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return [True, False]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return [info.min, info.max, 0, 1, info.max - 1]
    if dtype.kind == "c":
        f = np.finfo(np.float32)
        return [complex(f.max, 0), complex(0, f.min), complex(np.nan, 1), complex(np.inf, 0), 1j, 0]
    f = ml_dtypes.finfo(dtype)
    return [0.0, -0.0, f.max, f.min, f.tiny, f.smallest_subnormal, np.inf, -np.inf, np.nan, 1.0]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_with_its_edge_values(dtype):
    rng = np.random.default_rng(0)
    for n in (1, 7, 5000):
        base = rng.normal(size=n) * 100
        if np.dtype(dtype).kind == "c":
            raw = (base + 1j * rng.normal(size=n)).astype(dtype)
        elif np.dtype(dtype) == np.bool_:
            raw = base > 0
        elif np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            raw = np.clip(base, info.min, info.max).astype(dtype)
        else:
            raw = base.astype(dtype)
        edges = np.asarray(edge_values(dtype), dtype=dtype)
        raw[: min(n, edges.size)] = edges[: min(n, edges.size)]
        a = jnp.asarray(raw)
        for s in both([a]):
            check(a, s[0])
            check_hist(a, s[0])


def _one_after_another(x, axes):
    """A sum over ``axes`` that adds one element at a time: the order that loses the most."""
    rest = [d for d in range(x.ndim) if d not in axes]
    flat = jnp.transpose(x, (*axes, *rest)).reshape(-1, *[x.shape[d] for d in rest])
    return jax.lax.scan(lambda c, r: (c + r, None), jnp.zeros(flat.shape[1:], x.dtype), flat)[0]


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.float32, np.float16], ids=lambda d: np.dtype(d).name)
def test_exact_statistics_hold_in_any_order_of_summation(dtype, monkeypatch):
    """Extremes first, then thousands of ordinary values: a device that adds one element after
    another (a GPU's reduction order was enough) must not lose the ordinary values' share."""
    monkeypatch.setattr(stats.exact, "_add", _one_after_another)
    rng = np.random.default_rng(3)
    edges = np.asarray(edge_values(dtype)[:5] if np.dtype(dtype).kind in "iu" else
                       [float(ml_dtypes.finfo(dtype).max) / 2 ** i for i in (1, 2, 3)],
                       dtype)
    for n in (700, 5000, 20000):
        base = rng.normal(size=n) * 100 + (1000 if np.dtype(dtype).kind == "u" else 0)
        raw = base.astype(dtype)
        raw[:edges.size] = edges
        a = jnp.asarray(raw)
        dtypes, shapes = [a.dtype], [a.shape]
        grouped = stats.unpack(jax.device_get(jax.jit(stats.device.describe)([a])), dtypes, shapes)[0]
        alone = stats.unpack(jax.device_get(jax.jit(stats.exact._exact)(a))[None], dtypes, shapes)[0]
        for s in (grouped, alone):
            check(a, s)


def test_exact_sums_are_never_longer_than_a_row(monkeypatch):
    """Across an array's rows (4,096 elements each) the exact path adds 16 rows at a time, as a
    tree: a segment sum would add hundreds of rows one after another (atomics on a GPU)."""
    lengths = []

    def recorded(x, axes):
        lengths.append(math.prod(x.shape[a] for a in axes))
        return _one_after_another(x, axes)

    monkeypatch.setattr(stats.exact, "_add", recorded)
    rng = np.random.default_rng(4)
    raw = np.tile(rng.normal(size=4096).astype(np.float32) * 0.1 + 1.7, 300)  # 300 rows of equal sums
    a = jnp.asarray(raw)
    s = stats.unpack(jax.device_get(jax.jit(stats.device.describe)([a])), [a.dtype], [a.shape])[0]
    check(a, s)
    assert max(lengths) == stats.rows.SAMPLE and sorted(set(lengths)) == [16, stats.rows.SAMPLE]


def test_a_mix_of_dtypes_in_one_call_never_promotes():
    arrays = [jnp.asarray(np.array([100000, 70000], np.int32)), jnp.ones(3, jnp.float16),
              jnp.asarray(np.array([4e9, 3e9], np.uint32)), jnp.asarray(np.array([30001], np.int32)),
              jnp.ones(2, jnp.bfloat16), jnp.asarray(np.array([1 + 2j], np.complex64)), jnp.array([True, False])]
    for described in both(arrays):
        for a, s in zip(arrays, described):
            check(a, s)
        assert described[0].nonfinite == 0 and described[0].max == 100000
        assert described[2].min == 3_000_000_000 and described[3].mean == 30001


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.integers(0, 40), st.data()), min_size=1, max_size=4))
def test_property_any_arrays_any_mix(specs):
    arrays = []
    for dtype, n, data in specs:
        dt = np.dtype(dtype)
        if dt.kind == "c":
            parts = data.draw(hnp.arrays(np.float32, (2, n), elements=st.floats(width=32)))
            raw = (parts[0] + 1j * parts[1]).astype(dt)
        elif dt.kind == "f" or dt == ml_dtypes.bfloat16:
            raw = data.draw(hnp.arrays(np.float32, n, elements=st.floats(width=32))).astype(dt)
        else:
            raw = data.draw(hnp.arrays(dt, n))
        arrays.append(jnp.asarray(raw))
    for described in both(arrays):
        for a, s in zip(arrays, described):
            check(a, s)
            check_hist(a, s)


# -- named regressions ---------------------------------------------------------------
def one(a):
    return both([a])


def test_float32_extremes_do_not_overflow():
    f = np.finfo(np.float32)
    for raw in (np.full(16, f.min, np.float32), np.full(16, 1e38, np.float32),
                np.array([1e38, -1e38] * 8, np.float32), np.full(9, 1e20, np.float32)):
        a = jnp.asarray(raw)
        for (s,) in one(a):
            check(a, s)
            assert math.isfinite(s.mean) and math.isfinite(s.std) and s.nonfinite == 0


def test_an_outlier_does_not_cost_precision():
    raw = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    raw[0] = 3e4
    a = jnp.asarray(raw)
    for (s,) in one(a):
        assert s.std == pytest.approx(raw.astype(np.float64).std(), rel=1e-5)


def test_a_lone_subnormal_reads_as_the_device_reads_it():
    # found by the property test: a sum over one element is a copy, which the device does not flush
    for raw in ([2.37e-43], [-1e-40], [1e-45], [2.37e-43, 1.0], [[1e-40], [1e-39]]):
        for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
            a = jnp.asarray(np.asarray(raw, np.float32).astype(dtype))
            for (s,) in one(a):
                check(a, s)


def test_int32_near_the_top_keeps_its_spread():
    raw = (np.int64(2**31) - 1 - np.arange(4)).astype(np.int32)
    for (s,) in one(jnp.asarray(raw)):
        assert s.std == pytest.approx(np.asarray(raw, np.float64).std()) and s.min == 2**31 - 4


def test_bfloat16_statistics_are_of_the_rounded_values():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 128)).astype(np.float32)) * 3.3

    def f(x):
        y = (x * 1.37).astype(jnp.bfloat16)
        return y, stats.summarize([y])

    y, rows = jax.jit(f)(x)
    s = stats.unpack(jax.device_get(rows), [y.dtype], [y.shape])[0]
    held_values = np.asarray(y, np.float64)
    assert s.min == held_values.min() and s.max == held_values.max()


def test_rank_promotion_raise_and_x64():
    with jax.numpy_rank_promotion("raise"):
        for (s,) in one(jnp.arange(10.0)):
            assert s.mean == 4.5
    with jax.enable_x64(True):
        for dtype in (np.float64, np.int64, np.uint64, np.complex128):
            raw = np.array([1, 2, 3, 2**53 + 1 if dtype != np.float64 else 0.1], dtype=dtype)
            if dtype == np.uint64:
                raw[0] = np.iinfo(np.uint64).max
            a = jnp.asarray(raw)
            for (s,) in one(a):
                assert stats.layout(a.dtype).acc == np.float64
                check(a, s)
        # integer histograms: a span just under 2^53 (offsets from the minimum in int64), and one over it
        # (each offset a Python int); edges the oracle can read back exactly
        for raw in ([-2**52, 7, 2**52 - 1], [0, 5, 2**53 + 2]):
            a = jnp.asarray(np.array(raw * 50, np.int64))
            for (s,) in one(a):
                check(a, s)
                check_hist(a, s)


def test_empty_and_scalar():
    e = one(jnp.zeros((0, 4)))[0][0]
    assert e.count == 0 and sum(e.hist) == 0 and math.isnan(e.mean)
    s = one(jnp.float32(2.5))[0][0]
    assert (s.count, s.mean, s.std, s.min) == (1, 2.5, 0.0, 2.5)


def test_prng_keys_are_skipped():
    assert not stats.supported(jax.random.key(0))
    assert stats.supported(jnp.ones(3, jnp.bfloat16)) and stats.supported(np.ones(2, bool))
    assert not stats.supported("text")


def test_many_small_leaves_compile_to_a_small_program():
    arrays = [jnp.full((3,), float(i)) for i in range(2000)]
    hlo = jax.jit(stats.device.describe).lower(arrays).as_text()
    assert hlo.count(" reduce(") + hlo.count("scatter(") < 60
    described = stats.unpack(jax.device_get(stats.describe_many(arrays)), [a.dtype for a in arrays],
                             [a.shape for a in arrays])
    assert described[1234].mean == 1234 and described[1999].max == 1999


# -- differences -----------------------------------------------------------------------
def delta(before, after):
    words = jax.device_get(stats.delta_exact(before, after))
    return stats.unpack_deltas(words, [before.dtype])[0]


def test_deltas_are_decided_in_the_native_dtype():
    assert delta(jnp.array([33554432], jnp.int32), jnp.array([33554433], jnp.int32))[0] == 1
    assert delta(jnp.array([1 + 1j], jnp.complex64), jnp.array([1 + 2j], jnp.complex64))[0] == 1
    assert delta(jnp.array([1.0, jnp.nan]), jnp.array([1.0, jnp.nan]))[0] == 0
    key = jax.random.key(0)
    assert delta(key, jax.random.split(key)[0])[0] == 1 and delta(key, key)[0] == 0
    raw = jax.random.PRNGKey(0)
    assert delta(raw, jax.random.split(raw)[0])[0] > 0  # a raw key is two uint32 words


def test_delta_magnitudes_do_not_overflow():
    f = np.finfo(np.float32)
    changed, mx, mean = delta(jnp.array([f.max, 1.0]), jnp.array([f.min, 1.0]))
    assert changed == 1 and mx == pytest.approx(2 * float(f.max)) and mean == pytest.approx(float(f.max))
    i32 = np.iinfo(np.int32)
    changed, mx, _ = delta(jnp.array([i32.min], jnp.int32), jnp.array([i32.max], jnp.int32))
    assert changed == 1 and mx == pytest.approx(2**32 - 1)
    b, a = jnp.array([1.0, 2.0, 3.0, jnp.nan]), jnp.array([1.0, 2.5, 1.0, jnp.nan])
    changed, mx, mean = delta(b, a)
    assert changed == 2 and mx == pytest.approx(2.0) and mean == pytest.approx(2.5 / 4)


def test_views_say_what_complex_statistics_describe():
    from inspector.views import format as F

    (s,), *_ = one(jnp.array([3 + 4j, 0j], jnp.complex64))
    assert F.stats(s).startswith("of |z|: mean 2.5")


def test_host_deltas_agree_with_the_device():
    f = np.finfo(np.float32)
    pairs = [(jnp.array([f.max, 1.0, jnp.nan]), jnp.array([f.min, 1.0, jnp.nan])),
             (jnp.array([33554432], jnp.int32), jnp.array([33554433], jnp.int32)),
             (jnp.array([1 + 1j], jnp.complex64), jnp.array([1 + 2j], jnp.complex64)),
             (jnp.array([np.iinfo(np.int32).min], jnp.int32), jnp.array([np.iinfo(np.int32).max], jnp.int32)),
             (jnp.array([True, False]), jnp.array([True, True])),
             (jnp.ones(3, jnp.bfloat16), jnp.zeros(3, jnp.bfloat16))]
    key = jax.random.key(0)
    pairs.append((key, jax.random.split(key)[0]))
    for b, a in pairs:
        dev = delta(b, a)
        host = stats.host_delta(b, a)
        assert host[0] == dev[0] and host[1:] == pytest.approx(dev[1:], rel=1e-6)


def test_small_arrays_described_together_on_the_host_match_one_by_one():
    rng = np.random.default_rng(3)
    arrays = [jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in [(7,), (30, 4), (1,), (4096,)]]
    arrays += [jnp.array([1.0, jnp.nan], jnp.float32), jnp.ones(3, jnp.bfloat16), jnp.zeros((0,))]
    together = stats.host_stats_many(arrays)
    for a, s in zip(arrays, together):
        check(a, s)
        check_hist(a, s)
        assert s.hist == stats.host.host_stats(a).hist
    assert stats.host_stats_many(arrays[:1], hist=False)[0].hist == ()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([np.float16, ml_dtypes.bfloat16, np.float32]), st.integers(1, 60),
                          st.data()), min_size=1, max_size=5))
def test_property_small_float_arrays_of_mixed_types_together_match_one_by_one(specs):
    """float16 next to bfloat16 (no common numpy type) and the batched histogram's bins."""
    arrays = []
    for dtype, n, data in specs:
        raw = data.draw(hnp.arrays(np.float32, n, elements=st.floats(width=32)))
        with np.errstate(over="ignore"):
            arrays.append(jnp.asarray(raw.astype(dtype)))
    for a, s in zip(arrays, stats.host_stats_many(arrays)):
        one_by_one = stats.host.host_stats(a)
        assert (s.hist, s.hist_edges) == (one_by_one.hist, one_by_one.hist_edges)
        check(a, s)
        check_hist(a, s)


def test_tiny_values_keep_their_spread():
    raw = np.zeros(30, np.float32)
    raw[0] = 3.157391e-18
    for (s,) in one(jnp.asarray(raw).astype(jnp.bfloat16)):
        check(jnp.asarray(raw).astype(jnp.bfloat16), s)


def test_complex_magnitude_beyond_its_real_type_reads_as_inf():
    """|z| of complex64 is a float32: (3e38 + 3e38j) has no float32 magnitude, on every path."""
    x = jnp.asarray(np.array([3e38 + 3e38j, 3 + 4j], np.complex64))
    for host in (True, False):
        stats.host.HOST = host
        try:
            (s,), *_ = one(x)
        finally:
            stats.host.HOST = True
        assert s.of == "|z|" and s.posinf == 1 and s.max == 5.0 and s.mean == 5.0


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 7, 5000, 70000])
def test_trusted_summaries_count_zeros_and_subnormals_as_held(dtype, n, monkeypatch):
    """The in-call summary of a finite float array counts zeros without comparisons: it must
    agree with numpy on +-0 and subnormals (as the device reads them), also past the size
    whose count a float sum holds exactly (there it counts by comparison)."""
    f = ml_dtypes.finfo(dtype)
    rng = np.random.default_rng(n)
    raw = np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)).astype(dtype)
    special = np.asarray([-0.0, f.smallest_subnormal, -f.smallest_subnormal, f.tiny, -f.tiny, f.max / 4], dtype)
    raw[: min(n, special.size)] = special[: min(n, special.size)]
    a = jnp.asarray(raw)
    for limit in (None, 64):
        if limit is not None:
            monkeypatch.setattr(stats.summary, "countable", lambda dtype, limit=limit: limit)
        (s,) = stats.unpack(jax.device_get(jax.jit(stats.summarize)([a])), [a.dtype], [a.shape])
        held_values = held(a)
        assert s.zeros == int((held_values == 0).sum())
        assert (s.min, s.max) == (held_values.min(), held_values.max())
        if s.trusted:
            check(a, dataclasses.replace(s, hist=(), hist_sample=0))


def _summaries(arrays):
    rows = jax.device_get(jax.jit(stats.summarize)(arrays))
    return stats.unpack(rows, [a.dtype for a in arrays], [a.shape for a in arrays])


def _check_summary(a, s) -> None:
    """An in-call summary: zeros always exact; trusted only for finite arrays, and then exact."""
    h = held(a)
    assert s.zeros == int((h == 0).sum())
    if not np.isfinite(h).all():
        assert not s.trusted
    if s.trusted:
        check(a, dataclasses.replace(s, hist=(), hist_sample=0))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([np.float16, ml_dtypes.bfloat16, np.float32]), st.integers(2, 5),
       st.tuples(st.integers(1, 4), st.integers(1, 6)), st.data())
def test_property_small_arrays_of_one_shape_summarized_as_a_stack(dtype, k, shape, data):
    """Small float arrays of one shape are summarized as one stack (``stats.summary.SMALL``): each row
    still describes its own array, whatever the others hold."""
    arrays = [jnp.asarray(data.draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32))).astype(dtype))
              for _ in range(k)]
    arrays.append(jnp.ones((3,), dtype))  # another shape in the same call
    for a, s in zip(arrays, _summaries(arrays)):
        _check_summary(a, s)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32], ids=lambda d: np.dtype(d).name)
def test_stacked_summaries_keep_nan_inf_zeros_and_subnormals_to_their_own_array(dtype):
    f = ml_dtypes.finfo(dtype)
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(8, 16)).astype(dtype) for _ in range(5)]
    base[1][3, 4] = np.nan
    base[2][0, 0] = np.inf
    base[3][:] = 0
    base[4][:2] = f.smallest_subnormal
    arrays = [jnp.asarray(b) for b in base]
    stats = _summaries(arrays)
    for a, s in zip(arrays, stats):
        _check_summary(a, s)
    assert stats[0].trusted and not stats[1].trusted and not stats[2].trusted
    assert stats[3].zeros == 128 and stats[0].zeros == int((held(arrays[0]) == 0).sum())
    alone = [_summaries([a])[0] for a in arrays]
    assert [repr((s.min, s.max, s.zeros)) for s in stats] == [repr((s.min, s.max, s.zeros)) for s in alone]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32], ids=lambda d: np.dtype(d).name)
def test_a_sum_of_squares_that_underflows_is_not_trusted(dtype):
    """Found by the stacked-summary property test: ``[0, 4.7e-26]`` squares to 0 in float32, so
    a zero sum of squares alone must not vouch for std 0 (only a constant array has it)."""
    tiny = float(ml_dtypes.finfo(dtype).smallest_normal) if dtype != np.float32 else 4.6852e-26
    for raw in ([0.0, 4.6852e-26], [0.0, tiny], [3e-30, 3e-30]):
        a = jnp.asarray(np.asarray([raw], np.float32).astype(dtype))
        for arrays in ([a], [a, a * 0]):
            for s, x in zip(_summaries(arrays), arrays):
                _check_summary(x, s)


def test_host_bins_are_the_search_s_bins():
    """``host._bins`` (a guess from the offsets, then moved by the search's own comparisons) gives
    ``np.searchsorted(edges[1:BINS], s, 'right')`` for every value: few distinct values (on the edges),
    spans so narrow that edges repeat, float32's and float64's whole range, one value, a constant."""
    rng = np.random.default_rng(7)
    f32 = np.finfo(np.float32)
    cases = [rng.normal(size=4096).astype(np.float32),
             rng.integers(0, 3, size=999).astype(np.float32),
             (1 + rng.normal(size=500) * 1e-6).astype(np.float32),
             np.array([f32.max, -f32.max, 0, 1], np.float32),
             rng.normal(size=300) * 1e300,
             np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.0]),
             np.array([2.5], np.float32),
             np.full(40, -3.0, np.float32)]
    for s in cases:
        e = stats.host._host_edges(np.asarray([s.min()], s.dtype), np.asarray([s.max()], s.dtype))[0]
        np.testing.assert_array_equal(stats.host._bins(s, e), np.searchsorted(e[1:stats.rows.BINS], s, side="right"))

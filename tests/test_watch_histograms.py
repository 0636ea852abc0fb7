"""``fi.watch(..., histograms=True)`` (issue 24: histograms over steps): every recorded site's exact
counts per bin, checked against numpy in float64 on the same values for every dtype, on every route
a record takes (watch.jit's outputs, the traced step's callback, gated by ``every``, under vmap, merged
over microbatches), in bounded memory, with a plain-text oracle and clear errors."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.history import HIST_BINS, HIST_SIDE, History, Site, hist_edges
from inspector.views.histogram_text import bin_label


def np_hist(a) -> np.ndarray:
    """The oracle: counts of the finite values of ``a`` (as float64, |z| for complex) per bin of
    hist_edges(): exactly 0, else by sign and magnitude (a magnitude bin holds [lo, hi))."""
    a = np.abs(a) if np.iscomplexobj(a) else a
    a = np.asarray(a, np.float64).ravel() if not np.issubdtype(np.asarray(a).dtype, np.integer) \
        else np.asarray(a).ravel()
    out = np.zeros(HIST_BINS, np.int64)
    mags = hist_edges()[HIST_SIDE + 2:-1]  # 2^-30 ... 2^30
    for v in a.tolist():
        if isinstance(v, float) and not np.isfinite(v):
            continue
        if v == 0:
            out[HIST_SIDE] += 1
            continue
        k = int(np.searchsorted(mags, float(abs(v)), side="right")) if abs(v) < 2**62 else HIST_SIDE - 1
        out[HIST_SIDE + 1 + k if v > 0 else HIST_SIDE - 1 - k] += 1
    return out


EDGES = np.array([2.0**-30, 2.0**-30 * (1 - 2**-20), 2.0**-31, 4.0, 3.999, -4.0, -0.25, 1e-12, 2.0**30, 3e38,
                  -3e38, 0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 2.0**29 * 1.5], np.float64)
VALUES = {
    "float32": EDGES.astype(np.float32),
    "bfloat16": EDGES[np.abs(EDGES) < 3e38].astype(jnp.bfloat16),
    "float16": np.array([1e-7, 6e-5, 65504.0, -0.5, 0.0, np.nan, 3.0], np.float16),
    "int8": np.array([-128, 127, 0, 1, -1, 4, 3], np.int8),
    "int32": np.array([-2**31, 2**31 - 1, 2**30, 2**30 - 1, 0, 7], np.int32),
    "uint32": np.array([2**32 - 1, 2**30, 1, 0], np.uint32),
    "uint8": np.array([255, 0, 4], np.uint8),
    "complex64": np.array([3 + 4j, 0j, -1e-3j, np.nan + 1j], np.complex64),
    "normal": np.random.RandomState(0).standard_normal((64, 33)).astype(np.float32) * 1e-3,
}


class Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


MODEL = Dense()
X = jnp.asarray(np.random.RandomState(1).standard_normal((5, 4)).astype(np.float32)) * 100
PARAMS = MODEL.init(jax.random.key(0), X)["params"]
OUT = Site("activation", "Dense_0:__call__[0]")


def step_of(watch):
    def step_fn(leaves, x, step):
        y = watch.at(step).apply({"params": PARAMS}, x)
        watch.step(step, params=leaves)
        return y
    return step_fn


def check(h: History, step: int, leaves: dict, y, times: int = 1) -> None:
    for name, v in leaves.items():
        got = h.histogram(("param", name))
        i = int(np.flatnonzero(got.first == step)[0])
        np.testing.assert_array_equal(got.counts[i], times * np_hist(np.asarray(v)), err_msg=name)
    got = h.histogram(OUT)
    np.testing.assert_array_equal(got.counts[int(np.flatnonzero(got.first == step)[0])], times * np_hist(np.asarray(y)))


@pytest.mark.parametrize("route", ["watch.jit", "traced every=1", "traced every=2"])
def test_histograms_count_every_value_exactly(route):
    every = 2 if route.endswith("2") else 1
    watch = fi.watch(MODEL, every=every, histograms=True)
    step_fn = step_of(watch)
    run = watch.jit(step_fn) if route == "watch.jit" else jax.jit(step_fn)
    leaves = {k: jnp.asarray(v) for k, v in VALUES.items()}
    for step in range(3):
        y = run(leaves, X, step if route == "watch.jit" else jnp.int32(step))
    h = watch.history
    recorded = [0, 2] if every == 2 else [0, 1, 2]
    assert list(h.histogram(OUT).first) == recorded
    for step in recorded:
        check(h, step, leaves, y)
    # the scalars agree: the finite values binned are the count less the NaN and Inf
    for name in leaves:
        sc = h["param", name][0]
        assert h.histogram(("param", name)).counts[0].sum() == sc.count - sc.nan - sc.inf


def test_a_step_applied_twice_and_vmap_add_up():
    watch = fi.watch(MODEL, histograms=True)

    @jax.jit
    def twice(x, step):  # two microbatches at one step: their histograms are added
        a = watch.at(step).apply({"params": PARAMS}, x[:2])
        b = watch.at(step).apply({"params": PARAMS}, x[2:])
        return a, b

    a, b = twice(X, jnp.int32(0))
    per_example = jax.jit(jax.vmap(lambda xi, s: watch.at(s).apply({"params": PARAMS}, xi[None]), in_axes=(0, None)))
    y = per_example(X, jnp.int32(1))
    h = watch.history.histogram(OUT)
    np.testing.assert_array_equal(h.counts[0], np_hist(np.asarray(a)) + np_hist(np.asarray(b)))
    np.testing.assert_array_equal(h.counts[1], np_hist(np.asarray(y)))  # the whole batch, once


def test_float64_under_x64_is_binned_in_float64():
    code = textwrap.dedent('''
        import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
        jax.config.update("jax_enable_x64", True)
        import inspector as fi
        vals = {"f64": np.array([2.0**-30 * (1 - 2**-40), 2.0**-30, 1e-300, 1e300, -4.0 * (1 - 2**-50), 0.0]),
                "int64": np.array([-2**63, 2**62, 3], np.int64)}
        watch = fi.watch(nn.Dense(1), capture_intermediates=False, histograms=True)
        watch.jit(lambda p, s: watch.step(s, params=p), step="s")({k: jnp.asarray(v) for k, v in vals.items()}, 0)
        c = {k: watch.history.histogram(("param", k)).counts[0] for k in vals}
        nz = lambda v: {int(i): int(v[i]) for i in np.flatnonzero(v)}
        assert nz(c["f64"]) == {32: 1, 33: 2, 34: 1, 64: 1, 15: 1}, nz(c["f64"])
        assert nz(c["int64"]) == {0: 1, 64: 1, 49: 1}, nz(c["int64"])
        print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_histograms_stay_bounded_and_keep_every_count():
    h = History(max_histograms=64)
    sites = tuple(Site("grad", f"w{i}") for i in range(2))
    rng = np.random.RandomState(0)
    total = np.zeros((2, HIST_BINS), np.int64)
    for step in range(1000):
        c = rng.randint(0, 5, (2, HIST_BINS))
        total += c
        h.add_histograms(step, sites, c)
    got = h.histogram(("grad", "w0"))
    assert len(got.first) <= 32 and got.first[0] == 0 and got.last[-1] == 999
    assert (got.first[1:] == got.last[:-1] + 1).all()  # contiguous spans, none lost
    assert list(got.first[-8:]) == list(range(992, 1000))  # the latest steps at full resolution
    np.testing.assert_array_equal(got.counts.sum(axis=0), total[0])


def test_text_oracle_and_errors():
    h = History()
    c = np.zeros((1, HIST_BINS), np.int64)
    c[0, HIST_SIDE], c[0, HIST_SIDE + 16], c[0, HIST_SIDE - 16] = 2, 4, 1
    h.add_histograms(3, (Site("activation", "<b>x</b>"),), c)
    assert h.histogram("<b>x</b>").to_text().splitlines() == [
        "histograms of activation <b>x</b>: 1 row, bins -[2^-2, 2^0) to +[2^-2, 2^0) (zero at column 17)",
        "3             7  |▂               ▄               █|"]
    assert bin_label(HIST_SIDE + 1) == "+(0, 2^-30)" and bin_label(0) == "-[2^30, inf)"
    h.add_many(0, (Site("param", "w"),), np.zeros(1, h.snapshot().cells.dtype))
    with pytest.raises(KeyError, match=r"histograms=True"):
        h.histogram(("param", "w"))
    with pytest.raises(TypeError, match="histograms is True or False"):
        fi.watch(MODEL, histograms="yes")


# -- the charts' data ------------------------------------------------------------------------
def filled(steps: int = 300) -> History:
    h = History()
    sites = (Site("grad", "w"), Site("activation", "d:__call__[0]"))
    rng = np.random.default_rng(0)
    for step in range(steps):
        cells = np.zeros(2, h.snapshot().cells.dtype)
        cells["count"], cells["applications"] = 100, 1
        h.add_many(step, sites, cells)
        c = np.zeros((2, HIST_BINS), np.int64)
        c[:, HIST_SIDE + 1 + min(31, 14 + step // 30)] = rng.integers(1, 60, 2)
        c[:, HIST_SIDE - 16] = rng.integers(0, 9, 2)
        h.add_histograms(step, sites, c)
    return h


def test_the_charts_get_the_stored_counts_merged_exactly():
    from inspector.views.history_html import histogram, unb64

    h = filled()
    stored = h.histogram(("grad", "w"))
    got = histogram(stored, columns=64)
    counts = unb64(got["counts"], "<f8").reshape(len(got["steps"]), len(got["labels"]))
    occupied = np.flatnonzero(stored.counts.sum(axis=0))
    lo, hi = occupied[0], occupied[-1]
    assert got["labels"] == [bin_label(b) for b in range(lo, hi + 1)] and got["zero"] == HIST_SIDE - lo
    assert len(got["steps"]) <= 64 and got["steps"][0] == stored.first[0] and got["last"][-1] == stored.last[-1]
    # each column is the exact sum of the stored rows it spans
    for k, (a, b) in enumerate(zip(got["steps"], got["last"])):
        rows = (stored.first >= a) & (stored.last <= b)
        np.testing.assert_array_equal(counts[k], stored.counts[rows, lo:hi + 1].sum(axis=0))
    assert counts.sum() == stored.counts.sum()


def test_the_page_and_the_live_view_carry_the_histograms():
    import json
    import re

    from inspector.views.history_widget import WatchWidget

    h = filled()
    page = h.to_html()
    data = json.loads(re.search(r'<script type="application/json" id="fi-data">(.*?)</script>', page, re.S).group(1))
    assert set(data["hist"]) == {"0", "1"} and len(page.encode()) < 1_000_000
    w = WatchWidget(h)
    try:
        assert list(w.data["hist"]) == [str(w.selected)]  # the selected site's only
        w.select(Site("activation", "d:__call__[0]"))
        assert list(w.data["hist"]) == ["1"]
    finally:
        w.close()

"""fi.watch: per-step statistics recorded from inside a jitted train step, checked against numpy
in float64 on the same values; one compiled program; the first non-finite step and site; views."""

import os
import subprocess
import sys
import textwrap
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import inspector as fi
from inspector import capture as C
from inspector.history import History, Scalars, Site
from inspector.stats import array_stats

F32 = np.finfo(np.float32)


def oracle(x) -> dict:
    """The definitions, by numpy in float64 on the values ``x`` holds (|z| for complex)."""
    a = np.asarray(x)
    a = np.abs(a) if np.iscomplexobj(a) else a
    a = a.astype(np.float64).reshape(-1)
    fin = a[np.isfinite(a)]
    return dict(mean=fin.mean() if fin.size else 0.0, std=fin.std() if fin.size else 0.0,
                abs_max=np.abs(fin).max() if fin.size else 0.0, zeros=int((a == 0).sum()),
                nan=int(np.isnan(a).sum()), inf=int(np.isinf(a).sum()),
                norm=np.sqrt((fin * fin).sum()), count=a.size)


def assert_matches(got: Scalars, x, ratio_to=None) -> None:
    """``got`` agrees with :func:`oracle` within the README's tolerances (float32 accumulation)."""
    o = oracle(x)
    tol = 2e-5 * (abs(o["mean"]) + o["std"])
    assert got.count == o["count"] and got.nan == o["nan"] and got.inf == o["inf"], (got, o)
    assert got.zero_frac == (o["zeros"] / o["count"] if o["count"] else 0.0), (got, o)
    assert got.abs_max == pytest.approx(o["abs_max"], rel=1e-7, abs=0), (got, o)  # float32-exact
    assert abs(got.mean - o["mean"]) <= tol and abs(got.std - o["std"]) <= tol, (got, o)
    if o["norm"] > F32.max:
        assert got.norm == np.inf
    else:
        assert abs(got.norm - o["norm"]) <= 2e-5 * o["norm"], (got, o)
    if ratio_to is not None:  # undefined (None) where the parameter's norm is 0
        base = oracle(ratio_to)["norm"]
        assert got.ratio is None if base == 0 else got.ratio == pytest.approx(o["norm"] / base, rel=4e-5)


def stats_of(x) -> Scalars:
    from inspector.watch import _scalars

    return _scalars(np.asarray(jax.jit(array_stats)(x), np.float64), int(np.size(x)), None)


rng = np.random.default_rng(0)
ARRAYS = {
    "normal": rng.normal(size=(64, 96)).astype(np.float32) * 3 + 1,
    "offset": (rng.normal(size=(1000,)) + 1e4).astype(np.float32),
    "extremes": np.concatenate([np.full(3070, F32.max, np.float32), [np.nan, -np.inf], np.zeros(3072)]),
    "all_nan": np.full((5,), np.nan, np.float32),
    "relu": np.maximum(rng.normal(size=(33, 7)), 0).astype(np.float32),
    "int32": (np.arange(4096) - 2000).astype(np.int32),
    "bfloat16": rng.normal(size=(300,)).astype(ml_dtypes.bfloat16),
    "float16": np.array([1, -2.5, 0, 60000, np.inf], np.float16),
    "complex64": (rng.normal(size=50) + 1j * rng.normal(size=50)).astype(np.complex64),
    "empty": np.zeros((0, 3), np.float32),
    "squares underflow": np.array([0.0, 4.6852e-26], np.float32),  # a zero sum of squares, std not 0
}


@pytest.mark.parametrize("name", list(ARRAYS))
@pytest.mark.parametrize("count_by", ["arithmetic", "comparison"])
def test_array_stats_match_numpy(name, count_by, monkeypatch):
    """Zeros are counted by a float sum up to ``stats.summary.countable`` elements, by an integer count beyond."""
    if count_by == "comparison":
        monkeypatch.setattr(sys.modules["inspector.stats.scalars"], "countable", lambda dtype: 8)
    x = ARRAYS[name]
    assert_matches(stats_of(jnp.asarray(x)), x)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, blow):
        h = nn.relu(nn.Dense(16, name="hidden")(x))
        h = Blow(name="blow")(h, blow)
        return nn.Dense(1, name="out")(h)


class Blow(nn.Module):
    """Multiplies by ``factor``: an Inf factor injects non-finite values here, at a chosen step."""

    @nn.compact
    def __call__(self, h, factor):
        return h * factor


def data(steps: int):
    r = np.random.default_rng(1)
    return [(r.normal(size=(8, 4)).astype(np.float32), r.normal(size=(8, 1)).astype(np.float32))
            for _ in range(steps)]


def train(watch, steps: int, blow_at: int | None = None, lr: float = 0.05, traced_step: bool = True):
    """A plain optax loop with the watch's two lines; returns what each step saw, and the trace count."""
    model = watch.module
    tx = optax.sgd(lr)
    params = model.init(jax.random.key(0), jnp.ones((8, 4)), 1.0)["params"]
    opt = tx.init(params)
    traces = []

    def step_fn(params, opt, x, y, blow, step):
        traces.append(1)

        def loss_fn(p):
            out = watch.at(step).apply({"params": p}, x, blow)
            return jnp.mean((out - y) ** 2)

        grads = jax.grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        watch.step(step, params=params, grads=grads, updates=updates)
        return optax.apply_updates(params, updates), opt, grads, updates

    jitted = jax.jit(step_fn, static_argnames=() if traced_step else ("step",))
    seen = []
    for i, (x, y) in enumerate(data(steps)):
        blow = np.float32(np.inf if i == blow_at else 1.0)
        before = params
        params, opt, grads, updates = jitted(params, opt, x, y, blow, step=jnp.int32(i) if traced_step else i)
        seen.append((x, blow, before, grads, updates))
    return seen, len(traces)


def test_history_equals_numpy_on_the_same_steps():
    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense, Blow), every=1)
    seen, traces = train(watch, 4)
    assert traces == 1  # one compiled program for every step
    h = watch.history
    assert h.steps() == [0, 1, 2, 3]
    assert [s.name for s in h.sites("activation")] == ["hidden:__call__[0]", "blow:__call__[0]", "out:__call__[0]"]
    for step, (x, blow, params, grads, updates) in enumerate(seen):
        _, state = Net().apply({"params": params}, x, blow, capture_intermediates=C.types(nn.Dense, Blow),
                               mutable=["intermediates"])
        inter = state["intermediates"]
        for name, value in [("hidden:__call__[0]", inter["hidden"]["__call__"][0]),
                            ("blow:__call__[0]", inter["blow"]["__call__"][0]),
                            ("out:__call__[0]", inter["out"]["__call__"][0])]:
            assert_matches(h["activation", name][step], value)
        for kind, tree in (("param", params), ("grad", grads), ("update", updates)):
            for layer in ("hidden", "out"):
                for leaf in ("kernel", "bias"):
                    ratio_to = params[layer][leaf] if kind != "param" else None
                    got = h[kind, f"{layer}/{leaf}"][step]
                    assert_matches(got, tree[layer][leaf], ratio_to)
                    if kind == "param":
                        assert got.ratio is None
    assert h.first_nonfinite() is None


def test_nan_injected_at_step_k_is_reported_at_k_with_its_site():
    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense, Blow))
    _, traces = train(watch, 6, blow_at=3)
    assert traces == 1
    h = watch.history
    # relu zeros times Inf make NaN inside "blow"; "hidden" (earlier in execution order) is finite
    assert h.first_nonfinite() == (3, Site("activation", "blow:__call__[0]"))
    assert h["activation", "hidden:__call__[0]"][3].finite
    assert h["activation", "blow:__call__[0]"][3].nan > 0 or h["activation", "blow:__call__[0]"][3].inf > 0
    assert all(sc.finite for site in h.sites() for step, sc in h[site].items() if step < 3)
    assert "first non-finite: step 3, activation blow:__call__[0]" in h.to_text()


def test_every_n_records_only_those_steps_in_one_program():
    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense), every=3)
    _, traces = train(watch, 10)
    assert traces == 1
    assert watch.history.steps() == [0, 3, 6, 9]
    assert all(sorted(watch.history[s]) == [0, 3, 6, 9] for s in watch.history.sites())


def test_every_n_with_a_python_int_step():
    watch = fi.watch(Net(), capture_intermediates=False, every=4)
    _, traces = train(watch, 9, traced_step=False)
    assert traces == 9  # the caller's choice: a static step is gated in Python
    assert watch.history.steps() == [0, 4, 8]
    assert watch.history.sites("activation") == []


def test_apply_returns_exactly_what_flax_returns():
    class BN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(nn.Dense(3)(x))

    model, x = BN(), jnp.arange(12.0).reshape(4, 3)
    variables = model.init(jax.random.key(0), x)
    watch = fi.watch(model)
    expected = model.apply(variables, x, mutable=["batch_stats"])
    got = jax.jit(lambda v, x: watch.at(0).apply(v, x, mutable=["batch_stats"]))(variables, x)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_allclose, got, expected)
    y = jax.jit(lambda v, x: watch.at(0).apply(v, x, mutable=["batch_stats", "intermediates"]))(variables, x)
    assert "intermediates" in y[1] and "batch_stats" in y[1]
    assert [s.name for s in watch.history.sites("activation")] == ["Dense_0:__call__[0]",
                                                                   "BatchNorm_0:__call__[0]", "/:__call__[0]"]
    with pytest.raises(TypeError, match="capture_intermediates"):
        watch.at(0).apply(variables, x, capture_intermediates=True)
    with pytest.raises(ValueError, match="every"):
        fi.watch(model, every=0)


def test_text_table_and_html_escape_names():
    h = History()
    evil = "<script>alert(1)</script>\x1b[31m"
    h.add(0, Site("activation", evil), Scalars(1.0, 2.0, 3.0, 0.25, 0, 0, 4.0, None, 8))
    h.add(1, Site("activation", evil), Scalars(1.0, 2.0, 3.0, 0.25, 2, 1, 4.0, None, 8))
    h.add(1, Site("grad", "w"), Scalars(0.5, 0.1, 0.7, 0.0, 0, 0, 1.5, 0.01, 4))
    text = h.to_text()
    assert "\x1b" not in text and "<script>" in text  # text: control characters escaped
    lines = text.splitlines()
    assert lines[0].split() == ["step", "kind", "site", "mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm",
                                "ratio"]
    assert lines[1].split()[-8:] == ["1", "2", "3", "0.25", "0", "0", "4", "-"]
    assert lines[2].startswith("!") and lines[3].split()[-1] == "0.01"
    page = h.to_html()
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    data = page_data(page)
    assert data["sites"][0] == "activation <script>alert(1)</script>\\x1b[31m"  # shown as text
    assert "first non-finite: step 1" in data["status"] and data["heat"]["first"] == [0, 1]


def test_to_pandas():
    pd = pytest.importorskip("pandas")
    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense), every=2)
    train(watch, 4)
    df = watch.history.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[:3]) == ["step", "kind", "site"] and len(df) == 2 * len(watch.history.sites())
    row = df[(df.step == 2) & (df.kind == "grad") & (df.site == "hidden/kernel")].iloc[0]
    assert row["norm"] == watch.history["grad", "hidden/kernel"][2].norm


def test_to_pandas_without_pandas_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        History().to_pandas()


SHARDED = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, optax, flax.linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import inspector as fi
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(1)])
    x = jax.device_put(np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32),
                       NamedSharding(mesh, P("data")))
    params = model.init(jax.random.key(0), x)["params"]
    tx = optax.adam(1e-2)
    params, opt = jax.device_put((params, tx.init(params)), NamedSharding(mesh, P()))
    watch = fi.watch(model, every=2)
    traces = []
    @jax.jit
    def step(params, opt, x, i):
        traces.append(1)
        grads = jax.grad(lambda p: jnp.mean(watch.at(i).apply({"params": p}, x) ** 2))(params)
        updates, opt = tx.update(grads, opt, params)
        watch.step(i, params=params, grads=grads, updates=updates)
        return optax.apply_updates(params, updates), opt, grads
    for i in range(4):
        new, opt, grads = step(params, opt, x, jnp.int32(i))
        if i == 2:
            seen = (params, grads)
        params = new
    h = watch.history
    assert len(traces) == 1 and h.steps() == [0, 2], (traces, h.steps())
    p, g = seen
    k = np.asarray(g["layers_0"]["kernel"], np.float64)
    got = h["grad", "layers_0/kernel"][2]
    assert abs(got.mean - k.mean()) <= 2e-5 * (abs(k.mean()) + k.std()), (got, k.mean())
    assert got.abs_max == np.float32(np.abs(k).max())
    assert abs(got.ratio - np.linalg.norm(k) / np.linalg.norm(np.asarray(p["layers_0"]["kernel"], np.float64))) \\
        <= 4e-5 * got.ratio
    act = h["activation", "/:__call__[0]"][2]
    assert act.count == 16 and act.finite
    print("ok")
''')


def test_sharded_step():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_calls_returning_several_arrays_and_repeated_calls():
    class Pair(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x * 2, jnp.zeros_like(x)

    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            p = Pair(name="pair")
            a, _ = p(x)
            return p(a)[0]

    x = jnp.arange(6.0).reshape(2, 3)
    watch = fi.watch(Twice(), capture_intermediates=C.types(Pair))
    y = jax.jit(lambda x: watch.at(0).apply({}, x))(x)
    np.testing.assert_array_equal(y, Twice().apply({}, x))
    h = watch.history
    assert [s.name for s in h.sites()] == ["pair:__call__[0].0", "pair:__call__[0].1",
                                           "pair:__call__[1].0", "pair:__call__[1].1"]
    assert_matches(h["activation", "pair:__call__[1].0"][0], np.asarray(x) * 4)
    assert h["activation", "pair:__call__[0].1"][0].zero_frac == 1.0


def page_data(page: str) -> dict:
    """The data a history page embeds (JSON in its script element)."""
    import json
    import re

    m = re.search(r'<script type="application/json" id="fi-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_html_has_a_cell_per_recorded_site_and_step():
    from inspector.views.history_html import unb64

    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense), every=2)
    train(watch, 5)
    h = watch.history
    data = page_data(h.to_html())
    n, steps = len(h.sites()), h.steps()
    assert data["heat"]["steps"] == steps and data["heat"]["sites"] == list(range(n))
    j = h.sites().index(Site("grad", "hidden/kernel"))
    std = unb64(data["heat"]["values"]["std"], "<f4").reshape(n, len(steps))
    assert std[j, steps.index(4)] == np.float32(h["grad", "hidden/kernel"][4].std)
    assert data["charted"] == n and unb64(data["series"][str(j)]["y"]["std"], "<f8").tolist() == [
        h["grad", "hidden/kernel"][s].std for s in steps]


# -- the live widget ---------------------------------------------------------------
def test_live_widget_follows_the_history_while_the_loop_runs():
    """Drawn from another thread while steps are recorded, without the loop waiting for it: the
    status and heatmap follow, the first non-finite site takes the selection until a site is
    chosen, and the charts carry the chosen site's numbers."""
    from inspector.views.history_html import unb64

    watch = fi.watch(Net(), capture_intermediates=C.types(nn.Dense, Blow))
    w = watch.widget(interval=0.02, window=3)
    try:
        assert "0 recorded steps" in w.status and w.data["heat"]["steps"] == []
        train(watch, 6, blow_at=3)
        jax.effects_barrier()
        deadline = time.monotonic() + 300  # a guard against a hang only
        # every step is recorded now: wait for the widget's own thread to draw that last version (a
        # redraw while step 5 was still arriving may already say "6 recorded steps")
        while w._seen != watch.history.version and time.monotonic() < deadline:
            time.sleep(0.02)
        with w._drawing:  # and for that redraw to finish
            pass
        assert "6 recorded steps (0 to 5)" in w.status  # redrawn by its thread, nobody asked
        assert "first non-finite: step 3, activation blow:__call__[0]" in w.status
        assert w.data["first"]["step"] == 3
        assert w.site == Site("activation", "blow:__call__[0]")
        h = watch.history
        assert w.data["sites"] == [f"{s.kind} {s.name}" for s in h.sites()]
        assert w.data["heat"]["steps"] == list(range(6))  # a column per step
        lo, hi = w.data["range"]
        assert lo <= 3 <= hi == 5  # the latest `window` steps, widened to the first non-finite one
        # choosing a site sends its charts, and a redraw keeps the choice
        site = Site("grad", "hidden/kernel")
        w.select(site)
        s = w.data["series"][str(h.sites().index(site))]
        assert "ratio" in s["y"] and unb64(s["y"]["std"], "<f8")[5] == h[site][5].std
        w.refresh()
        assert w.site == site
    finally:
        w.close()
    w._thread.join(300)  # a guard against a hang only
    assert not w._thread.is_alive()  # closing stops the redraws


def test_live_widget_escapes_names():
    import json

    h = History()
    evil = "<img src=x onerror=alert(1)>\u202e"
    h.add(0, Site("activation", evil), Scalars(1.0, 2.0, 3.0, 0.25, 1, 0, 4.0, None, 8))
    from inspector.views.history_widget import WatchWidget

    w = WatchWidget(h, interval=60)
    try:
        assert w.data["sites"] == ["activation <img src=x onerror=alert(1)>\\u202e"]  # text, drawn as text
        assert "\u202e" not in json.dumps(w.data, ensure_ascii=False)
    finally:
        w.close()

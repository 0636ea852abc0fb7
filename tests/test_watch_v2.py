"""fi.watch at any scale (issue 23): a site applied several times in a step (microbatches unrolled
or in a scan, vmap, shard_map blocks, a retried step) gets one record of everything it saw;
integer statistics exact; clear errors for what the watch cannot take. Checked against numpy in
float64 on the same values (tests/test_watch.py's oracle)."""

import os
import subprocess
import sys
import textwrap
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_watch import assert_matches, oracle

import inspector as fi
from inspector import capture as C
from inspector.history import Site


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="out")(nn.relu(nn.Dense(8, name="hidden")(x)))


MODEL = MLP()
PARAMS = MODEL.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
HIDDEN = Site("activation", "hidden:__call__[0]")


def microbatches(nan_in: int | None = None) -> np.ndarray:
    x = np.random.default_rng(3).normal(size=(4, 5, 3)).astype(np.float32)  # 4 microbatches of 5
    if nan_in is not None:
        x[nan_in, 2, 1] = np.nan
    return x


def hidden_of(x: np.ndarray) -> np.ndarray:
    """The hidden layer's outputs for inputs ``x`` (any leading shape), by flax outside the watch."""
    _, state = MODEL.apply({"params": PARAMS}, x.reshape(-1, 3), capture_intermediates=C.types(nn.Dense),
                           mutable=["intermediates"])
    return np.asarray(state["intermediates"]["hidden"]["__call__"][0])


def accumulate(watch, scan: bool):
    """One jitted step of gradient accumulation over 4 microbatches (unrolled in Python or a scan)."""

    def grad_of(params, xb, step):
        return jax.grad(lambda p: jnp.mean(watch.at(step).apply({"params": p}, xb) ** 2))(params)

    @jax.jit
    def step_fn(params, xs, step):
        if scan:
            def body(acc, xb):
                return jax.tree.map(jnp.add, acc, grad_of(params, xb, step)), None
            grads, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), xs)
        else:
            grads = jax.tree.map(jnp.zeros_like, params)
            for i in range(xs.shape[0]):
                grads = jax.tree.map(jnp.add, grads, grad_of(params, xs[i], step))
        watch.step(step, params=params, grads=grads)
        return grads

    return step_fn


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_gradient_accumulation_records_every_microbatch(scan):
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    step_fn = accumulate(watch, scan)
    xs = microbatches()
    step_fn(PARAMS, xs, jnp.int32(0))
    xs_nan = microbatches(nan_in=0)
    step_fn(PARAMS, xs_nan, jnp.int32(1))
    h = watch.history
    got = h[HIDDEN][0]
    assert got.applications == 4 and got.count == 4 * 5 * 8
    assert_matches(got, hidden_of(xs))  # the four microbatches taken together
    bad = h[HIDDEN][1]
    assert bad.nan == oracle(hidden_of(xs_nan))["nan"] > 0 and bad.count == 160
    assert_matches(bad, hidden_of(xs_nan))
    # the activation, first in execution order, not a later gradient
    assert h.first_nonfinite() == (1, HIDDEN)


def test_vmap_records_the_whole_batch_once():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    x = microbatches()[0]  # 5 examples

    @jax.jit
    def per_example(params, x, step):
        def loss(p, xi):
            return jnp.sum(watch.at(step).apply({"params": p}, xi[None]) ** 2)
        grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, x)
        # an unbatched array under vmap is described once, not once per example
        jax.vmap(lambda xi: watch.step(step, params=params), in_axes=0)(x)
        return grads

    per_example(PARAMS, x, jnp.int32(0))
    h = watch.history
    got = h[HIDDEN][0]
    assert got.count == 5 * 8 and got.applications == 1
    assert_matches(got, hidden_of(x))
    kernel = h["param", "hidden/kernel"][0]
    assert kernel.count == 3 * 8 and kernel.applications == 1
    assert_matches(kernel, PARAMS["hidden"]["kernel"])


def test_vmap_with_every_n_and_a_static_step():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense), every=2)
    x = microbatches()[1]
    f = jax.jit(jax.vmap(lambda xi, s: watch.at(s).apply({"params": PARAMS}, xi[None]), in_axes=(0, None)))
    for s in range(3):
        f(x, jnp.int32(s))
    jax.vmap(lambda xi: watch.at(4).apply({"params": PARAMS}, xi[None]))(x)
    h = watch.history
    assert sorted(h[HIDDEN]) == [0, 2, 4]
    for s in (0, 2, 4):
        assert h[HIDDEN][s].applications == 1
        assert_matches(h[HIDDEN][s], hidden_of(x))


def test_a_retried_step_keeps_its_nan():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    f = jax.jit(lambda x, s: watch.at(s).apply({"params": PARAMS}, x))
    f(microbatches()[0], jnp.int32(0))
    f(microbatches(nan_in=1)[1], jnp.int32(1))  # the step fails...
    f(microbatches()[1], jnp.int32(1))  # ...and is run again on clean data
    h = watch.history
    assert h[HIDDEN][1].applications == 2 and h[HIDDEN][1].nan > 0
    assert h.first_nonfinite() == (1, HIDDEN)


SHARD_MAP = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    from jax.sharding import Mesh, PartitionSpec as P
    import inspector as fi
    from inspector import capture as C
    assert len(jax.devices()) == 4, jax.devices()

    class Scale(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x * self.param("w", nn.initializers.constant(3.0), (4,))

    model = Scale()
    params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32) + 2  # 64 elements
    for shape, names, spec in [((4,), ("d",), P("d")), ((2, 2), ("a", "b"), P("a"))]:
        mesh = Mesh(np.array(jax.devices()).reshape(shape), names)
        watch = fi.watch(model, capture_intermediates=C.types(Scale))

        def body(params, x, step):
            watch.step(step, params=params)  # replicated on every device: recorded once
            return watch.at(step).apply({"params": params}, x)

        f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), spec, P()), out_specs=spec))
        f(params, x, jnp.int32(0))
        h = watch.history
        got = h["activation", "/:__call__[0]"][0]
        y = x.astype(np.float64) * 3
        assert got.count == 64, (shape, got)
        assert abs(got.mean - y.mean()) <= 2e-5 * (abs(y.mean()) + y.std()), (got, y.mean())
        assert abs(got.std - y.std()) <= 2e-5 * (abs(y.mean()) + y.std()), (got, y.std())
        assert got.abs_max == np.float32(np.abs(y).max()) and got.norm == np.float32(np.linalg.norm(y)) or \\
            abs(got.norm - np.linalg.norm(y)) <= 2e-5 * np.linalg.norm(y), got
        w = h["param", "w"][0]
        assert w.count == 4 and w.applications == 1 and w.mean == 3.0, (shape, w)
    print("ok")
''')


def test_shard_map_records_the_global_array():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARD_MAP], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# -- integers exact --------------------------------------------------------------------------
INTS = {
    "int32 extremes": np.array([2147483647, -2147483648, 0, 7], np.int32),
    "int32 max": np.array([2147483647, 1, 0], np.int32),
    "int32 min": np.array([-2147483647, 5], np.int32),
    "uint32": np.array([4294967295, 3, 0], np.uint32),
    "uint32 odd": np.array([4294967293, 0], np.uint32),
    "int8": np.array([-128, 127, 0, 0], np.int8),
    "int16": np.array([-32768, 32767, 1], np.int16),
    "int16 positive": np.array([5, 32767], np.int16),
    "uint8": np.array([255, 0], np.uint8),
    "empty": np.zeros((0,), np.int32),
}


def exact_abs_max(a: np.ndarray) -> int:
    return max((abs(int(v)) for v in a.reshape(-1)), default=0)


def check_ints(got, a) -> None:
    o = oracle(a)
    assert got.abs_max == exact_abs_max(a), (got, exact_abs_max(a))
    assert got.count == a.size and got.nan == 0 and got.inf == 0
    assert got.zero_frac == (o["zeros"] / a.size if a.size else 0.0)
    tol = 2e-5 * (abs(o["mean"]) + o["std"])
    assert abs(got.mean - o["mean"]) <= tol and abs(got.std - o["std"]) <= tol, (got, o)


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("traced", [True, False, "watch.jit"], ids=["traced", "static", "watch.jit"])
def test_integer_abs_max_is_exact(every, traced):
    watch = fi.watch(MODEL, capture_intermediates=False, every=every)
    params = {name: jnp.asarray(a) for name, a in INTS.items()}
    params["float"] = jnp.asarray([1.5, -2.0], jnp.float32)
    if traced == "watch.jit":
        f = watch.jit(lambda p, s: watch.step(s, params=p), step="s")
    else:
        f = jax.jit(lambda p, s: watch.step(s, params=p), static_argnums=() if traced else (1,))
    f(params, jnp.int32(0) if traced is True else 0)
    h = watch.history
    for name, a in INTS.items():
        check_ints(h["param", name][0], a)
    assert h["param", "float"][0].abs_max == 2.0


def test_int64_abs_max_is_exact_under_x64():
    code = textwrap.dedent('''
        import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
        jax.config.update("jax_enable_x64", True)
        import inspector as fi
        # float32 would round all of these; History keeps abs_max as a float64, exact below 2**53
        vals = {"int64": np.array([2**62 + 2**20, -2**40 - 1, 0], np.int64),
                "int64 min": np.array([-2**63, 1], np.int64), "uint64": np.array([2**63 + 2**11, 2], np.uint64),
                "int32": np.array([-2**31, 2**31 - 1], np.int32)}
        watch = fi.watch(nn.Dense(1), capture_intermediates=False)
        jax.jit(lambda p, s: watch.step(s, params=p))({k: jnp.asarray(v) for k, v in vals.items()}, jnp.int64(0))
        # watch.jit: the rows leave as float32 words (no float64 array here), the int64 step and maxes by their bits
        watch.jit(lambda p, s: watch.step(s, params=p), step="s")({k: jnp.asarray(v) for k, v in vals.items()},
                                                                   2**40 + 3)
        # ... and with a float64 leaf, as float64 words (the step and the int32's max widened)
        with_f64 = dict({k: jnp.asarray(v) for k, v in vals.items()}, f64=jnp.asarray([1.5, -2.0 - 2**-40]))
        watch.jit(lambda p, s: watch.step(s, params=p), step="s")(with_f64, jnp.int32(7))
        assert watch.history["param", "f64"][7].abs_max == 2.0 + 2**-40
        for step in (0, 2**40 + 3, 7):
            for k, v in vals.items():
                got = watch.history["param", k][step]
                exact = max(abs(int(e)) for e in v)
                assert float(exact) == exact and got.abs_max == exact, (k, got, exact)
                assert got.count == v.size and got.nan == 0 and got.zero_frac == float(np.mean(v == 0)), (k, got)
        print("ok")
    ''')
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# -- clear errors ----------------------------------------------------------------------------
def test_a_step_that_is_not_one_integer_is_refused_at_trace_time():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    x = microbatches()[0]
    for bad, match in [(jnp.array([1, 2], jnp.int32), r"shape \(2,\)"), (jnp.float32(3.0), "float32"),
                       (np.array([[3]]), r"shape \(1, 1\)")]:
        with pytest.raises(TypeError, match=match):
            jax.jit(lambda s: watch.at(s).apply({"params": PARAMS}, x))(bad)
        with pytest.raises(TypeError, match=match):
            jax.jit(lambda s: watch.step(s, params=PARAMS))(bad)
    for bad in (2.7, 3.0, "3", True, None):
        with pytest.raises(TypeError, match="step must be an integer"):
            watch.at(bad)
        with pytest.raises(TypeError, match="step must be an integer"):
            watch.step(bad, params=PARAMS)
    assert watch.history.steps() == []


def test_every_must_be_a_positive_int():
    for bad in (2.5, 2.0, 0, -1, True, "2"):
        with pytest.raises(ValueError, match=f"every must be a positive int.*{bad!r}"):
            fi.watch(MODEL, every=bad)
    assert fi.watch(MODEL, every=np.int64(3)).every == 3


def test_capture_intermediates_of_the_wrong_type_is_named():
    for bad in ("everything", 3, ["Dense"]):
        with pytest.raises(TypeError, match=r"capture_intermediates must be True.*False.*inspector\.capture.*callable"
                                             rf".*{bad!r}"):
            fi.watch(MODEL, capture_intermediates=bad)
    watch = fi.watch(MODEL, capture_intermediates=lambda m, name: isinstance(m, nn.Dense))
    jax.jit(lambda x: watch.at(0).apply({"params": PARAMS}, x))(microbatches()[0])
    assert [s.name for s in watch.history.sites()] == ["hidden:__call__[0]", "out:__call__[0]"]


def test_python_numbers_are_recorded_and_other_leaves_named_once():
    watch = fi.watch(MODEL, capture_intermediates=False)
    state = {"lr": 0.125, "count": 7, "np": np.float32(2.5), "name": "adam", "flag": True, "w": jnp.ones(3)}
    with pytest.warns(UserWarning, match=r"skipped: flag \(bool\), name \(str\)"):
        watch.step(0, params=state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.jit(lambda w, s: watch.step(s, params={**state, "w": w}))(jnp.ones(3), jnp.int32(2))  # warned once
    h = watch.history
    for step in (0, 2):
        assert h["param", "lr"][step].mean == 0.125 and h["param", "lr"][step].count == 1
        assert h["param", "count"][step].abs_max == 7 and h["param", "np"][step].norm == 2.5
        assert h["param", "w"][step].count == 3
    assert {s.name for s in h.sites()} == {"lr", "count", "np", "w"}

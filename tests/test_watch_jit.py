"""``watch.jit`` (issue 23, items 2 and 5): a train step compiled as two programs. At a step the watch
does not record it runs the user's own program (same jaxpr, same bits as the unwatched step: MLP with
adam, a transformer block, dropout with BatchNorm); at a recorded step the statistics leave the step as
outputs and match numpy in float64 on the same arrays (tests/test_watch.py's oracle), as the traced
watch's do. No timing here: what runs at an unrecorded step is checked on the program itself."""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_watch import assert_matches
from test_watch_v2 import HIDDEN, MODEL, PARAMS, hidden_of, microbatches

import inspector as fi
from inspector import capture as C
from inspector.history import Site


class Net(nn.Module):
    """Dense layers with LayerNorm, gelu, dropout and BatchNorm: what changes fusion and needs rngs/state."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.gelu(nn.LayerNorm()(nn.Dense(16)(x)))
        x = nn.Dropout(0.3, deterministic=not train)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(4)(nn.relu(nn.Dense(16)(x)))


class Block(nn.Module):
    """One pre-norm transformer block over token embeddings, with a next-token head."""

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(32, 16)(tokens)
        n = nn.LayerNorm()(h)
        h = h + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=16)(n, n)
        h = h + nn.Dense(16)(nn.gelu(nn.Dense(32)(nn.LayerNorm()(h))))
        return nn.Dense(32)(nn.LayerNorm()(h))


def net_setup():
    model = Net()
    x = jax.random.normal(jax.random.key(1), (8, 6))
    y = jax.random.normal(jax.random.key(2), (8, 4))
    v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(3)}, x)
    tx = optax.adam(1e-2)
    state = (v["params"], v["batch_stats"], tx.init(v["params"]))

    def make(apply):
        def step_fn(state, step):
            params, stats, opt = state

            def loss(p):
                out, upd = apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.fold_in(jax.random.key(4), step)})
                return jnp.mean((out - y) ** 2), upd["batch_stats"]

            (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), stats, opt, grads, updates

        return step_fn

    return model, state, make


def block_setup():
    model = Block()
    tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, 32)
    params = model.init(jax.random.key(0), tokens)["params"]
    tx = optax.adamw(1e-2)
    state = (params, None, tx.init(params))

    def make(apply):
        def step_fn(state, step):
            params, _, opt = state

            def loss(p):
                logits = apply({"params": p}, tokens)
                logp = jax.nn.log_softmax(logits[:, :-1])
                return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

            grads = jax.grad(loss)(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), None, opt, grads, updates

        return step_fn

    return model, state, make


def mlp_setup():
    model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(32), nn.relu, nn.Dense(1)])
    x = jax.random.normal(jax.random.key(1), (16, 5))
    params = model.init(jax.random.key(0), x)["params"]
    tx = optax.adam(1e-2)
    state = (params, None, tx.init(params))

    def make(apply):
        def step_fn(state, step):
            params, _, opt = state
            grads = jax.grad(lambda p: jnp.mean(apply({"params": p}, x) ** 2))(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), None, opt, grads, updates

        return step_fn

    return model, state, make


SETUPS = {"mlp_adam": mlp_setup, "transformer_block": block_setup, "dropout_batchnorm": net_setup}


def watched_step(watch, make):
    """The user's step with the two changed lines: ``watch.at(step).apply`` and ``watch.step``."""
    def step_fn(state, step):
        apply_step = make(lambda *a, **k: watch.at(step).apply(*a, **k))
        params, stats, opt, grads, updates = apply_step(state, step)
        watch.step(step, params=state[0], grads=grads, updates=updates)
        return (params, stats, opt), grads

    return step_fn


def plain_step(make, model):
    step = make(model.apply)

    def step_fn(state, s):
        params, stats, opt, grads, _ = step(state, s)
        return (params, stats, opt), grads

    return step_fn


def bits(tree) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_a_window_that_records_nothing_is_bit_equal_to_the_unwatched_loop(setup):
    model, state0, make = SETUPS[setup]()
    watch = fi.watch(model, every=1000)
    watched = watch.jit(watched_step(watch, make))
    plain = jax.jit(plain_step(make, model))
    a = b = state0
    for step in range(1, 13):  # steps 1..12: none is a multiple of 1000
        a, ga = watched(a, step)
        b, gb = plain(b, step)
        assert bits((a, ga)) == bits((b, gb)), f"step {step} differs from the unwatched loop"
    assert watch.history.sites() == [] and watch.history.steps() == []


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_an_unrecorded_step_runs_the_unwatched_program(setup):
    """No statistics, no cond, no callback: the unrecorded program's jaxpr is the unwatched step's."""
    model, state0, make = SETUPS[setup]()
    watch = fi.watch(model, every=4)
    watched = watch.jit(watched_step(watch, make))
    plain = jax.jit(plain_step(make, model))
    unrecorded = watched._unrecorded.trace(state0, 1).jaxpr
    assert str(unrecorded) == str(plain.trace(state0, 1).jaxpr)
    recorded = str(watched._recorded.trace(state0, 4).jaxpr)
    assert "callback" not in recorded and "callback" not in str(unrecorded)


@pytest.mark.parametrize("way", ["watch.jit", "jax.jit"])
@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_watching_changes_no_bit_of_the_training(setup, way):
    """Recorded and unrecorded steps alike give the unwatched loop's bits (the statistics read their
    arrays behind an optimization barrier, so XLA fuses the step as it would unwatched): with
    ``watch.jit`` and with a traced step under ``jax.jit``, recording every step or every third."""
    model, state0, make = SETUPS[setup]()
    for every in (1, 3):
        watch = fi.watch(model, every=every)
        step_fn = watched_step(watch, make)
        watched = watch.jit(step_fn) if way == "watch.jit" else jax.jit(step_fn)
        plain = jax.jit(plain_step(make, model))
        a = b = state0
        for step in range(8):
            a, ga = watched(a, step if way == "watch.jit" else jnp.int32(step))
            b, gb = plain(b, step)
            assert bits((a, ga)) == bits((b, gb)), f"every={every}: step {step} differs from the unwatched loop"
        assert watch.history.steps() == list(range(0, 8, every))


def test_recorded_steps_match_numpy_and_the_traced_watch():
    model, state0, make = mlp_setup()
    fast = fi.watch(model, every=2)
    traced = fi.watch(model, every=2)
    f_fast = fast.jit(watched_step(fast, make))
    f_traced = jax.jit(watched_step(traced, make))
    state = state0
    kept = {}
    for step in range(5):
        new, grads = f_fast(state, step)
        f_traced(state, jnp.int32(step))
        kept[step] = (state[0], grads)
        state = new
    hf, ht = fast.history, traced.history
    assert hf.steps() == ht.steps() == [0, 2, 4]
    assert hf.sites() == ht.sites()
    for step in (0, 2, 4):
        params, grads = kept[step]
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            assert_matches(hf["param", name][step], np.asarray(leaf))
        for site in hf.sites():
            a, b = hf[site][step], ht[site][step]
            assert (a.count, a.nan, a.inf, a.zero_frac, a.abs_max) == (b.count, b.nan, b.inf, b.zero_frac, b.abs_max)
            assert a.mean == pytest.approx(b.mean, rel=1e-5, abs=1e-6 * (abs(b.std) + 1e-30))
            assert a.std == pytest.approx(b.std, rel=1e-5, abs=1e-7)
            assert a.norm == pytest.approx(b.norm, rel=1e-5)
            assert (a.ratio is None) == (b.ratio is None)
    g0 = kept[0][1]
    for path, leaf in jax.tree_util.tree_flatten_with_path(g0)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        p = kept[0][0]
        for k in path:
            p = p[k.key]
        assert_matches(hf["grad", name][0], np.asarray(leaf), ratio_to=np.asarray(p))


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_gradient_accumulation_under_watch_jit(scan):
    """Microbatches unrolled leave the step as outputs, in a scan through the callback: either way one
    record of all four, and the NaN in microbatch 0 is found at its site."""
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense), every=2)

    def step_fn(params, xs, step):
        def grad_of(xb):
            return jax.grad(lambda p: jnp.mean(watch.at(step).apply({"params": p}, xb) ** 2))(params)

        if scan:
            def body(acc, xb):
                return jax.tree.map(jnp.add, acc, grad_of(xb)), None
            grads, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), xs)
        else:
            grads = jax.tree.map(jnp.zeros_like, params)
            for i in range(xs.shape[0]):
                grads = jax.tree.map(jnp.add, grads, grad_of(xs[i]))
        watch.step(step, params=params, grads=grads)
        return grads

    f = watch.jit(step_fn)
    f(PARAMS, microbatches(), 0)
    f(PARAMS, microbatches(nan_in=0), 1)  # not recorded
    f(PARAMS, microbatches(nan_in=0), 2)
    h = watch.history
    assert h.steps() == [0, 2]
    got = h[HIDDEN][0]
    assert got.applications == 4 and got.count == 4 * 5 * 8
    assert_matches(got, hidden_of(microbatches()))
    bad = h[HIDDEN][2]
    assert bad.nan == 8 and bad.applications == 4  # the NaN row of microbatch 0: 8 hidden units
    assert h.first_nonfinite() == (2, Site("activation", "hidden:__call__[0]"))


def test_vmap_under_watch_jit_records_the_whole_batch():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    x = microbatches()[0]  # 5 examples

    def per_example(params, x, step):
        return jax.vmap(lambda xi: watch.at(step).apply({"params": params}, xi[None]))(x)

    f = watch.jit(per_example)
    out = f(PARAMS, x, 0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jax.vmap(lambda xi: MODEL.apply({"params": PARAMS},
                                                                                            xi[None]))(x)))
    got = watch.history[HIDDEN][0]
    assert got.count == 5 * 8 and got.applications == 1
    assert_matches(got, hidden_of(x))


def test_the_step_argument_in_every_form():
    x = microbatches()[0]

    def run(make_f, call):
        watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense), every=2)
        f = make_f(watch)
        for s in range(4):
            call(f, s)
        return watch.history.steps()

    def by_name(w):
        return w.jit(lambda params, x, step: w.at(step).apply({"params": params}, x))

    assert run(by_name, lambda f, s: f(PARAMS, x, s)) == [0, 2]
    assert run(by_name, lambda f, s: f(PARAMS, x, step=s)) == [0, 2]
    assert run(by_name, lambda f, s: f(PARAMS, x, jnp.int32(s))) == [0, 2]
    assert run(by_name, lambda f, s: f(PARAMS, x, np.int64(s))) == [0, 2]

    def by_position(w):
        return w.jit(lambda s, params, x: w.at(s).apply({"params": params}, x), step=0)

    assert run(by_position, lambda f, s: f(s, PARAMS, x)) == [0, 2]

    class State(dict):
        pass

    def from_state(w):
        def f(state, x):
            return w.at(state["step"]).apply({"params": state["params"]}, x)
        return w.jit(f, step=lambda state, x: state["step"])

    assert run(from_state, lambda f, s: f({"params": PARAMS, "step": jnp.int32(s)}, x)) == [0, 2]


def test_watch_jit_errors_name_what_was_passed():
    watch = fi.watch(MODEL)

    def f(params, x, i):
        return watch.at(i).apply({"params": params}, x)

    with pytest.raises(TypeError, match=r"no parameter named 'step'.*params, x, i"):
        watch.jit(f)
    with pytest.raises(TypeError, match="out_shardings"):
        watch.jit(f, step="i", out_shardings=None)
    with pytest.raises(TypeError, match="step must name"):
        watch.jit(f, step=1.5)
    g = watch.jit(f, step="i")
    x = microbatches()[0]
    with pytest.raises(TypeError, match="float 2.5"):
        g(PARAMS, x, 2.5)
    with pytest.raises(TypeError, match=r"shape \(2,\)"):
        g(PARAMS, x, jnp.arange(2))
    with pytest.raises(TypeError, match="has no step argument 'i'"):
        g(PARAMS, x)
    out = g(PARAMS, x, 3)  # the notebook keeps working
    np.testing.assert_array_equal(np.asarray(out), np.asarray(MODEL.apply({"params": PARAMS}, x)))


def test_inside_another_transform_the_step_records_as_traced():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense), every=2)
    x = microbatches()[0]
    f = watch.jit(lambda params, x, step: watch.at(step).apply({"params": params}, x))

    @jax.jit
    def outer(params, x, step):
        return f(params, x, step)

    for s in range(3):
        outer(PARAMS, x, jnp.int32(s))
    h = watch.history
    assert h.steps() == [0, 2]
    assert_matches(h[HIDDEN][2], hidden_of(x))


def test_static_and_donated_arguments_pass_through():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    x = microbatches()[0]

    def f(params, x, step, scale):
        return watch.at(step).apply({"params": params}, x * scale)

    g = watch.jit(f, static_argnames="scale")
    out = g(PARAMS, x, 0, 2.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(MODEL.apply({"params": PARAMS}, x * 2.0)))
    assert_matches(watch.history[HIDDEN][0], hidden_of(x * 2.0))
    assert g.__name__ == "f" and "every=1" in repr(g)


def test_the_history_holds_every_dispatched_step_and_the_live_view_follows():
    watch = fi.watch(MODEL, capture_intermediates=C.types(nn.Dense))
    x = microbatches()[0]
    f = watch.jit(lambda params, x, step: watch.at(step).apply({"params": params}, x))
    for s in range(5):
        f(PARAMS, x, s)
    assert watch.history.steps() == [0, 1, 2, 3, 4]  # read: waits for all of them
    for s in range(5, 8):
        f(PARAMS, x, s)
    jax.effects_barrier()
    w = watch.widget(interval=3600)  # its own thread will not run during the test
    try:
        w._sync()  # what the view's thread calls before it looks: brings in what is ready
        jax.block_until_ready(f(PARAMS, x, 8))
        # The step's statistics may still be on their way (a busy machine): the view's sync never waits, so
        # it is asked again until they are in, as its thread would (bounded: a lost step fails the test).
        for _ in range(600):
            w._sync()
            if 8 in watch._history.steps():
                break
            time.sleep(0.1)
        assert 8 in watch._history.steps()
    finally:
        w.close()


def test_a_watch_filter_that_captures_nothing_warns_with_the_closest_path():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="decoder")(nn.Dense(4, name="encoder")(x))

    model, x = Net(), jnp.ones((1, 3))
    v = model.init(jax.random.key(0), x)
    watch = fi.watch(model, capture_intermediates=C.paths("encodr/**"))
    f = watch.jit(lambda v, x, step: watch.at(step).apply(v, x))
    with pytest.warns(fi.CaptureFilterWarning, match=r"encodr.*closest: 'encoder"):
        f(v, x, 0)
    assert watch.history.sites() == []
    good = fi.watch(model, capture_intermediates=C.paths("encoder"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fi.CaptureFilterWarning)
        good.jit(lambda v, x, step: good.at(step).apply(v, x))(v, x, 0)
    assert [s.name for s in good.history.sites()] == ["encoder:__call__[0]"]

"""The direct path of a cached drop-in call: after a signature has run twice, ``fi.apply`` calls its
executable through jax's C++ dispatch. Any call that is not that signature (shape, dtype, key order,
container type, a Python scalar for an array, jax's config, flax's ``return_frozendict`` flag, the
caller's own trace) must still get exactly flax's result, from the general path."""

from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import inspector as fi


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, extra):
        y = nn.Dense(3)(x)
        self.sow("intermediates", "y", y)
        return {"z": y * extra["s"], "a": y.sum(axis=-1) + extra["t"]}


def _setup():
    m = Net()
    x = jnp.ones((2, 4))
    extra = {"s": jnp.float32(2.0), "t": jnp.ones(())}
    return m, m.init(jax.random.key(0), x, extra), x, extra


def _same(ours, theirs):
    assert repr(jax.tree.map(lambda a: (type(a).__name__, np.asarray(a).dtype, np.asarray(a).tolist()), ours)) == \
        repr(jax.tree.map(lambda a: (type(a).__name__, np.asarray(a).dtype, np.asarray(a).tolist()), theirs))


def _warm(run, *args):
    for _ in range(3):
        run(*args)
    assert run.direct.current is not None  # the direct path is what these tests hold to flax's result


def _made_direct(run, primed, *args):
    run(*args)
    run(*args)  # the direct path is made here, and primed by its first call
    if primed:
        run(*args)
    assert run.direct.current is not None


def test_the_direct_path_returns_flaxs_result_with_flaxs_key_order():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m, mutable=["intermediates"])
    _warm(run, v, x, extra)
    ours, theirs = run(v, x, extra), nn.apply(fn, m, mutable=["intermediates"])(v, x, extra)
    assert list(ours[0]) == list(theirs[0]) == ["z", "a"]
    _same(ours, theirs)
    assert run.traces == 1


@pytest.mark.parametrize("change", ["shape", "dtype", "key order", "frozendict", "python scalar", "list for tuple",
                                    "weak type", "none for array"])
def test_any_other_signature_leaves_the_direct_path(change):
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run, flax_fn = fi.apply(fn, m), nn.apply(fn, m)
    _warm(run, v, x, extra)
    args = {
        "shape": (v, jnp.ones((5, 4)), extra),
        "dtype": (v, x.astype(jnp.bfloat16), extra),
        "key order": (v, x, {"t": extra["t"], "s": extra["s"]}),
        "frozendict": (FrozenDict(v), x, extra),
        "python scalar": (v, x, {"s": 2.0, "t": extra["t"]}),
        "list for tuple": (v, x, {"s": extra["s"], "t": [extra["t"]]}),  # flax raises: so must we
        "weak type": (v, x, {"s": jnp.asarray(2.0), "t": extra["t"]}),
        "none for array": (v, x, {"s": extra["s"], "t": None}),
    }[change]
    try:
        theirs = flax_fn(*args)
    except Exception as e:  # noqa: BLE001 - then ours raises the same
        with pytest.raises(type(e)):
            run(*args)
    else:
        _same(run(*args), theirs)
    _same(run(v, x, extra), flax_fn(v, x, extra))  # and the first signature still right afterwards


def test_a_key_order_change_inside_the_variables_reaches_flax():
    class Two(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x) + nn.Dense(2)(x)

    m, x = Two(), jnp.ones((1, 3))
    v = m.init(jax.random.key(0), x)
    rev = {"params": dict(reversed(list(v["params"].items())))}
    fn = lambda m, x: m(x)
    run, flax_fn = fi.apply(fn, m, mutable=["params"]), nn.apply(fn, m, mutable=["params"])
    _warm(run, v, x)
    for variables in (rev, v, rev):
        ours, theirs = run(variables, x), flax_fn(variables, x)
        assert list(ours[1]["params"]) == list(theirs[1]["params"])
        _same(ours, theirs)


@pytest.mark.parametrize("primed", [False, True])
def test_jax_config_changes_are_seen_by_the_direct_path(primed):
    class Broadcasting(nn.Module):
        @nn.compact
        def __call__(self, x, b):
            return nn.Dense(3)(x) + b  # (2, 3) + (3,): rank promotion

    m, x, b = Broadcasting(), jnp.ones((2, 4)), jnp.ones(3)
    v = m.init(jax.random.key(0), x, b)
    fn = lambda m, x, b: m(x, b)
    run = fi.apply(fn, m)
    _made_direct(run, primed, v, x, b)
    with jax.numpy_rank_promotion("raise"):
        with pytest.raises(ValueError, match="rank_promotion"):
            nn.apply(fn, m)(v, x, b)
        with pytest.raises(ValueError, match="rank_promotion"):
            run(v, x, b)
    _same(run(v, x, b), nn.apply(fn, m)(v, x, b))


def test_flaxs_return_frozendict_flag_is_seen_by_the_direct_path():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run, flax_fn = fi.apply(fn, m, mutable=["intermediates"]), nn.apply(fn, m, mutable=["intermediates"])
    _warm(run, v, x, extra)
    for frozen in (True, False, True):
        with flax.config.temp_flip_flag("return_frozendict", frozen):
            ours, theirs = run(v, x, extra), flax_fn(v, x, extra)
            assert type(ours[1]) is type(theirs[1])
            _same(ours, theirs)


@pytest.mark.parametrize("primed", [False, True])
def test_inside_the_callers_trace_the_direct_path_stages_like_flax(primed):
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m)
    _made_direct(run, primed, v, x, extra)
    seen = []

    @jax.jit
    def outer():
        out = run(v, x, extra)  # concrete inputs, closed over
        seen.append(type(out["z"]))
        return out

    _same(outer(), nn.apply(fn, m)(v, x, extra))
    assert issubclass(seen[0], jax.core.Tracer)
    shapes = jax.eval_shape(lambda: run(v, x, extra))
    assert shapes == jax.eval_shape(lambda: nn.apply(fn, m)(v, x, extra))
    assert run.compiles == 1


def test_alternating_signatures_all_get_flaxs_result_and_compile_once_each():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run, flax_fn = fi.apply(fn, m), nn.apply(fn, m)
    xs = [jnp.ones((2, 4)), jnp.ones((3, 4)), 2 * jnp.ones((2, 4))]  # the first signature again
    for i in range(60):
        xi = xs[i % 3] if i < 30 else xs[(i // 7) % 2]
        _same(run(v, xi, extra), flax_fn(v, xi, extra))
    assert run.traces == 2 and run.compiles == 2


def test_an_evicted_signature_takes_its_direct_path_with_it():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m, cache_size=1)
    _warm(run, v, x, extra)
    y = jnp.ones((7, 4))
    run(v, y, extra)  # one structure over the limit: its program starts afresh
    assert run.direct.current is None and run.cached_signatures == 0
    _same(run(v, x, extra), nn.apply(fn, m)(v, x, extra))


class Pair(NamedTuple):
    first: Any
    second: Any


@flax.struct.dataclass
class Box:
    table: Any
    scale: Any


class Containers(nn.Module):
    @nn.compact
    def __call__(self, p):
        y = nn.Dense(2)(p.first["x"])
        first = Pair({"z": y, "a": y + 1}, Box({"m": y * 2, "b": y}, p.second))
        return first, {"q": y, "c": [Pair(y, {"w": y, "e": y})]}


def test_dicts_inside_namedtuples_and_dataclasses_keep_flaxs_key_order():
    m = Containers()
    p = Pair({"x": jnp.ones((1, 3)), "u": jnp.zeros(())}, jnp.ones(()))
    v = m.init(jax.random.key(0), p)
    fn = lambda m, p: m(p)
    run = fi.apply(fn, m)
    theirs = nn.apply(fn, m)(v, p)
    order = lambda out: [list(out[0].first), list(out[0].second.table), list(out[1]), list(out[1]["c"][0].second)]
    for _ in range(3):  # the general path, then the direct one
        ours = run(v, p)
        assert order(ours) == order(theirs) == [["z", "a"], ["m", "b"], ["q", "c"], ["w", "e"]]
        assert type(ours[0]) is Pair and type(ours[0].second) is Box
        _same(ours, theirs)
    for f in (fi.init_with_output, fi.init):
        ours, theirs = f(fn, m)(jax.random.key(0), p), getattr(nn, f.__name__)(fn, m)(jax.random.key(0), p)
        _same(ours, theirs)
    in_order = lambda m, p: jnp.stack([a.sum() for a in p.first.values()])  # the input dict's order, as flax sees it
    for _ in range(3):
        _same(fi.apply(in_order, m)(v, p), nn.apply(in_order, m)(v, p))
    np.testing.assert_array_equal(fi.apply(in_order, m)(v, p), [3.0, 0.0])


class Sorted(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(2)(x)
        return {"a": y, "b": [y, (y * 2,)], "c": Pair(y, FrozenDict({"d": y, "e": y + 1}))}


def test_a_result_in_sorted_key_order_is_built_by_jaxs_dispatch_as_flax_builds_it():
    m, x = Sorted(), jnp.ones((1, 3))
    v = m.init(jax.random.key(0), x)
    fn = lambda m, x: m(x)
    run = fi.apply(fn, m)
    _warm(run, v, x)
    assert run.direct.current.build is None
    ours, theirs = run(v, x), nn.apply(fn, m)(v, x)
    assert type(ours["b"][1]) is tuple and type(ours["c"]) is Pair and type(ours["c"].second) is FrozenDict
    _same(ours, theirs)


def test_typed_prng_keys_take_the_plain_paths_and_each_key_gets_flaxs_draw():
    class Dropped(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dropout(0.5, deterministic=False)(nn.Dense(8)(x))

    m, x = Dropped(), jnp.ones((4, 8))
    v = m.init(jax.random.key(0), x)
    fn = lambda m, x: m(x)
    run, flax_fn = fi.apply(fn, m), nn.apply(fn, m)
    keys = [jax.random.key(i) for i in range(6)] + [jax.random.PRNGKey(7), jax.random.key(8, impl="rbg")]
    for i, key in enumerate(keys):
        _same(run(v, x, rngs={"dropout": key}), flax_fn(v, x, rngs={"dropout": key}))
        if i == 4:
            assert run.direct.current is not None  # new keys of one signature: the direct path
    assert run.traces == 3  # typed threefry keys, raw uint32 keys, rbg keys


def test_the_callers_own_transforms_leave_the_direct_path_in_place():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m)
    _warm(run, v, x, extra)
    direct = run.direct.current
    loss = lambda v: run(v, x, extra)["z"].sum()
    for _ in range(3):  # each grad traces the runner with tracers: flax runs there
        g = jax.grad(loss)(v)
    want = jax.grad(lambda v: nn.apply(fn, m)(v, x, extra)["z"].sum())(v)
    _same(g, want)
    assert run.direct.current is direct
    _same(run(v, x, extra), nn.apply(fn, m)(v, x, extra))


def _slowed_direct_call(monkeypatch, before):
    """``direct_call`` as the runner calls it, with ``before()`` run first."""
    import inspector.engine.direct as run_module

    original = run_module.direct_call
    monkeypatch.setattr(run_module, "direct_call", lambda *a: (before(), original(*a))[1])


def test_a_slow_machine_still_gets_the_direct_path(monkeypatch):
    import time

    _slowed_direct_call(monkeypatch, lambda: time.sleep(0.2))  # a busy CPU: slow, but nothing compiled
    m, v, x, extra = _setup()
    run = fi.apply(lambda m, x, e: m(x, e), m)
    _warm(run, v, x, extra)


def test_a_compile_on_the_way_to_the_direct_path_gives_it_up(monkeypatch):
    fresh = iter(range(100))
    _slowed_direct_call(monkeypatch, lambda: jax.jit(lambda a: a + next(fresh)).lower(1.0).compile())
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m)
    for _ in range(4):
        _same(run(v, x, extra), nn.apply(fn, m)(v, x, extra))
    assert run.direct.current is None and run.direct.backoff == -1


def test_equal_drop_ins_share_a_runner_unless_a_flax_flag_differs():
    m, v, x, extra = _setup()
    fn = lambda m, x, e: m(x, e)
    run = fi.apply(fn, m)
    assert fi.apply(fn, m) is run
    for flag in ("preserve_adopted_names", "return_frozendict"):
        with flax.config.temp_flip_flag(flag, not getattr(flax.config, f"flax_{flag}")):
            flipped = fi.apply(fn, m)
            assert flipped is not run and fi.apply(fn, m) is flipped
            _same(flipped(v, x, extra), nn.apply(fn, m)(v, x, extra))
    assert fi.apply(fn, m) is run


def test_the_flags_a_shared_run_is_keyed_on_are_every_flag_flax_declares():
    from flax import configurations

    from inspector.api import flax_flags

    declared = {h.name for h in vars(configurations).values() if isinstance(h, configurations.FlagHolder)}
    flags = dict(flax_flags())
    assert set(flags) == declared and "flax_preserve_adopted_names" in flags
    for frozen in (True, False):
        with flax.config.temp_flip_flag("return_frozendict", frozen):
            assert dict(flax_flags())["flax_return_frozendict"] is frozen

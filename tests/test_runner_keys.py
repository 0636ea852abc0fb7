"""Static (non-array) arguments are keyed by value and type, never by identity: every
result equals flax's own (plain ``nn.apply``), call after call."""

import dataclasses
import enum
import math
import threading

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

import inspector as fi
from inspector.engine.runner import Runner


class Scaled(nn.Module):
    @nn.compact
    def __call__(self, x, s):
        return nn.Dense(2)(x) * s


def _setup():
    m = Scaled()
    x = jnp.ones((1, 3))
    return m, m.init(jax.random.key(0), x, 1.0), x


def _both(fn, *args, **kwargs):
    m, v, x = _setup()
    ours = fi.apply(fn, m)
    return ours, (lambda *a, **k: ours(v, x, *a, **k)), (lambda *a, **k: nn.apply(fn, m)(v, x, *a, **k))


def _same(a, b):
    assert type(a) is type(b) or (hasattr(a, "dtype") and a.dtype == b.dtype)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unhashable_statics_are_never_keyed_by_identity():
    run, ours, flax_ = _both(lambda m, x, names: m(x, 1.0) * len(names))
    for n in range(1, 6):  # freed temporaries reuse addresses: an id() key returns a stale program
        _same(ours(set(range(n))), flax_(set(range(n))))


def test_one_one_point_oh_and_true_are_distinct_entries():
    run, ours, flax_ = _both(lambda m, x, s: jnp.asarray(s) + 0 * m(x, 1.0)[0, 0])
    for s in (1, 1.0, True, 1, True, 1.0):
        a, b = ours(s), flax_(s)
        assert a.dtype == b.dtype and a == b
    assert run.traces == 3


def test_nan_static_compiles_once():
    run, ours, flax_ = _both(lambda m, x, s: m(x, s))
    for _ in range(4):
        _same(ours(float("nan")), flax_(float("nan")))
    assert run.traces == 1
    _same(ours(-0.0), flax_(-0.0))
    assert run.traces == 2


@dataclasses.dataclass
class Cfg:
    scale: float
    tags: list


class Plain:
    def __init__(self, scale):
        self.scale = scale


class Mode(enum.Enum):
    A = 1
    B = 2


def test_containers_and_dataclasses_are_keyed_by_value():
    run, ours, flax_ = _both(lambda m, x, c: m(x, c.scale * len(c.tags)))
    cfg = Cfg(1.0, [1])
    for scale, tags in ((1.0, [1]), (2.0, [1]), (2.0, [1, 2]), (1.0, [1])):
        cfg.scale, cfg.tags = scale, tags  # mutated in place: a new key, not a stale program
        _same(ours(cfg), flax_(cfg))
    assert run.traces == 3
    run2, ours2, flax2 = _both(lambda m, x, t: m(x, float(t[0]) + len(t[1])))
    for t in ((1, (2, 3)), (1, [2, 3]), (1, (2, 3))):
        _same(ours2(t), flax2(t))


def test_mutated_plain_config_object_gives_flax_result_each_call():
    run, ours, flax_ = _both(lambda m, x, c: m(x, c.scale))
    cfg = Plain(1.0)
    for s in (1.0, 2.0, 3.0):
        cfg.scale = s
        _same(ours(cfg), flax_(cfg))
    assert run.traces == 3 and run.cached_signatures == 0  # not keyable by value: traced each call, never cached


def test_enums_functions_and_strings():
    run, ours, flax_ = _both(lambda m, x, mode, f, s: m(x, mode.value * f(2.0) * len(s)))
    for args in ((Mode.A, math.sqrt, "ab"), (Mode.B, math.sqrt, "ab"), (Mode.A, math.exp, "ab"),
                 (Mode.A, math.sqrt, "abc"), (Mode.A, math.sqrt, "ab")):
        _same(ours(*args), flax_(*args))
    assert run.traces == 4


def test_dict_key_order_is_flax_order():
    m, v, x = _setup()
    rev = {"params": {k: v["params"][k] for k in reversed(list(v["params"]))}}
    run = fi.apply(lambda m, x: m(x, 1.0), m, mutable=True)
    for variables in (v, rev, v):
        _, ours = run(variables, x)
        _, theirs = nn.apply(lambda m, x: m(x, 1.0), m, mutable=True)(variables, x)
        assert repr(jax.tree.map(lambda a: 0, ours)) == repr(jax.tree.map(lambda a: 0, theirs))


def test_cache_is_an_lru_of_documented_size():
    m, v, _ = _setup()
    run = fi.apply(lambda m, x: m(x, 1.0), m)
    assert run.cache_size == 64
    small = fi.apply(lambda m, x: m(x, 1.0), m, cache_size=3)
    assert isinstance(small, Runner)
    for b in range(1, 6):
        small(v, jnp.ones((b, 3)))
    assert small.cached_signatures <= 3
    small(v, jnp.ones((5, 3)))
    assert small.traces == 5  # most recent kept
    small(v, jnp.ones((1, 3)))
    assert small.traces == 6  # least recent evicted


def test_four_threads_one_signature_compile_once():
    m, v, x = _setup()
    run = fi.apply(lambda m, x: m(x, 1.0), m)
    barrier = threading.Barrier(4)
    out, errors = [], []

    def call():
        try:
            barrier.wait()
            out.append(run(v, x))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 4
    assert run.compiles == 1 and run.traces == 1


class Power(nn.Module):
    @nn.compact
    def __call__(self, x, n):
        return nn.Dense(2)(x) ** n


def test_weak_array_then_python_scalar_each_match_flax():
    """A weak-typed array and a Python scalar share jax's signature, but flax sees a
    concrete value in one case only (``x ** 3`` is ``integer_pow``): each gets flax's result."""
    m = Power()
    x = jnp.linspace(-2, 2, 6, dtype=jnp.float32).reshape(2, 3)
    v = m.init(jax.random.key(1), x, 3)
    run = fi.apply(lambda m, x, n: m(x, n), m)
    flax_fn = nn.apply(lambda m, x, n: m(x, n), m)
    for n in (jnp.asarray(3), 3, jnp.asarray(3), 3):
        ours, theirs = run(v, x, n), flax_fn(v, x, n)
        assert ours.dtype == theirs.dtype and ours.weak_type == theirs.weak_type
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_arrays_only_inputs_keep_flax_key_order():
    """Inputs made only of arrays take jax's dispatch directly; dict order is still flax's."""
    m, v, x = _setup()
    rev = {"params": {"Dense_0": {k: v["params"]["Dense_0"][k] for k in reversed(list(v["params"]["Dense_0"]))}}}
    run = fi.apply(lambda m, x, s: m(x, s), m, mutable=True)
    s = jnp.float32(2.0)
    for variables in (v, rev, v, rev):
        ours = run(variables, x, s)
        theirs = nn.apply(lambda m, x, s: m(x, s), m, mutable=True)(variables, x, s)
        assert repr(jax.tree.map(lambda a: 0, ours)) == repr(jax.tree.map(lambda a: 0, theirs))
    assert run.traces == 2


def test_lru_drops_least_recent_structures():
    m, v, x = _setup()
    run = fi.apply(lambda m, x, s: m(x, s), m, cache_size=2)
    s = jnp.float32(1.0)
    run(v, x, s)                      # structure A, signature 1
    run(v, x, s=s)                    # structure B (keyword)
    run(v, jnp.ones((2, 3)), s)       # A, signature 2: over the limit, B (least recent) goes
    assert run.cached_signatures == 2 and run.traces == 3
    run(v, x, s)
    assert run.traces == 3            # A kept both
    run(v, x, s=s)
    assert run.traces == 4            # B was dropped
    assert run.cached_signatures <= 2


def test_runner_holds_no_inputs_after_a_call():
    import gc
    import weakref
    m, v, _ = _setup()
    run = fi.apply(lambda m, x, s: m(x, s), m)
    x = jnp.ones((1, 3))
    ref = weakref.ref(x)
    run(v, x, jnp.float32(1.0))
    del x
    gc.collect()
    assert ref() is None


def test_lower_shows_the_program_a_call_runs():
    m, v, x = _setup()
    run = fi.apply(lambda m, x, s: m(x, s), m)
    text = run.lower(v, x, 2.0).compile().as_text()
    assert "dot" in text or "dot_general" in text
    assert run.traces == 1
    run(v, x, 2.0)
    assert run.traces == 1 and run.cached_signatures == 1  # lowering traced the program the call reuses


def test_a_cached_program_keeps_none_of_the_inputs_of_the_call_that_compiled_it():
    import gc
    import weakref
    m, v, _ = _setup()
    run = fi.apply(lambda m, x, s: m(x, s), m)
    x = jnp.ones((1, 3))
    ref = weakref.ref(x)
    run(v, x, 1.0)  # a static: the keyed path, whose program stays cached
    assert run.cached_signatures == 1
    del x
    gc.collect()
    assert ref() is None


class Optional(nn.Module):
    @nn.compact
    def __call__(self, x, extra, pair):
        y = nn.Dense(2)(x)
        if extra is not None:
            y = y + extra
        return {"y": y, "n": len(pair), "first": pair[0]}


def test_last_structure_guard_falls_back_on_any_change():
    """A call with the same containers as the last one skips the key walk: every change of
    container type, length, key order, None for an array or a Python value, and flax's
    ``return_frozendict`` flag still gets flax's result."""
    m = Optional()
    x = jnp.ones((1, 3))
    v = m.init(jax.random.key(0), x, None, [x])
    rev = {"params": {"Dense_0": dict(reversed(list(v["params"]["Dense_0"].items())))}}
    run = fi.apply(lambda m, *a: m(*a), m, mutable=["params"])
    flax_fn = nn.apply(lambda m, *a: m(*a), m, mutable=["params"])
    calls = [(v, x, None, [x]), (v, x, jnp.ones(2), [x]), (v, x, None, [x, x]), (rev, x, None, [x]),
             (FrozenDict(v), x, None, [x]), (v, x, None, (x,)), (v, x, 1.5, [x]), (v, x, None, [x])]
    for frozen in (False, True, False):
        with flax.config.temp_flip_flag("return_frozendict", frozen):
            for args in calls + calls[::-1]:
                ours, theirs = run(*args), flax_fn(*args)
                assert type(ours[1]) is type(theirs[1])
                assert repr(jax.tree.map(np.asarray, ours)) == repr(jax.tree.map(np.asarray, theirs))

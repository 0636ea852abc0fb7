"""Small captured arrays leave the program in one buffer per dtype (``inspection/packing.py``; issue 26:
a warm call's host work): what an inspection hands back is still exactly what flax returns (the same
containers in flax's key order, every leaf a ``jax.Array`` of flax's dtype, shape and weak type and
values), the statistics of packed arrays are numpy's in float64 of flax's values, and the arrays are made
when first read, under the options of the call's thread, also inside a caller's trace."""

from __future__ import annotations

import copy
import threading

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.inspection import packing, pipeline
from inspector.inspection.packing import Packed
from inspector.model.leaves import Later
from test_first_call import check_numpy


class Inner(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)  # Inner's output is its Dense's: one value captured twice


class Small(nn.Module):
    """Many small captures of several dtypes, a tuple return, a weakly typed sow, a large array."""

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = Inner()(x)
            self.sow("intermediates", "positive", x > 0)
            self.sow("intermediates", "tenths", jnp.round(x * 10).astype(jnp.int32))
            self.sow("intermediates", "half", x.astype(jnp.bfloat16))
        self.sow("intermediates", "weak", jnp.asarray(2.0) + 1)  # weakly typed: left as it is
        self.sow("intermediates", "big", jnp.tile(x, (1, packing.PACK_MAX)))  # too large to pack
        self.sow("intermediates", "pair", (x.sum(), x.max()))
        return x * 2


@pytest.fixture(params=[True, False], ids=["first calls", "summarizing program"])
def quick(request, monkeypatch):
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", request.param)
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", float("inf"))
    return request.param


def inputs():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    return Small(), x


def assert_same(got, want, where="root"):
    """``got`` is ``want``: the same container types, keys in the same order, leaves of the same dtype,
    shape, weak type and values."""
    assert type(got) is type(want), (where, type(got), type(want))
    if isinstance(want, (dict, flax.core.FrozenDict)):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}/{i}")
    else:
        assert isinstance(got, jax.Array), (where, got)
        assert (got.dtype, got.shape, got.weak_type) == (want.dtype, want.shape, want.weak_type), where
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=where)


def packed_leaves(run, args):
    """The placeholders in what the run's program handed back for ``args`` (its buffers apart)."""
    result = run.runner.run(args, {}).result
    return [x for x in jax.tree.leaves(result) if type(x) is Packed]


@pytest.mark.parametrize("frozen", [False, True], ids=["dict", "FrozenDict"])
@pytest.mark.parametrize("form", ["apply capture", "apply mutable", "init_with_output", "init"])
def test_what_flax_returns_is_returned_with_the_small_arrays_packed(quick, form, frozen):
    model, x = inputs()
    variables = model.init(jax.random.key(0), x)
    with flax.config.temp_flip_flag("return_frozendict", frozen):
        if form.startswith("apply"):
            kw = {"mutable": ["intermediates"]} if form == "apply mutable" else {}
            want = model.apply(variables, x, capture_intermediates=True, **kw)
            run = fi.inspect_apply(Small.__call__, model, capture_intermediates=True, **kw)
            args = (variables, x)
        else:
            make = nn.init_with_output if form == "init_with_output" else nn.init
            want = make(Small.__call__, model, capture_intermediates=True)(jax.random.key(0), x)
            inspect = fi.inspect_init_with_output if form == "init_with_output" else fi.inspect_init
            run = inspect(Small.__call__, model, capture_intermediates=True)
            args = (jax.random.key(0), x)
        for _ in range(2):  # a first call, then a cached one
            insp = run(*args)
            if form == "init":
                assert_same(insp.state, want)
            else:
                assert_same(insp.output, want[0])
                assert_same(insp.state, want[1])
        placed = packed_leaves(run, args)
    # float32: 3 x (Dense, Inner: one value), the pair's two scalars, Small's output; 3 bool, int32, bfloat16
    assert [str(p.dtype) for p in placed].count("float32") == 3 * 2 + 2 + 1
    assert {str(p.dtype) for p in placed} == {"float32", "bool", "int32", "bfloat16"}
    assert len({(p.buffer, p.start) for p in placed}) == 3 + 2 + 1 + 3 * 3  # the doubly captured value once


def test_statistics_of_packed_arrays_are_numpy_s_of_flax_s_values(quick):
    model, x = inputs()
    variables = model.init(jax.random.key(0), x)
    state = model.apply(variables, x, capture_intermediates=True)[1]["intermediates"]
    run = fi.inspect_apply(Small.__call__, model, capture_intermediates=True)
    for _ in range(2):
        insp = run(variables, x)
        for call in insp.calls:
            at = state
            for name in call.path:
                at = at[name]
            wanted = jax.tree.leaves(at[call.method][call.index])
            assert len(call.outputs) == len(wanted), call.key
            for leaf, want in zip(call.outputs, wanted):
                assert leaf.device == str(jax.devices()[0]), call.key
                np.testing.assert_array_equal(leaf.value, np.asarray(want))
                check_numpy(np.asarray(want), leaf.full_stats(), call.key)
                # statistics, histogram and value were read on the host: no device array made for them
                packed = type(leaf.__dict__["_handle"]) is Later
                assert packed == (want.size <= packing.PACK_MAX and not want.weak_type), call.key
                assert isinstance(leaf.handle, jax.Array) and leaf.handle.dtype == want.dtype, call.key
                np.testing.assert_array_equal(np.asarray(leaf.handle), np.asarray(want))
                assert leaf.handle is leaf.handle  # made once


def test_packed_arrays_are_made_under_the_call_s_x64_option_on_any_thread(quick):
    model, x = inputs()
    with jax.enable_x64(True):
        x64 = x.astype(jnp.float64)
        variables = model.init(jax.random.key(0), x64)
        want = model.apply(variables, x64, capture_intermediates=True)[1]
        insp = fi.inspect_apply(Small.__call__, model, capture_intermediates=True)(variables, x64)
    got = []
    thread = threading.Thread(target=lambda: got.append(insp.state))  # x64 is off on this thread
    thread.start()
    thread.join()
    with jax.enable_x64(True):
        assert_same(got[0], want)
    assert insp.calls[0].outputs[0].handle.dtype == jnp.float64


def test_packed_arrays_read_inside_a_caller_s_trace_are_concrete(quick):
    model, x = inputs()
    variables = model.init(jax.random.key(0), x)
    insp = fi.inspect_apply(Small.__call__, model, capture_intermediates=True)(variables, x)
    seen = []

    @jax.jit
    def f(y):
        seen.append(insp.state)  # read first inside the trace
        return y + 1

    f(x)
    want = model.apply(variables, x, capture_intermediates=True)[1]
    assert_same(seen[0], want)


def test_a_copy_holds_the_arrays_themselves(quick):
    model, x = inputs()
    variables = model.init(jax.random.key(0), x)
    insp = fi.inspect_apply(Small.__call__, model, capture_intermediates=True)(variables, x)
    want = model.apply(variables, x, capture_intermediates=True)[1]
    twin = copy.deepcopy(insp)
    assert "_pending_state" not in twin.__dict__
    assert_same(twin.state, want)
    assert_same(insp.state, want)


def test_nothing_is_packed_on_several_devices_or_with_keep_stats(monkeypatch):
    model, x = inputs()
    variables = model.init(jax.random.key(0), x)
    stats = fi.inspect_apply(Small.__call__, model, capture_intermediates=True, keep="stats")
    stats(variables, x)
    assert not packed_leaves(stats, (variables, x))
    monkeypatch.setattr(jax, "device_count", lambda *a: 2)
    arrays = fi.inspect_apply(Small.__call__, model, capture_intermediates=True, mutable=["intermediates"])
    insp = arrays(variables, x)
    assert not packed_leaves(arrays, (variables, x))
    assert_same(insp.state, model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])[1])

"""Each shim of inspector/_compat.py against the installed jax and flax, and what a broken one does:
it warns once and degrades, never fails silently and never breaks the call."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core.scope import Scope
from flax.errors import ApplyModuleInvalidMethodError

import inspector as fi
from inspector import _compat
from models import ScanNet


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Every shim may warn again; returns the CompatWarnings issued while the test runs."""
    monkeypatch.setattr(_compat, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: [w for w in caught if issubclass(w.category, _compat.CompatWarning)]


class Lifted(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                    out_axes=0, axis_size=2)(3, name="members")(x)
        x = nn.remat(nn.Dense)(3, name="rematted")(x)
        return nn.map_variables(nn.Dense, "params", init=True)(3, name="mapped")(x)


def _calls_under(model, x, record):
    """``record(context)`` for every wrapped method call of ``model.init`` and ``model.apply``."""
    def interceptor(next_fun, args, kwargs, context):
        record(context)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        variables = model.init(jax.random.key(0), x)
        model.apply(variables, x)


def _shape_pass_in_scan_body():
    """``shape_pass()`` at every call of the body of ``nn.scan`` (init, then apply)."""
    seen = []
    _calls_under(ScanNet(), jnp.ones((2, 4)),
                 lambda ctx: seen.append(_compat.shape_pass()) if type(ctx.module).__name__ == "Block" else None)
    return seen


# -- jax ------------------------------------------------------------------------------------------
def test_shape_pass_is_true_only_in_the_structure_pass_of_nn_scan():
    assert not _compat.shape_pass()
    under_jit = []

    @jax.jit
    def f(x):
        under_jit.append(_compat.shape_pass())
        return x

    f(1.0)
    assert under_jit == [False]
    seen = _shape_pass_in_scan_body()
    assert True in seen and False in seen  # flax traces the body twice: structure, then the loop


def test_shape_pass_reads_the_internal_trace_when_jax_extend_lacks_it(monkeypatch, fresh_warnings):
    import jax.extend.core

    monkeypatch.delattr(jax.extend.core, "find_top_trace")
    seen = _shape_pass_in_scan_body()
    assert True in seen and False in seen and not fresh_warnings()


def test_a_broken_shape_pass_warns_once_and_the_inspection_still_runs(monkeypatch, fresh_warnings):
    def gone():
        raise AttributeError("trace_ctx")

    monkeypatch.setattr(_compat, "_current_trace", gone)
    assert _compat.shape_pass() is False and _compat.shape_pass() is False
    x = jnp.ones((2, 4))
    variables = ScanNet().init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), ScanNet())(variables, x)
    assert insp.binding  # degraded (the scan body recorded twice), not failed
    shims = {str(w.message).split(")")[0] for w in fresh_warnings()}
    assert shims == {"inspector (shape_pass", "inspector (inside_transform"}
    run = fi.apply(lambda m, x: m(x), ScanNet())  # inside a caller's jit, found out from the staged result
    ours, theirs = jax.jit(lambda: run(variables, x))(), ScanNet().apply(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)


# -- flax linen: lifted transforms -------------------------------------------------------------------
def test_lifted_transforms_call_their_wrapper_class_with_the_lambda_method_name():
    wrappers = set()

    def note_wrapper(ctx):
        if _compat.is_lifted_wrapper_call(ctx.method_name):
            wrappers.add(type(ctx.module))

    _calls_under(ScanNet(), jnp.ones((2, 4)), note_wrapper)
    _calls_under(Lifted(), jnp.ones((1, 2)), note_wrapper)
    names = {w.__name__: _compat.lifted_target(w) for w in wrappers}
    assert names == {"ScanBlock": "Block", "VmapDense": "Dense", "CheckpointDense": "Dense",
                     "Map_variablesDense": "Dense"}


def test_a_lifted_function_on_the_users_own_class_names_no_target(fresh_warnings):
    """``nn.scan(fn)`` runs its wrapper on the module's own class: no generated subclass, and no
    warning (flax's CI makes warnings errors); the generated names are checked above."""
    class LSTMCell(nn.Module):
        pass

    assert _compat.lifted_target(LSTMCell) is None and _compat.lifted_target(nn.Dense) is None
    assert fresh_warnings() == []


def test_capture_calls_is_flaxs_capture_intermediates_true():
    for name in ("__call__", "encode", "setup", "<lambda>", "_helper"):
        assert _compat.capture_calls(None, name) == nn.module.capture_call_intermediates(None, name)
    model, x = ScanNet(), jnp.ones((2, 4))
    variables = model.init(jax.random.key(0), x)
    _, ours = model.apply(variables, x, capture_intermediates=_compat.capture_calls, mutable=["intermediates"])
    _, flax = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    assert jax.tree.structure(ours) == jax.tree.structure(flax)


def test_unbound_method_is_flaxs_rule():
    dense = nn.Dense(3)

    def fn(m, x):
        return m(x)

    for method in (dense.__call__, nn.Dense.__call__, fn):
        assert _compat.unbound_method(method) is nn.module._get_unbound_fn(method)
    for bad in (lambda: 0, 3):
        with pytest.raises(ApplyModuleInvalidMethodError):
            nn.module._get_unbound_fn(bad)
        with pytest.raises(ApplyModuleInvalidMethodError):
            _compat.unbound_method(bad)


# -- flax linen: what a scope holds -------------------------------------------------------------------
class Sower(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "h", x * 2)
        self.sow("intermediates", "h", x * 3)
        seen.append((dict(_compat.own_intermediates(self.scope)), dict(self.scope.variables()["intermediates"])))
        return x


seen: list = []


def test_own_intermediates_is_the_scopes_collection():
    seen.clear()
    Sower().apply({}, jnp.ones(2), mutable=["intermediates"])
    ours, public = seen[-1]
    assert list(ours) == ["h"] and len(ours["h"]) == 2 and ours.keys() == public.keys()


def test_a_broken_own_intermediates_warns_once_and_reads_the_public_copy(fresh_warnings):
    class Broken:
        def _collection(self, col):
            raise AttributeError("_collection")

        def variables(self):
            return {"intermediates": {"h": (1, 2)}}

    assert _compat.own_intermediates(Broken()) == {"h": (1, 2)}
    assert _compat.own_intermediates(Broken()) == {"h": (1, 2)}
    assert len(fresh_warnings()) == 1


# -- flax linen: variable reads, writes and RNG draws -----------------------------------------------------
class Touchy(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, (2,))
        count = self.variable("stats", "count", lambda: 0)
        count.value += 1
        return nn.Dropout(0.5, deterministic=False)(x * w)


def _touches(rngs):
    model, x = Touchy(), jnp.ones(2)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    got = []
    with _compat.listening(lambda *t: got.append(t)):
        model.apply(variables, x, rngs=rngs, mutable=["stats"])
    return got


def test_scope_probes_report_reads_writes_and_the_rng_stream_flax_drew():
    got = _touches({"dropout": jax.random.key(1)})
    assert ("read", (), "params", "w") in got and ("write", (), "stats", "count") in got
    assert ("rng", ("Dropout_0",), "", "dropout") in got
    # only a params key: flax falls back to it, and the probe reads that from flax's counters
    assert ("rng", ("Dropout_0",), "", "dropout->params") in _touches({"params": jax.random.key(1)})


def test_scope_probes_are_silent_outside_listening_and_pass_every_argument_through():
    _compat.install_scope_probes()
    got = []
    with _compat.listening(lambda *t: got.append(t)):
        pass
    _touches({"dropout": jax.random.key(1)})  # installs; then a plain flax call
    Touchy().init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.ones(2))
    assert got == []
    scope = Scope({"params": {}})
    assert Scope.get_variable.__wrapped__ is _compat._originals["get_variable"]
    assert Scope.get_variable(scope, col="params", name="nothing", default=5) == 5


def test_listening_restores_the_listener_before_it():
    outer, inner = (lambda *t: None), (lambda *t: None)
    with _compat.listening(outer):
        with _compat.listening(inner):
            assert _compat.scope_listener() is inner
        assert _compat.scope_listener() is outer
    assert _compat.scope_listener() is None


def test_a_probe_that_cannot_read_its_arguments_warns_once_and_the_call_goes_through(monkeypatch, fresh_warnings):
    _compat.install_scope_probes()
    monkeypatch.setitem(_compat._originals, "get_variable", lambda self, collection, key, default=None: default)
    got = []
    with _compat.listening(lambda *t: got.append(t)):
        assert Scope.get_variable(object(), collection="params", key="w", default=7) == 7
        assert Scope.get_variable(object(), collection="params", key="w", default=8) == 8
    assert got == [] and len(fresh_warnings()) == 1


def test_a_make_rng_that_moves_no_counter_warns_once_and_names_the_stream_asked_for(monkeypatch, fresh_warnings):
    _compat.install_scope_probes()

    class FakeScope:
        def __init__(self):
            self.path, self.rng_counters = ("m",), {"params": 0}

    monkeypatch.setitem(_compat._originals, "make_rng", lambda self, name="params": "key")
    got = []
    with _compat.listening(lambda *t: got.append(t)):
        assert Scope.make_rng(FakeScope(), "dropout") == "key"
        Scope.make_rng(FakeScope(), "dropout")
        uncounted = FakeScope()
        del uncounted.rng_counters  # a flax that keeps no counters on the scope: the draw still goes through
        assert Scope.make_rng(uncounted, "dropout") == "key"
    assert got == [("rng", ("m",), "", "dropout")] * 3 and len(fresh_warnings()) == 1


# -- jax: direct calls of a compiled executable -------------------------------------------------------------
def test_direct_call_runs_one_signature_and_refuses_every_other():
    f = jax.jit(lambda inputs: {"y": inputs[0][0] * 2 + inputs[1]["b"]})
    x, b = jnp.ones((2, 3)), jnp.ones(())
    made = _compat.direct_call(f, ((x,), {"b": b}))
    assert made is not None
    call, out_tree = made
    assert out_tree == jax.tree.structure({"y": x})
    np.testing.assert_array_equal(call(x, b=b)[0], f(((x,), {"b": b}))["y"])
    np.testing.assert_array_equal(call(x, b=b)[0], np.full((2, 3), 3.0))  # the C++ path, once primed
    for refused in (lambda: call(jnp.ones((3, 3)), b=b), lambda: call(x, b=1.0), lambda: call(x.astype(jnp.int32), b=b),
                    lambda: call(x, b=jnp.asarray(1.0)), lambda: jax.jit(lambda: call(x, b=b)[0])()):
        with pytest.raises(_compat.StaleCall):
            refused()
    with jax.numpy_rank_promotion("raise"), pytest.raises(_compat.StaleCall):
        call(x, b=b)


def test_a_direct_call_is_not_primed_under_another_config_or_inside_a_trace():
    f = jax.jit(lambda inputs: inputs[0][0] + 1)
    x = jnp.ones(3)
    call, _ = _compat.direct_call(f, ((x,), {}))
    with jax.numpy_rank_promotion("raise"), pytest.raises(_compat.StaleCall):
        call(x)
    with pytest.raises(_compat.StaleCall):
        jax.jit(lambda: call(x)[0])()
    np.testing.assert_array_equal(call(x)[0], x + 1)


def test_a_direct_call_without_jaxs_internals_warns_once_and_fi_apply_keeps_flaxs_result(monkeypatch, fresh_warnings):
    def gone(self):
        raise AttributeError("_params")

    monkeypatch.setattr(jax.stages.Compiled, "_params", property(gone), raising=False)
    m, x = nn.Dense(3), jnp.ones((2, 4))
    v = m.init(jax.random.key(0), x)
    run = fi.apply(lambda m, x: m(x), m)
    for _ in range(4):
        np.testing.assert_allclose(run(v, x), m.apply(v, x), rtol=1e-6)
    assert run.direct.current is None and len(fresh_warnings()) == 1


# -- flax nnx ---------------------------------------------------------------------------------------------
def test_collection_name_is_flaxs_registered_name_or_the_type_name():
    class Mine(nnx.Variable):
        pass

    assert _compat.collection_name(nnx.Param) == "params"
    assert _compat.collection_name(nnx.BatchStat) == "batch_stats"
    assert _compat.collection_name(Mine) == "Mine"


def test_bridged_module_is_the_linen_module_inside_to_nnx(fresh_warnings):
    dense = nn.Dense(3)
    assert _compat.bridged_module(nnx.bridge.ToNNX(dense, rngs=nnx.Rngs(0))) is dense
    assert not fresh_warnings()


def test_a_bridge_without_to_nnx_module_warns_once_and_reads_module(fresh_warnings):
    class OldBridge:
        module = nn.Dense(3)

    assert _compat.bridged_module(OldBridge()) is OldBridge.module
    _compat.bridged_module(OldBridge())
    assert len(fresh_warnings()) == 1


def test_staged_in_is_true_for_the_traces_own_tracers_only():
    seen = {}

    def f(x):
        top = _compat.current_trace()
        seen["own"] = _compat.staged_in(x, top)
        seen["nested"] = []
        jax.vmap(lambda r: seen["nested"].append(_compat.staged_in(r, top)) or r)(x)
        return x

    jax.jit(f)(jnp.ones((2, 3)))
    assert seen["own"] is True and seen["nested"] == [False]
    assert _compat.staged_in(jnp.ones(3), _compat.current_trace()) is False  # a concrete array


def test_traced_effects_sees_a_debug_print_and_nothing_else():
    seen = []

    def f(x, effect):
        y = jnp.sin(x)
        seen.append(_compat.traced_effects())
        if effect:
            jax.debug.print("{}", y)
        seen.append(_compat.traced_effects())
        return y

    jax.jit(f, static_argnums=1)(jnp.ones(2), False)
    jax.jit(f, static_argnums=1)(jnp.ones(2), True)
    assert seen == [False, False, False, True]


def test_traced_effects_that_cannot_be_read_warn_once_and_answer_true(monkeypatch, fresh_warnings):
    monkeypatch.setattr(_compat, "_current_trace", lambda: object())
    assert _compat.traced_effects() is True and _compat.traced_effects() is True
    assert len(fresh_warnings()) == 1


def test_user_frames_name_the_line_that_traced_an_equation(monkeypatch, fresh_warnings):
    import inspect as pyinspect

    line = pyinspect.currentframe().f_lineno + 1
    jaxpr = jax.make_jaxpr(lambda x: jnp.log(x))(1.0)
    frames = _compat.user_frames(jaxpr.jaxpr.eqns[0].source_info)
    assert frames and frames[0][0] == __file__ and frames[0][1] == line
    assert not fresh_warnings()
    from jax._src import source_info_util

    monkeypatch.delattr(source_info_util, "user_frames")  # moved in a later jax: warned once, no file:line
    info = jaxpr.jaxpr.eqns[0].source_info
    assert _compat.user_frames(info) == [] and _compat.user_frames(info) == []
    assert len(fresh_warnings()) == 1


def test_capture_filter_in_effect_is_the_filter_flax_asks_during_a_call():
    seen = []

    def keep(module, method):
        return True

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            seen.append(_compat.capture_filter_in_effect())
            return nn.Dense(2)(x)

    x = jnp.ones((1, 2))
    v = Net().init(jax.random.key(0), x)
    seen.clear()
    Net().apply(v, x, capture_intermediates=keep)
    Net().apply(v, x)
    assert _compat.capture_filter_in_effect() is None
    assert seen[0] is keep and seen[1] is False  # flax's own default, False: capture nothing

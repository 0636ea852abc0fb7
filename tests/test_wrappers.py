"""The drop-in wrappers return exactly what flax returns, and never mutate inputs."""

import copy

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import inspector as fi
from inspector import capture as C
from models import AE, MLP, ae_setup


def assert_same(ours, theirs):
    """Same type at every level, same dict key order, same values."""
    assert type(ours) is type(theirs), (type(ours), type(theirs))
    if isinstance(theirs, (dict, FrozenDict)):
        assert list(ours.keys()) == list(theirs.keys())
        for k in theirs:
            assert_same(ours[k], theirs[k])
    elif isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    elif isinstance(theirs, (jax.Array, np.ndarray)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
    else:
        assert ours == theirs


def fn(m, x):
    return m.decode(m.encode(x))


MUTABLES = [False, True, "batch_stats", ["batch_stats"], ("batch_stats",), nn.DenyList("params"), [],
            "nonexistent"]
CAPTURES = [False, True, C.methods("encode", "decode") | C.types(nn.Dense), lambda m, n: n == "encode"]


@pytest.mark.parametrize("mutable", MUTABLES, ids=repr)
@pytest.mark.parametrize("capture", CAPTURES, ids=["off", "true", "combinator", "lambda"])
def test_apply_matches_flax(mutable, capture):
    model, variables, x = ae_setup()
    if mutable is False or mutable in ([], "nonexistent"):
        model = model.clone()  # BatchNorm in train mode needs batch_stats mutable
        f = lambda m, x: m.encode(x)
    else:
        f = fn
    theirs = nn.apply(f, model, mutable=mutable, capture_intermediates=capture)(variables, x)
    ours = fi.apply(f, model, mutable=mutable, capture_intermediates=capture)(variables, x)
    assert_same(ours, theirs)


@pytest.mark.parametrize("frozen", [False, True])
def test_return_frozendict_flag(frozen):
    model, variables, x = ae_setup()
    run = fi.apply(fn, model, mutable=["batch_stats"], capture_intermediates=True)
    with flax.config.temp_flip_flag("return_frozendict", frozen):
        theirs = nn.apply(fn, model, mutable=["batch_stats"], capture_intermediates=True)(variables, x)
        ours = run(variables, x)
        init_theirs = nn.init(fn, model)(jax.random.key(0), x)
        init_ours = fi.init(fn, model)(jax.random.key(0), x)
    assert isinstance(ours[1], FrozenDict) == frozen
    assert_same(ours, theirs)
    assert_same(init_ours, init_theirs)


def test_frozendict_input_accepted():
    model, variables, x = ae_setup()
    frozen = FrozenDict(variables)
    assert_same(fi.apply(fn, model, mutable="batch_stats")(frozen, x),
                nn.apply(fn, model, mutable="batch_stats")(frozen, x))


@pytest.mark.parametrize("capture", [False, True, C.everything])
@pytest.mark.parametrize("mutable", [nn.DenyList("intermediates"), True, ["params", "batch_stats"]], ids=repr)
def test_init_forms_match_flax(capture, mutable):
    model, _, x = ae_setup()
    key = jax.random.key(3)
    assert_same(fi.init(lambda m, x: m(x), model, mutable=mutable, capture_intermediates=capture)(key, x),
                nn.init(lambda m, x: m(x), model, mutable=mutable, capture_intermediates=capture)(key, x))
    assert_same(
        fi.init_with_output(lambda m, x: m(x), model, mutable=mutable, capture_intermediates=capture)(key, x),
        nn.init_with_output(lambda m, x: m(x), model, mutable=mutable, capture_intermediates=capture)(key, x))


@pytest.mark.parametrize("rngs", ["key", "raw", "dict"])
def test_rngs_forms_and_static_flags(rngs):
    model = MLP()
    x = jnp.ones((3, 6))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    key = {"key": jax.random.key(7), "raw": jax.random.PRNGKey(7), "dict": {"dropout": jax.random.key(7)}}[rngs]
    f = lambda m, x, train: m(x, train=train)
    run = fi.apply(f, model)
    assert_same(run(variables, x, True, rngs=key), nn.apply(f, model)(variables, x, True, rngs=key))
    assert_same(run(variables, x, train=False), nn.apply(f, model)(variables, x, train=False))


def test_module_methods_match_flax():
    model, variables, x = ae_setup()
    ins = fi.Inspector(model)
    assert_same(ins.apply(variables, x, method="encode"), model.apply(variables, x, method="encode"))
    assert_same(ins.apply(variables, x, method=AE.decode, mutable=["batch_stats"]) if False else
                ins.apply(variables, jnp.ones((2, 3)), method=AE.decode, mutable=["batch_stats"]),
                model.apply(variables, jnp.ones((2, 3)), method=AE.decode, mutable=["batch_stats"]))
    assert_same(ins.init(jax.random.key(0), x), model.init(jax.random.key(0), x))
    assert_same(ins.init_with_output(jax.random.key(0), x, capture_intermediates=True),
                model.init_with_output(jax.random.key(0), x, capture_intermediates=True))


def test_inputs_are_not_mutated():
    model, variables, x = ae_setup()
    snapshot = copy.deepcopy(jax.tree.map(np.asarray, variables))
    ids = jax.tree.map(id, variables)
    fi.apply(fn, model, mutable=True, capture_intermediates=True)(variables, x)
    fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
    assert jax.tree.map(id, variables) == ids
    assert_same(jax.tree.map(np.asarray, variables), snapshot)


def test_non_array_return_values_do_not_break_jit():
    model, variables, x = ae_setup()
    f = lambda m, x: (m.encode(x), m.describe())
    theirs = nn.apply(f, model, capture_intermediates=lambda m, n: True)(variables, x)
    ours = fi.apply(f, model, capture_intermediates=lambda m, n: True)(variables, x)
    assert_same(ours, theirs)
    assert ours[0][1] == "an autoencoder"
    assert ours[1]["intermediates"]["describe"] == ("an autoencoder",)
    insp = fi.inspect_apply(f, model, capture_intermediates=C.everything)(variables, x)
    described = insp.call("/:describe")
    assert described.outputs[0].opaque == "str: 'an autoencoder'"


def test_errors_name_module_and_method():
    model, variables, x = ae_setup()
    with pytest.raises(flax.errors.ModifyScopeVariableError) as err:
        fi.apply(fn, model)(variables, x)  # BatchNorm in train mode, batch_stats immutable
    assert "inspector: raised in module 'bn' (BatchNorm), method '__call__'" in "\n".join(err.value.__notes__)

    def bad(module, method):
        if method == "decode":
            raise ZeroDivisionError("boom")
        return False

    with pytest.raises(fi.CaptureFilterError, match=r"module '/' \(AE\), method 'decode': ZeroDivisionError: boom"):
        fi.apply(fn, model, mutable="batch_stats", capture_intermediates=bad)(variables, x)
    # the runner still works afterwards
    y = fi.apply(fn, model, mutable="batch_stats")(variables, x)
    assert y[0].shape == (2, 5)


def test_works_inside_user_transforms():
    model, variables, x = ae_setup()
    run = fi.apply(lambda m, x: m.encode(x), model)

    def loss(params):
        return jnp.sum(run({**variables, "params": params}, x) ** 2)

    ref = jax.grad(lambda p: jnp.sum(nn.apply(lambda m, x: m.encode(x), model)({**variables, "params": p}, x) ** 2))
    assert_same(jax.grad(loss)(variables["params"]), ref(variables["params"]))
    assert_same(jax.jit(loss)(variables["params"]), jax.jit(lambda p: loss(p))(variables["params"]))

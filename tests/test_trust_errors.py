"""Bad input gets flax's result or a clear error, never a private traceback from inside the runner."""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.engine.signature import UnsortableKeys

ODD_ARRAYS = {
    "str": np.array(["a", "b"]),
    "bytes": np.array([b"x", b"yz"]),
    "datetime64": np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
    "object": np.array([object(), 1], dtype=object),
}


class TakesAnything(nn.Module):
    @nn.compact
    def __call__(self, x, labels=None):
        n = 0 if labels is None else len(labels)
        return nn.Dense(3)(x) + n


@pytest.fixture(scope="module")
def setup():
    m = TakesAnything()
    x = jnp.ones((2, 4))
    return m, x, m.init(jax.random.key(0), x)


@pytest.mark.parametrize("kind", list(ODD_ARRAYS))
def test_a_non_numeric_numpy_argument_is_passed_to_flax_as_it_is(setup, kind):
    m, x, v = setup
    labels = ODD_ARRAYS[kind]
    expected = m.apply(v, x, labels)
    np.testing.assert_array_equal(fi.apply(TakesAnything.__call__, m)(v, x, labels), expected)
    insp = fi.inspect_apply(TakesAnything.__call__, m)(v, x, labels)
    np.testing.assert_array_equal(insp.output, expected)
    if kind != "object":  # strings and dates are keyed by value: an equal array is a cache hit
        run = fi.apply(TakesAnything.__call__, m)
        traces = run.traces
        run(v, x, labels.copy())
        assert run.traces == traces


@pytest.mark.parametrize("kind", list(ODD_ARRAYS))
def test_a_non_numeric_numpy_variable_leaf_is_described_not_traced(setup, kind):
    m, x, v = setup
    variables = {"params": v["params"], "meta": {"labels": ODD_ARRAYS[kind]}}
    expected = m.apply(variables, x)
    np.testing.assert_array_equal(fi.apply(TakesAnything.__call__, m)(variables, x), expected)
    insp = fi.inspect_apply(TakesAnything.__call__, m)(variables, x)
    np.testing.assert_array_equal(insp.output, expected)
    assert "labels" in str(insp)
    assert "labels" in insp.to_html()


def test_variable_keys_of_mixed_types_raise_flax_own_error(setup):
    m, x, v = setup
    bad = {"params": v["params"], "cache": {1: jnp.ones(2), "1": jnp.ones(2)}}
    with pytest.raises(flax.errors.ApplyScopeInvalidVariablesTypeError):
        m.apply(bad, x)
    with pytest.raises(flax.errors.ApplyScopeInvalidVariablesTypeError):
        fi.apply(TakesAnything.__call__, m)(bad, x)
    with pytest.raises(flax.errors.ApplyScopeInvalidVariablesTypeError):
        fi.inspect_apply(TakesAnything.__call__, m)(bad, x)


def test_an_argument_dict_of_mixed_key_types_names_where_it_is(setup):
    m, x, v = setup
    labels = {1: "a", "1": "b"}  # flax takes it; jax.jit cannot flatten it
    expected = m.apply(v, x, labels)
    np.testing.assert_array_equal(fi.apply(TakesAnything.__call__, m)(v, x, labels), expected)
    with pytest.raises(UnsortableKeys, match=r"args\[2\]"):
        fi.inspect_apply(TakesAnything.__call__, m)(v, x, labels)


def _loss(m, x):
    return jnp.sum(m(x) ** 2)


def test_has_aux_with_a_scalar_loss_says_what_was_returned(setup):
    m, x, v = setup
    with pytest.raises(TypeError, match=r"has_aux=True.*pair \(loss, aux\).*float32\[\]"):
        fi.inspect_grad(_loss, m, has_aux=True)(v, x)


def test_a_non_scalar_loss_suggests_has_aux(setup):
    m, x, v = setup
    with pytest.raises(TypeError, match=r"must be a scalar.*tuple of 2.*has_aux=True"):
        fi.inspect_grad(lambda mod, x: (_loss(mod, x), mod(x)), m)(v, x)


def test_swapped_variables_and_inputs_raise_flax_error_with_a_hint(setup):
    m, x, v = setup
    with pytest.raises(flax.errors.ApplyScopeInvalidVariablesTypeError) as info:
        fi.inspect_grad(_loss, m)(x, v)
    assert any("swapped" in n and "float32[2,4]" in n for n in info.value.__notes__)


class WithAStepCounter(nn.Module):
    @nn.compact
    def __call__(self, x):
        step = self.param("step", lambda k: jnp.array(3, jnp.int32))
        on = self.param("on", lambda k: jnp.array(True))
        return nn.Dense(3)(x) * step * on


def test_integer_and_bool_params_get_no_gradient_and_a_note():
    m = WithAStepCounter()
    x = jnp.ones((2, 4))
    v = m.init(jax.random.key(0), x)
    insp = fi.inspect_grad(_loss, m)(v, x)
    paths = sorted("/".join(leaf.path) for leaf in insp.grads.leaves())
    assert paths == ["params/Dense_0/bias", "params/Dense_0/kernel"]
    expected = jax.grad(lambda p: _loss(m.bind({"params": {**v["params"], **p}}), x))(
        {"Dense_0": v["params"]["Dense_0"]})
    got = insp.grads["params"].find(("Dense_0", "kernel")).leaf.value
    np.testing.assert_allclose(got, expected["Dense_0"]["kernel"], rtol=1e-5)
    assert any("no gradient" in n and "step" in n and "on" in n for n in insp.notes)

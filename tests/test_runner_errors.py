"""Clear errors: inspect_* under a transform, keyword-only variables, where an error was
raised, and flax's own message for unbound modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi


class Net(nn.Module):
    @nn.compact
    def __call__(self, a):
        return nn.Dense(2)(nn.Dense(3)(a))


def _setup():
    m, x = Net(), jnp.ones((2, 4))
    return m, m.init(jax.random.key(0), x), x


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap", "eval_shape"])
def test_inspect_under_a_transform_raises_a_public_error_that_says_what_to_do(transform):
    m, v, x = _setup()
    run = fi.inspect_apply(lambda m, a: m(a), m)
    f = lambda v, x: run(v, x).output.sum()
    call = {"jit": lambda: jax.jit(f)(v, x), "grad": lambda: jax.grad(f)(v, x),
            "vmap": lambda: jax.vmap(f, in_axes=(None, 0))(v, x[:, None]),
            "eval_shape": lambda: jax.eval_shape(f, v, x)}[transform]
    with pytest.raises(fi.InspectUnderTransformError, match="outside the transform.*fi.apply"):
        call()


def test_drop_in_under_eval_shape_neither_compiles_nor_runs():
    m, v, x = _setup()
    run = fi.apply(lambda m, a: m(a), m)
    out = jax.eval_shape(run, v, x)
    assert out == jax.eval_shape(nn.apply(lambda m, a: m(a), m), v, x)
    assert run.compiles == 0 and run.traces == 0
    np.testing.assert_allclose(jax.jit(run)(v, x), nn.apply(lambda m, a: m(a), m)(v, x), rtol=1e-6)
    assert run.compiles == 0


def test_variables_by_keyword_as_flax_accepts():
    m, v, x = _setup()
    fn = lambda m, a: m(a)
    expected = nn.apply(fn, m)(variables=v, a=x)
    np.testing.assert_allclose(fi.apply(fn, m)(variables=v, a=x), expected)
    insp = fi.inspect_apply(fn, m)(variables=v, a=x)
    np.testing.assert_allclose(insp.output, expected)
    assert insp.variables.root.children["params"]


def test_a_filter_error_is_noted_with_the_module_that_raised():
    m, v, x = _setup()

    def bad(module, method):
        if module.path == ("Dense_0",):
            raise ValueError("boom")
        return True

    for make in (fi.apply, fi.inspect_apply):
        with pytest.raises(fi.CaptureFilterError) as info:
            make(lambda m, a: m(a), m, capture_intermediates=bad)(v, x)
        notes = [n for n in getattr(info.value, "__notes__", []) if n.startswith("inspector:")]
        assert notes and "'Dense_0' (Dense)" in notes[0], notes


class Plain(nn.Module):
    def __call__(self, a):
        return a * 2


def test_unbound_module_under_capture_gives_flax_own_message():
    m, v, x = _setup()
    fn = lambda m, a: Plain()(m(a))
    for capture in (True, lambda module, method: True):
        with pytest.raises(Exception) as theirs:
            nn.apply(fn, m, capture_intermediates=capture)(v, x)
        with pytest.raises(type(theirs.value), match=str(theirs.value)):
            fi.apply(fn, m, capture_intermediates=capture)(v, x)


def test_concrete_inputs_inside_a_callers_trace():
    """Concrete (closed-over) inputs inside the caller's jit or eval_shape: the drop-in gives
    what flax gives there, and inspect_* says it cannot inspect inside a transform."""
    m, v, x = _setup()
    run = fi.apply(lambda m, a: m(a), m)
    want = nn.apply(lambda m, a: m(a), m)(v, x)
    np.testing.assert_allclose(jax.jit(lambda: run(v, x))(), want, rtol=1e-6)
    assert jax.eval_shape(lambda: run(v, x)) == jax.eval_shape(lambda: nn.apply(lambda m, a: m(a), m)(v, x))
    inspect = fi.inspect_apply(lambda m, a: m(a), m)
    with pytest.raises(fi.InspectUnderTransformError):
        jax.eval_shape(lambda: inspect(v, x))
    assert inspect(v, x).output is not None  # and outside, it inspects

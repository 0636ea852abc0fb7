"""Objects that captured methods return: no tracer ever comes back, arrays held by a
non-pytree object are computed and shown, a broken ``__repr__`` breaks nothing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import inspector as fi
from inspector import capture as C


class Gaussian:
    """Like diffusers' FlaxDiagonalGaussianDistribution: a plain object holding arrays."""

    def __init__(self, params):
        self.mean, logvar = jnp.split(params, 2, axis=-1)
        self.std = jnp.exp(0.5 * logvar)
        self.inner = Inner(self.mean * 2)
        self.label = "diag"

    def sample(self, key):
        return self.mean + self.std * jax.random.normal(key, self.mean.shape)


class Inner:
    def __init__(self, x):
        self.x = x


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Gaussian(nn.Dense(4)(x))


class VAE(nn.Module):
    def setup(self):
        self.encoder = Encoder()

    def encode(self, x):
        return self.encoder(x)

    def __call__(self, x):
        return self.encode(x).mean


def _setup():
    m, x = VAE(), jnp.arange(6.0).reshape(2, 3)
    return m, m.init(jax.random.key(0), x), x


def _no_tracers(obj):
    for v in vars(obj).values():
        assert not isinstance(v, jax.core.Tracer)
        if hasattr(v, "__dict__") and not isinstance(v, str):
            _no_tracers(v)


def test_object_returned_by_captured_method_holds_concrete_arrays():
    m, v, x = _setup()
    fn = lambda m, x: m.encode(x)
    flax_y, flax_state = nn.apply(fn, m, capture_intermediates=True)(v, x)
    y, state = fi.apply(fn, m, capture_intermediates=True)(v, x)
    captured = state["intermediates"]["encoder"]["__call__"][0]
    for obj, ref in ((y, flax_y), (captured, flax_state["intermediates"]["encoder"]["__call__"][0])):
        assert type(obj) is Gaussian and obj.label == "diag"
        _no_tracers(obj)
        np.testing.assert_allclose(obj.mean, ref.mean)
        np.testing.assert_allclose(obj.std, ref.std)
        np.testing.assert_allclose(obj.inner.x, ref.inner.x)
    obj.sample(jax.random.key(1))  # usable: no UnexpectedTracerError


def test_inspection_shows_arrays_held_by_objects_by_attribute_name():
    m, v, x = _setup()
    insp = fi.inspect_apply(lambda m, x: m.encode(x), m, capture_intermediates=C.everything)(v, x)
    call = next(c for c in insp.calls if c.path == ("encoder",))
    names = {lf.path[-1] for lf in call.outputs}
    assert {"mean", "std", "x"} <= names
    mean = next(lf for lf in call.outputs if lf.path[-1] == "mean")
    np.testing.assert_allclose(mean.value, Encoder().apply({"params": v["params"]["encoder"]}, x).mean)
    assert mean.stats is not None
    _no_tracers(insp.output)


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class ReturnsBadRepr(nn.Module):
    @nn.compact
    def __call__(self, x):
        nn.Dense(2)(x)
        return BadRepr()


def test_returned_object_with_broken_repr_does_not_break_the_inspection():
    m, x = ReturnsBadRepr(), jnp.ones((1, 3))
    v = m.init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), m)(v, x)
    assert isinstance(insp.output, BadRepr)
    assert "repr raised RuntimeError" in insp.outputs[0].opaque
    str(insp)


def test_python_scalar_returned_by_captured_method_stays_a_python_scalar():
    class Scalar(nn.Module):
        @nn.compact
        def __call__(self, x):
            nn.Dense(2)(x)
            return 3.5

    m, x = Scalar(), jnp.ones((1, 3))
    v = m.init(jax.random.key(0), x)
    ours = fi.apply(lambda m, x: m(x), m, capture_intermediates=True)(v, x)
    theirs = nn.apply(lambda m, x: m(x), m, capture_intermediates=True)(v, x)
    assert ours[0] == theirs[0] == 3.5 and type(ours[0]) is float
    assert ours[1]["intermediates"]["__call__"] == (3.5,) == theirs[1]["intermediates"]["__call__"]

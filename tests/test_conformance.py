"""What ``make conformance`` relies on, checked in the unit suite: inspector calls flax's own
functions even when ``flax.linen.apply``/``init``/``init_with_output`` are routed to it, and its
statistics run under flax's CI setting ``jax_numpy_rank_promotion='raise'``."""

import flax.linen as nn
import flax.linen.module
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from conformance.plugin import NAMES, route
from inspector.engine.runner import FLAX_ENTRIES


@pytest.fixture
def routed(request, monkeypatch):
    for name, fn in route(request.param).items():
        monkeypatch.setattr(nn, name, fn)
        monkeypatch.setattr(flax.linen.module, name, fn)
    return request.param


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "h", x)
        return nn.Dense(2)(nn.BatchNorm(use_running_average=False)(x))


@pytest.mark.parametrize("routed", ["inspector", "inspect", "jit"], indirect=True)
def test_routed_flax_gives_flax_results_without_recursion(routed):
    for name in NAMES:
        original = FLAX_ENTRIES[name]
        assert original.__module__ == "flax.linen.module" and getattr(flax.linen.module, name) is not original
    model, x = _Net(), jnp.arange(6.0).reshape(2, 3)
    variables = model.init(jax.random.key(0), x)  # Module.init -> routed init_with_output
    y, state = model.apply(variables, x, mutable=["batch_stats", "intermediates"])
    ref_vars = FLAX_ENTRIES["init"](lambda m, x: m(x), model)(jax.random.key(0), x)
    ref_y, ref_state = FLAX_ENTRIES["apply"](lambda m, x: m(x), model,
                                                   mutable=["batch_stats", "intermediates"])(ref_vars, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ref_vars)
    assert jnp.allclose(y, ref_y, atol=1e-6)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    jitted = jax.jit(lambda v, x: model.apply(v, x, mutable=["batch_stats"])[0])  # the caller's own jit
    assert jnp.allclose(jitted(variables, x), ref_y, atol=1e-6)


def test_inspection_under_rank_promotion_raise():
    model, x = _Net(), jnp.ones((4, 3))
    variables = model.init(jax.random.key(0), x)
    with jax.numpy_rank_promotion("raise"):
        insp = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])(variables, x)
        run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])
        first = run(variables, jnp.ones((4096, 3)))  # summarized by numpy after the call (CPU, a first call)
        leaf = first["Dense_0:__call__"]
        assert not leaf.stats.hist  # a summary: the histogram is computed when first asked for
        full = leaf.full_stats()
        assert sum(full.hist) == (full.hist_sample or leaf.size) > 0
        run.settle()
        big = run(variables, jnp.ones((4096, 3)))  # summarized inside the call
        leaf = big["Dense_0:__call__"]
        assert not leaf.stats.hist  # a summary: the histogram is computed when first asked for
        full = leaf.full_stats()
        assert sum(full.hist) == (full.hist_sample or leaf.size) == 4096
    assert insp.calls

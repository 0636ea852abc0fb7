"""What a warm inspected call builds on the host: an inspection's calls are built when first read (an
inspection whose calls are never looked at never builds them), and once built they are exactly what flax
captured; the first non-finite call is found without building them, and what the hooks set on each call
(``call.inputs``) reaches calls built later."""

import copy
import gc
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import inspector as fi


class Chain(nn.Module):
    log_at: int | None = None  # the layer whose output goes through log (a dead unit gives -inf)

    @nn.compact
    def __call__(self, x):
        for i in range(6):
            x = nn.Dense(5)(x)
            if i == self.log_at:
                x = jnp.log(nn.relu(x))
        return x


def _flax_intermediates(m, v, x):
    """flax's own ``capture_intermediates=True``: ``[(key, array)]`` in the order flax returns them."""
    _, state = m.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    out = []
    for path, values in jax.tree_util.tree_flatten_with_path(state["intermediates"],
                                                             is_leaf=lambda t: isinstance(t, tuple))[0]:
        names = [p.key for p in path]
        assert names[-1] == "__call__"
        out.append(("/".join(names[:-1]), np.asarray(values[0], np.float64)))
    return out


def _inspected(m, x, keep="arrays"):
    v = m.init(jax.random.key(0), x)
    run = fi.inspect_apply(type(m).__call__, m, capture_intermediates=True, keep=keep)
    run(v, x)
    run.settle()
    return v, run(v, x)  # warm: the program that summarizes inside the call


def test_calls_are_built_when_first_read_and_are_what_flax_captured():
    m, x = Chain(), jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(3, 4)
    v, insp = _inspected(m, x)
    assert "calls" not in insp.__dict__  # nothing read yet: nothing built
    assert insp.first_nonfinite() is None and "calls" not in insp.__dict__
    flax_calls = dict(_flax_intermediates(m, v, x))
    calls = insp.calls
    assert insp.calls is calls and "calls" in insp.__dict__  # built once
    assert [c.order for c in calls] == list(range(len(calls)))
    by_path = {"/".join(c.path): c for c in calls}
    assert set(by_path) == set(flax_calls)
    for path, want in flax_calls.items():
        st = by_path[path].outputs[0].stats
        assert st.count == want.size and st.nonfinite == 0
        np.testing.assert_allclose([st.mean, st.min, st.max], [want.mean(), want.min(), want.max()], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(by_path[path].outputs[0].value, want.astype(np.float32))


def test_the_first_nonfinite_call_is_flaxs_first_without_building_the_calls_to_say_none():
    x = jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(3, 4)
    m = Chain(log_at=2)
    v, insp = _inspected(m, x)
    flax_calls = _flax_intermediates(m, v, x)
    want = next(i for i, (_, a) in enumerate(flax_calls) if not np.isfinite(a).all())
    first = insp.first_nonfinite()
    assert first is not None and first.order == want and first.key == insp.calls[want].key
    assert first.outputs[0].stats.nonfinite == (~np.isfinite(flax_calls[want][1])).sum()


def test_what_the_hooks_set_on_each_call_reaches_calls_built_later():
    m, x = Chain(), jnp.ones((2, 4))
    v, insp = _inspected(m, x)
    assert "calls" not in insp.__dict__
    flax_calls = _flax_intermediates(m, v, x)
    second = insp.calls[1]  # its input is the first call's output, as flax computed it
    np.testing.assert_allclose(np.asarray(second.inputs[0].value, np.float64), flax_calls[0][1], rtol=1e-6)


def test_a_copy_of_an_unread_inspection_holds_its_calls():
    m, x = Chain(), jnp.ones((2, 4))
    _, insp = _inspected(m, x, keep="stats")
    other = copy.deepcopy(insp)
    assert "_pending_calls" not in other.__dict__ and "calls" in other.__dict__
    assert [c.key for c in other.calls] == [c.key for c in insp.calls]
    assert [c.outputs[0].stats for c in other.calls] == [c.outputs[0].stats for c in insp.calls]


def test_an_unread_inspection_is_freed_with_its_arrays():
    m, x = Chain(), jnp.ones((2, 4))
    _, insp = _inspected(m, x)
    refs = [weakref.ref(insp), weakref.ref(insp.output)]
    del insp
    gc.collect()
    assert all(r() is None for r in refs)

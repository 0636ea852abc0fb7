"""The runner gives flax's result whatever the caller does between calls: a static argument
mutated after a call, a model that writes into a container it was given, a module rebuilt equal,
a script that exits right after a first call."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi


class CountsConfig(nn.Module):
    @nn.compact
    def __call__(self, x, cfg):
        return nn.Dense(3)(x) * 0 + len(cfg.items if dataclasses.is_dataclass(cfg) else cfg)


@dataclasses.dataclass
class Config:  # not frozen: its value can change after a call
    items: list


@pytest.mark.parametrize("make", [lambda: {1}, lambda: Config([1])], ids=["set", "dataclass"])
@pytest.mark.parametrize("way", ["apply", "inspect_apply"])
def test_a_retrace_reads_the_value_of_the_call_not_an_object_mutated_since(make, way):
    m = CountsConfig()
    x = jnp.ones((2, 4))
    v = m.init(jax.random.key(0), x, make())
    if way == "apply":
        run = fi.apply(CountsConfig.__call__, m)
        out = run
    else:
        inspected = fi.inspect_apply(CountsConfig.__call__, m)

        def out(*a):
            return inspected(*a).output
    cfg = make()
    np.testing.assert_array_equal(out(v, x, cfg), m.apply(v, x, make()))
    if isinstance(cfg, set):
        cfg.update({2, 3})
    else:
        cfg.items.extend([2, 3])
    bigger = jnp.ones((5, 4))  # a new signature: traced again, with an equal but fresh config
    np.testing.assert_array_equal(out(v, bigger, make()), m.apply(v, bigger, make()))
    np.testing.assert_array_equal(out(v, bigger, cfg), m.apply(v, bigger, cfg))


class WritesIntoItsCache(nn.Module):
    """A decoder-like model that writes each layer's cache into the dict it was passed."""

    @nn.compact
    def __call__(self, x, cache):
        for i in range(2):
            name = f"layer_{i}"
            pos = cache.get(name, jnp.zeros((2,), jnp.int32))
            cache[name] = pos + 1
            x = nn.Dense(4, name=name)(x) * (1 + pos[0].astype(x.dtype)) + x
        return x


def _cache_loss(m, x, cache):
    return jnp.sum(m(x, cache) ** 2)


def test_grad_of_a_model_writing_into_its_argument_dict_leaks_no_tracer():
    m = WritesIntoItsCache()
    x = jnp.ones((2, 4))
    cache = {"layer_0": jnp.array([1, 0], jnp.int32)}
    v = m.init(jax.random.key(0), x, dict(cache))
    insp = fi.inspect_grad(_cache_loss, m)(v, x, cache)
    expected_loss, expected_grads = jax.value_and_grad(
        lambda p: _cache_loss(m.bind({"params": p}), x, dict(cache)))(v["params"])
    np.testing.assert_allclose(insp.loss, expected_loss, rtol=1e-6)
    got = insp.grads["params"].find(("layer_1", "kernel")).leaf.value
    np.testing.assert_allclose(got, expected_grads["layer_1"]["kernel"], rtol=1e-5)
    assert list(cache) == ["layer_0"] and isinstance(cache["layer_0"], jax.Array)  # the caller's dict as it was
    again = fi.inspect_grad(_cache_loss, m)(v, jnp.ones((3, 4)), cache)  # a second signature traces again
    assert np.isfinite(again.loss)


@pytest.mark.parametrize("way", ["apply", "inspect_apply"])
def test_the_runner_traces_flax_on_its_own_copy_of_the_argument_containers(way):
    m = WritesIntoItsCache()
    x = jnp.ones((2, 4))
    cache: dict = {}
    v = m.init(jax.random.key(0), x, {})
    run = fi.apply(WritesIntoItsCache.__call__, m) if way == "apply" else fi.inspect_apply(
        WritesIntoItsCache.__call__, m)
    for batch in (2, 3):
        got = run(v, jnp.ones((batch, 4)), cache)
        got = got if way == "apply" else got.output
        np.testing.assert_allclose(got, m.apply(v, jnp.ones((batch, 4)), {}), rtol=1e-6)
        assert cache == {}


class Net(nn.Module):
    features: int = 3

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(x)


def test_an_equal_module_built_anew_reuses_the_compiled_program():
    x = jnp.ones((2, 4))
    v = Net().init(jax.random.key(0), x)
    first = fi.inspect(Net(), v, x)
    again = fi.inspect(Net(), v, x)  # a re-run cell: a new, equal module
    assert not first.timings.cached and again.timings.cached
    run = fi.inspect_apply(Net.__call__, Net())
    run(v, x)
    rebuilt = fi.inspect_apply(Net.__call__, Net())
    traces = rebuilt.traces
    assert rebuilt(v, x).timings.cached and rebuilt.traces == traces
    plain = fi.apply(Net.__call__, Net())
    plain(v, x)
    assert fi.apply(Net.__call__, Net()).traces == plain.traces == 1
    other = fi.apply(Net.__call__, Net(features=5))  # another value: its own program
    v5 = Net(features=5).init(jax.random.key(0), x)
    np.testing.assert_allclose(other(v5, x), Net(features=5).apply(v5, x))
    assert other.traces == 1


class HoldsAList(nn.Module):
    sizes: list = dataclasses.field(default_factory=lambda: [3])

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.sizes[0])(x)


def test_a_module_that_cannot_be_keyed_by_value_is_never_shared():
    x = jnp.ones((2, 4))
    a = HoldsAList()
    v = a.init(jax.random.key(0), x)
    run = fi.apply(HoldsAList.__call__, a)
    run(v, x)
    a.sizes[0] = 5  # the same class, a field changed in place: never a cache hit
    b = HoldsAList(sizes=[5])
    v5 = b.init(jax.random.key(0), x)
    np.testing.assert_allclose(fi.apply(HoldsAList.__call__, b)(v5, x), b.apply(v5, x))


def test_a_script_ending_after_a_first_call_starts_no_compile_at_exit():
    script = textwrap.dedent("""
        import atexit, sys
        import jax
        compiled = []
        original = jax.stages.Lowered.compile
        def counting(self, *a, **k):
            compiled.append(1)
            return original(self, *a, **k)
        jax.stages.Lowered.compile = counting
        atexit.register(lambda: print("compiles after the call:", len(compiled), flush=True))
        import jax.numpy as jnp, flax.linen as nn
        import inspector as fi
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(3)(x)
        x = jnp.ones((2, 4))
        v = Net().init(jax.random.key(0), x)
        insp = fi.inspect_apply(Net.__call__, Net())(v, x)
        print("called", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "called" in done.stdout
    assert "compiles after the call: 0" in done.stdout, done.stdout  # the background compile never began


def test_the_background_worker_cancels_what_has_not_started_at_exit():
    from inspector.background import BackgroundWorker

    worker = BackgroundWorker("test-worker")
    assert worker.submit(lambda: 7).result(timeout=60) == 7
    assert worker._thread is not None and worker._thread.daemon
    worker._at_exit()
    assert worker.exiting
    assert worker.submit(lambda: 8).cancelled()
    assert not worker.wait_while_running(30)  # wakes at once once exiting


@pytest.mark.parametrize("context", ["x64", "rank_promotion"])
def test_the_background_compile_runs_under_the_callers_jax_options(context):
    import warnings

    x64 = context == "x64"
    options = jax.enable_x64(True) if x64 else jax.numpy_rank_promotion("raise")
    with options, warnings.catch_warnings():
        warnings.simplefilter("error")  # no "float64 truncated" from a compile that lost the caller's x64
        x = jnp.ones((2, 4), jnp.float64 if x64 else jnp.float32)
        v = Net().init(jax.random.key(0), x)
        run = fi.inspect_apply(Net.__call__, Net())
        first = run(v, x)
        run.settle()
        traces = run.traces
        second = run(v, x)
        assert second.timings.cached and run.traces == traces  # the program compiled ahead was the one needed
        np.testing.assert_array_equal(second.output, first.output)
        assert second.output.dtype == (jnp.float64 if x64 else jnp.float32)


class Refuses:
    """A field whose ``__hash__`` and ``__eq__`` raise something other than TypeError."""

    def __init__(self, a: int):
        self.a = a

    def __hash__(self):
        raise RuntimeError("this should not be called")

    def __eq__(self, other):
        raise RuntimeError("this should not be called")


class HoldsARefuser(nn.Module):
    node: Refuses

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x) + self.node.a


def test_a_module_whose_fields_refuse_hashing_runs_unshared():
    x = jnp.ones((2, 2))
    m = HoldsARefuser(Refuses(1))
    v = m.init(jax.random.key(0), x)
    np.testing.assert_allclose(fi.apply(HoldsARefuser.__call__, m)(v, x), m.apply(v, x))
    insp = fi.inspect(m, v, x)
    np.testing.assert_allclose(insp.output, m.apply(v, x))
    assert fi.apply(HoldsARefuser.__call__, m) is not fi.apply(HoldsARefuser.__call__, m)

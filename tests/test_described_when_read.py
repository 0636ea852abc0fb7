"""Captured arrays an inspection keeps (``keep='arrays'``) are described the first time their statistics
are read (issue 26: N inspected calls cost about N plain calls): a call computes only its outputs' and
mutated collections' statistics. Checked here: what is computed when, that reading gives what numpy says
in float64 (and what a call described at once gives), under the jax options of the call's thread, once
across threads; ``keep='stats'`` still describes at once and holds no captured array; the origin of a
NaN is found when the calls are read, also through a chain of temporaries."""

from __future__ import annotations

import copy
import pickle
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.inspection import assemble as A
from inspector.inspection import pipeline
from inspector.model import Stats
from test_first_call import flax_captured  # the oracle: flax's own captured values, by call key


class Net(nn.Module):
    """Two large float arrays, a bfloat16 one, an int one and one with -inf (a summary it can't trust)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(256)(x))
        (h * 2).astype(jnp.bfloat16)
        jnp.round(h).astype(jnp.int32)
        self.sow("intermediates", "logs", jnp.log(h))  # log(0): -inf
        return nn.Dense(4)(h)


@pytest.fixture(params=[True, False], ids=["first calls", "summarizing program"])
def quick(request, monkeypatch):
    """Both programs: the capture-only one (described by numpy after the call) and the summarizing one."""
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", request.param)
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", float("inf"))
    return request.param


VARIABLE_SHAPES = {(64, 256), (256,), (256, 4), (4,)}  # Net's parameters (x: (8, 64))


@pytest.fixture
def described(monkeypatch) -> list[int]:
    """How many captured or output arrays (not variables) each description on the host was given, in order."""
    counts: list[int] = []
    real = A.V.describe_exactly

    def counting(arrays, hist=True):
        n = sum(1 for a in arrays if np.shape(a) not in VARIABLE_SHAPES)
        if n:
            counts.append(n)
        return real(arrays, hist)

    monkeypatch.setattr(A.V, "describe_exactly", counting)
    return counts


def net_inputs(dtype=jnp.float32):
    model = Net()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 64)), dtype)
    return model, model.init(jax.random.key(0), x), x


def check_numpy(a: np.ndarray, s: Stats, what: str, rtol: float = 2e-5) -> None:
    v = np.asarray(a).astype(np.float64).reshape(-1)
    fin = v[np.isfinite(v)]
    assert (s.count, s.zeros, s.nan, s.neginf) == (v.size, int((v == 0).sum()), int(np.isnan(v).sum()),
                                                   int((v == -np.inf).sum())), what
    assert (s.min, s.max) == (fin.min(), fin.max()), what
    tol = rtol * (abs(fin.mean()) + fin.std())
    assert abs(s.mean - fin.mean()) <= tol and abs(s.std - fin.std()) <= tol, (what, s, fin.mean(), fin.std())


def every_call_stats(insp: fi.Inspection) -> dict[str, Stats]:
    return {f"{c.key}{'' if not c.sown else '/' + c.method}": leaf.stats
            for c in insp.calls for leaf in c.outputs}


def test_a_kept_call_describes_nothing_until_read(quick, described):
    model, variables, x = net_inputs()
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
    insps = [run(variables, x) for _ in range(3)]
    assert run.first_calls == quick
    assert not described
    oracle = flax_captured(model, variables, x)
    for insp in insps:
        before = len(described)
        out = insp.outputs[0]
        if quick:  # the output alone (numpy's path for a small array)
            assert described[before:] == [1]
        check_numpy(np.asarray(insp.output), out.stats, "output")
        before = len(described)
        got = {c.key: c.outputs[0].stats for c in insp.calls if c.outputs and not c.sown}
        assert len(described) > before  # read: described now (-inf, ints: exact on either path)
        for key, st in got.items():
            if key in oracle:
                check_numpy(oracle[key], st, key)
        logs = next(c for c in insp.calls if c.method == "logs")
        assert logs.outputs[0].stats.neginf > 0 and logs.nonfinite  # described exactly: not trusted
        assert insp.first_nonfinite() is logs
    done = len(described)
    for insp in insps:  # read again: nothing is described twice
        assert every_call_stats(insp)
        assert insp.first_nonfinite() is not None
    assert len(described) == done


def test_statistics_read_later_equal_those_of_a_call_described_at_once(quick):
    """``keep='stats'`` describes at once (its arrays are let go): the same numbers, but histograms."""
    model, variables, x = net_inputs()
    later = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)(variables, x)
    now = fi.inspect_apply(lambda m, x: m(x), model.clone(), capture_intermediates=True, keep="stats")(variables, x)
    a, b = every_call_stats(later), every_call_stats(now)
    assert a.keys() == b.keys()
    for key in a:
        s, t = a[key], b[key]
        assert (s.count, s.min, s.max, s.zeros, s.nan, s.posinf, s.neginf) == (
            t.count, t.min, t.max, t.zeros, t.nan, t.posinf, t.neginf), key
        assert s.mean == pytest.approx(t.mean, rel=1e-6, abs=1e-7) and s.std == pytest.approx(t.std, rel=1e-5), key


def test_statistics_read_later_are_computed_under_the_calls_x64_option(quick):
    """Under ``jax.enable_x64`` a float64 array's sums are float64; read after the ``with`` block they
    must still be (the option is per thread, and the reading happens after it)."""
    with jax.enable_x64(True):
        model, variables, x = net_inputs(jnp.float64)
        run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
        later, now = run(variables, x), run(variables, x)
        read_inside = every_call_stats(now)
        oracle = flax_captured(model, variables, x)
    read_outside = every_call_stats(later)
    assert read_outside == read_inside
    dense = next(c for c in later.calls if c.key == "Dense_0:__call__[0]")
    assert dense.outputs[0].dtype == "float64"
    check_numpy(oracle["Dense_0:__call__[0]"], dense.outputs[0].stats, "Dense_0", rtol=1e-12)


def test_two_threads_reading_at_once_describe_once(quick, described):
    model, variables, x = net_inputs()
    insp = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)(variables, x)
    before = len(described)
    got: list[dict[str, Stats]] = []
    start = threading.Barrier(2)

    def read() -> None:
        start.wait()
        got.append(every_call_stats(insp))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 and got[0] == got[1]
    assert len(described) - before <= 1  # one batch (none where every in-call summary is trusted)


def test_an_inspection_dropped_unread_is_never_described(quick, described):
    model, variables, x = net_inputs()
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
    for _ in range(3):
        np.asarray(run(variables, x).output)
    assert not described


def _live_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_keep_stats_still_describes_at_once_and_holds_no_captured_array(quick, keep, described):
    model, variables, x = net_inputs()
    hidden = 2 * 8 * 256 * 4  # the bytes of the first Dense's output and of the ReLU's
    base = _live_bytes()
    insp = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True, keep=keep)(variables, x)
    if keep == "stats":
        assert _live_bytes() - base < hidden / 2  # summarized and let go
        count = len(described)
        assert every_call_stats(insp) and len(described) == count  # nothing left to describe
    else:
        assert _live_bytes() - base >= hidden  # kept (small ones in one buffer per dtype)
        assert every_call_stats(insp)
    del insp


def test_the_origin_of_a_nan_is_found_when_read_also_through_temporaries(quick):
    class Div(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.Dense(4)(x)
            return nn.Dense(2)(y / (y * 0))

    model, x = Div(), jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), x)
    origin = fi.inspect(model, variables, x).first_nonfinite().origin  # the inspection is gone at once
    assert origin is not None and origin.primitive == "div", origin
    insp = fi.inspect(model, variables, x)
    copied = copy.deepcopy(insp)  # a copy reads the statistics first, and shares what re-running needs
    assert copied.first_nonfinite().key == insp.first_nonfinite().key
    assert copied.nonfinite_origin().primitive == "div" and insp.nonfinite_origin().primitive == "div"
    unpickled = pickle.loads(pickle.dumps(fi.inspect(model, variables, x).first_nonfinite()))  # keeps no inputs
    assert unpickled.origin.kind == "unknown"


@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_what_is_read_later_is_the_call_s_not_what_the_caller_changed_since(quick, keep):
    """A training step puts new params in the dict it passed, and the caller empties the dict flax returned:
    leaves built afterwards still show the call's values, with their statistics."""
    model, variables, x = net_inputs()
    given = {"params": {k: dict(v) for k, v in variables["params"].items()}}
    old = given["params"]["Dense_0"]["kernel"]
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True, mutable=["intermediates"],
                           keep=keep)
    insp = run(given, x)
    given["params"]["Dense_0"] = {"kernel": old * 0 + 7, "bias": given["params"]["Dense_0"]["bias"]}
    assert ("intermediates" in insp.state) == (keep == "arrays")  # the sown logs (keep='stats' returns none)
    insp.state.clear()  # flax's returned dict, the caller's to change
    kernel = insp["params/Dense_0/kernel"]
    check_numpy(np.asarray(old), kernel.stats, "kernel")
    # (keep='stats' holds the caller's array weakly: ``old`` keeps it alive here)
    np.testing.assert_array_equal(np.asarray(kernel.value), np.asarray(old))
    oracle = flax_captured(model, variables, x)
    dense = next(c for c in insp.calls if c.key == "Dense_0:__call__[0]")
    check_numpy(oracle["Dense_0:__call__[0]"], dense.outputs[0].stats, "Dense_0")
    if keep == "arrays":
        np.testing.assert_array_equal(np.asarray(dense.outputs[0].value), oracle["Dense_0:__call__[0]"])

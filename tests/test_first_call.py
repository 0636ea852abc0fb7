"""The first calls of a run on the CPU backend (issue 26): they run a capture-only program and the host
summarizes every captured array after the call (the in-call summaries' five reductions and trust rule,
by numpy), exact only where a summary can't be trusted; the summarizing program is compiled in the
background only once describing after the calls has cost the run as much as compiling it is estimated
to, at the lowest priority; ``settle()`` compiles it at once. Statistics are checked against numpy in
float64 and against the summarizing program's."""

from __future__ import annotations

import os
import sys
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import inspector as fi
from inspector import stats
from inspector.background import LOW_PRIORITY, BackgroundWorker
from inspector.inspection import pipeline
from inspector.model import Stats
from inspector.stats import host

RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


class Half(nn.Module):
    @nn.compact
    def __call__(self, h):
        return h.astype(jnp.bfloat16) * 2


class Ints(nn.Module):
    @nn.compact
    def __call__(self, h):
        return jnp.round(h * 10).astype(jnp.int32)


class Relu(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.relu(h)


class Logs(nn.Module):
    @nn.compact
    def __call__(self, h):
        return jnp.log(nn.relu(h))  # log(0): -inf


class Net(nn.Module):
    """Captured arrays above ``SUMMARIZED_ABOVE`` elements (summarized on the host: float32 with
    zeros, bfloat16), small ones, and large ones described exactly (int32, one with -inf)."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(128)(Relu()(nn.Dense(256)(x)))
        Half()(h + 3.0)
        Ints()(h)
        Logs()(h)
        return nn.Dense(4)(h)


@pytest.fixture
def net():
    model, x = Net(), jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)
    return model, model.init(jax.random.key(0), x), x


def captured(insp: fi.Inspection) -> dict[str, Stats]:
    """Each captured call's output statistics, by call key."""
    return {c.key: c.outputs[0].stats for c in insp.calls}


def flax_captured(model, variables, x) -> dict[str, np.ndarray]:
    """The oracle: flax's own captured values, by the inspection's call keys."""
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    out = {}
    for path, values in jax.tree_util.tree_flatten_with_path(
            state["intermediates"], is_leaf=lambda t: isinstance(t, tuple))[0]:
        names = [p.key for p in path]
        module = "/".join(names[:-1]) or "/"
        for i, value in enumerate(values):
            out[f"{module}:{names[-1]}[{i}]"] = np.asarray(value)
    return out


def check_numpy(a: np.ndarray, s: Stats, what: str) -> None:
    """``s`` against numpy in float64 on the values as stored (the README's tolerances)."""
    v = np.asarray(a).astype(np.float64).reshape(-1)
    fin = v[np.isfinite(v)]
    assert s.count == v.size, what
    assert (s.nan, s.posinf, s.neginf) == (int(np.isnan(v).sum()), int((v == np.inf).sum()),
                                           int((v == -np.inf).sum())), what
    assert s.zeros == int((v == 0).sum()), what
    assert (s.min, s.max) == (fin.min(), fin.max()), what
    acc = stats.layout(np.asarray(a).dtype).acc
    tol = RTOL[np.dtype(acc)] * (abs(fin.mean()) + fin.std())
    assert abs(s.mean - fin.mean()) <= tol, (what, s.mean, fin.mean())
    assert abs(s.std - fin.std()) <= tol, (what, s.std, fin.std())


def run_calls(model, variables, x, keep: str, n: int) -> tuple[pipeline.InspectRun, list[fi.Inspection]]:
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True, keep=keep)
    return run, [run(variables, x) for _ in range(n)]


@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_first_calls_capture_only_and_the_host_summarizes_them_as_numpy_says(net, keep, monkeypatch):
    model, variables, x = net
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", float("inf"))  # never pays: first calls only
    summarized, exact = [], []
    real_summary, real_exact = host.host_summary, stats.device.exact_host_stats_many
    monkeypatch.setattr(stats.device, "host_summaries",
                        lambda arrays: [summarized.append(np.asarray(a).size) or real_summary(a)
                                        if np.size(a) > host.SUMMARIZED_ABOVE else None for a in arrays])
    monkeypatch.setattr(stats.device, "exact_host_stats_many",
                        lambda arrays, hist=True: exact.append(len(arrays)) or real_exact(arrays, hist))
    run, insps = run_calls(model, variables, x, keep, 4)
    assert run.first_calls and run.traces == 1  # one program, the capture-only one, traced once
    assert run._compiling is None and run.runner.compiles == 0  # the summarizing program: never compiled
    assert [insp.timings.cached for insp in insps] == [False, True, True, True]
    if keep == "arrays":  # kept: described when first read
        assert not summarized and run.described_after_ms == 0
    else:
        assert summarized and exact  # large float arrays summarized; the rest (and the -inf one) exact
    oracle = flax_captured(model, variables, x)
    for insp in insps:
        got = captured(insp)
        assert got.keys() == oracle.keys()
        big = [k for k, st in got.items() if st.count > host.SUMMARIZED_ABOVE]
        assert len(big) == 6, big
        for key, st in got.items():
            check_numpy(oracle[key], st, key)
        assert got["Logs_0:__call__[0]"].neginf > 0 and got["Logs_0:__call__[0]"].hist  # exact: not trusted
        assert got["Ints_0:__call__[0]"].hist  # exact: an int array
        assert got["Relu_0:__call__[0]"].zeros > 1000 and not got["Relu_0:__call__[0]"].hist  # summarized
        half = next(c.outputs[0] for c in insp.calls if c.key == "Half_0:__call__[0]")
        assert not half.stats.hist  # summarized: no histogram until asked for
        if keep == "arrays":  # kept: its histogram is computed when asked for, as the exact path's
            assert half.full_stats().hist == stats.host_stats_many([oracle["Half_0:__call__[0]"]])[0].hist
    first = captured(insps[0])
    assert all(captured(insp) == first for insp in insps[1:])
    assert summarized and exact


@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_first_calls_and_the_summarizing_program_give_the_same_statistics(net, keep, monkeypatch):
    model, variables, x = net
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", float("inf"))
    quick, (before,) = run_calls(model, variables, x, keep, 1)
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", False)
    summarizing, (after,) = run_calls(model, variables, x, keep, 1)
    assert quick.first_calls and not summarizing.first_calls
    a, b = captured(before), captured(after)
    assert a.keys() == b.keys()
    for key in a:
        s, t = a[key], b[key]
        assert (s.count, s.min, s.max, s.zeros, s.nan, s.posinf, s.neginf) == (
            t.count, t.min, t.max, t.zeros, t.nan, t.posinf, t.neginf), key
        assert s.mean == pytest.approx(t.mean, rel=1e-5, abs=1e-6) and s.std == pytest.approx(t.std, rel=1e-4), key


@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_the_summarizing_program_compiles_once_describing_has_cost_its_estimate(net, keep, monkeypatch):
    """Ski rental: no compile while the run's describing after its calls is under the estimate (the
    first call's trace and compile time, times COMPILE_COST), a compile once it reaches it. Kept
    arrays are described when read: their describing counts then."""
    model, variables, x = net
    monkeypatch.setattr(pipeline, "COMPILE_COST", 0.02)  # a few calls' describing, on any machine
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True, keep=keep)
    first = run(variables, x)
    assert run._compile_after_ms == pytest.approx(0.02 * (first.timings.trace_ms + first.timings.compile_ms))
    for _ in range(200):
        started = run._compiling is not None
        assert started == (run.described_after_ms >= run._compile_after_ms)
        if started:
            break
        before = run.described_after_ms
        insp = run(variables, x)
        if keep == "arrays":
            unread = run.described_after_ms
            assert insp.calls[0].outputs[0].stats is not None  # read: described now
            assert run.described_after_ms > unread
        assert run.described_after_ms > before
    assert run._compiling is not None
    run.settle()
    if keep == "stats":  # (this net's -inf can't be summarized: its lean program gives way to a full one)
        return
    traces = run.traces
    warm = run(variables, x)
    assert not run.first_calls and warm.timings.cached and run.traces == traces
    assert run.runner.compiles == 1  # compiled ahead once, then run
    check_numpy(np.asarray(warm.outputs[0].value), warm.outputs[0].stats, "output")


def test_settle_compiles_the_summarizing_program_now(net, monkeypatch):
    model, variables, x = net
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", float("inf"))
    lowered: list[bool] = []
    monkeypatch.setattr(pipeline._compiler, "lower_priority", lambda: lowered.append(True) or False)
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
    first = run(variables, x)
    assert run._compiling is None
    run.settle()  # waited for: compiled at the caller's priority
    traces = run.traces
    second = run(variables, x)
    assert second.timings.cached and run.traces == traces and run.runner.compiles == 1 and not lowered
    for a, b in zip(first.outputs, second.outputs):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


def test_a_compile_the_calls_paid_for_runs_at_the_lowest_priority_once_traced(net, monkeypatch):
    model, variables, x = net
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", 0.0)  # pays at once
    monkeypatch.setattr(pipeline, "PREPARE_DELAY_S", 0.0)
    events: list[str] = []
    real_lower = pipeline._compiler.lower_priority
    prepare = pipeline.Runner.prepare_unless

    def lower() -> bool:
        events.append(f"lower on {threading.current_thread().name}")
        return real_lower()

    def recorded(self, stop, args, kwargs):
        def asked() -> bool:
            events.append("asked")
            return stop()
        prepare(self, asked, args, kwargs)
        events.append("compiled")

    monkeypatch.setattr(pipeline._compiler, "lower_priority", lower)
    monkeypatch.setattr(pipeline.Runner, "prepare_unless", recorded)
    run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
    run(variables, x)
    run.settle()
    # asked before tracing, then before compiling: lowered once traced and lowered (the GIL's part)
    assert events == ["asked", "asked", "lower on inspector-compile", "compiled"], events
    assert run(variables, x).timings.cached and not run.first_calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own priority on Linux only")
def test_a_worker_thread_lowered_for_a_job_is_replaced_for_the_next():
    worker = BackgroundWorker("test-priority")
    before = os.getpriority(os.PRIO_PROCESS, 0)

    def lowered_job() -> tuple[bool, int, int]:
        ok = worker.lower_priority()
        return ok, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.get_native_id()

    ok, nice, tid = worker.submit(lowered_job).result(timeout=60)
    assert ok and nice == max(before, LOW_PRIORITY)
    plain_nice, plain_tid = worker.submit(
        lambda: (os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.get_native_id())
    ).result(timeout=60)
    assert plain_tid != tid and plain_nice == before  # a new thread, at the process's priority
    assert not BackgroundWorker("other").lower_priority()  # only a job's own thread is lowered
    worker._at_exit()


def test_host_summaries_follow_the_in_call_trust_rule():
    rng = np.random.default_rng(3)
    n = host.SUMMARIZED_ABOVE + 1
    normal = rng.normal(size=n).astype(np.float32)
    cases = {
        "normal": (normal, True),
        "bfloat16": (normal.astype(ml_dtypes.bfloat16), True),
        "float16": (normal.astype(np.float16), True),
        "zeros": (np.zeros(n, np.float32), True),
        "mean far from the spread": (normal * 1e-3 + 100, False),
        "nan": (np.where(np.arange(n) == 7, np.nan, normal).astype(np.float32), False),
        "inf": (np.where(np.arange(n) == 7, np.inf, normal).astype(np.float32), False),
        "overflowing squares": (normal * 3e19, False),
        "near underflow": (normal * 1e-30, False),
        "ints": (rng.integers(0, 9, n).astype(np.int32), False),
        "small": (normal[:host.SUMMARIZED_ABOVE], False),
    }
    got = host.host_summaries([jnp.asarray(a) for a, _ in cases.values()])
    for (name, (a, trusted)), s in zip(cases.items(), got):
        assert (s is not None) == trusted, name
        if s is not None:
            check_numpy(a, s, name)
            assert s.hist == () and s.hist_sample == 0


def test_host_summaries_read_subnormals_as_the_device_does():
    tiny = np.finfo(np.float32).tiny
    a = np.random.default_rng(4).normal(size=host.SUMMARIZED_ABOVE * 2).astype(np.float32)
    a[::97] = 0.0
    a[5::101] = tiny / 4  # subnormal: zero where the device flushes them
    (s,) = host.host_summaries([jnp.asarray(a)])
    device = jax.device_get(jax.jit(lambda v: jnp.sum(jnp.where(jnp.abs(v) < tiny, 1, 0)))(a))
    flushes = stats.flushes_subnormals()
    assert s is not None and s.zeros == (int(device) if flushes else int((a == 0).sum()))
    assert s.zeros == int(np.sum(np.abs(a) < tiny)) if flushes else True


EXIT_SCRIPT = r'''
import sys, time, threading
import flax.linen as nn, jax, jax.numpy as jnp
import inspector as fi
from inspector.inspection import pipeline
pipeline.COMPILE_AFTER_MS, pipeline.PREPARE_DELAY_S = 0.0, 0.0  # the compile starts right after the call
lowered = []
real = pipeline._compiler.lower_priority
pipeline._compiler.lower_priority = lambda: lowered.append(real()) or lowered[-1]
class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(12):
            x = jnp.tanh(nn.Dense(256)(x))
        return x
x = jnp.ones((64, 256))
v = Deep().init(jax.random.key(0), x)
run = fi.inspect_apply(Deep.__call__, Deep(), capture_intermediates=True)
run(v, x)
deadline = time.monotonic() + 120
while not lowered and time.monotonic() < deadline:  # until XLA compiles it at the lowest priority
    time.sleep(0.01)
print("exiting while compiling:", bool(lowered) and not run._compiling.done(), flush=True)
'''


def test_a_script_ending_during_a_low_priority_compile_exits_cleanly():
    """The exit waits for the compile in progress (a daemon thread inside XLA at finalization aborts),
    then ends: the lowered thread's successor takes the exit's stop and nothing new starts."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr and "FATAL" not in done.stderr, done.stderr[-3000:]
    assert "exiting while compiling: True" in done.stdout, done.stdout

"""The bucketed statistics programs: exact rows for every dtype, one program per dtype and size
bucket (a second model with the same buckets compiles nothing), kept across sessions in a user
cache directory that is created only when used and can be turned off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inspector import stats
from inspector.stats import programs

ROOT = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test saves programs in its own directory (never the user's)."""
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("INSPECTOR_NO_CACHE", raising=False)


def held(a):
    """The values as stored, in float64 (ints: Python ints via int64/uint64)."""
    a = np.asarray(a)
    if a.dtype.kind == "c":  # |z| in the array's own precision, as numpy computes it
        return np.abs(a).astype(np.float64)
    if a.dtype.kind in "iub":
        return a.astype(np.uint64 if a.dtype.kind == "u" else np.int64)
    return a.astype(np.float64)


def check(a, s):
    """``s`` against numpy in float64 on the stored values (the README's tolerances)."""
    v = held(a).reshape(-1)
    assert s.count == v.size
    fin = v[np.isfinite(v)] if v.dtype.kind == "f" else v
    if v.dtype.kind == "f":
        assert s.nan == int(np.isnan(v).sum()) and s.posinf == int((v == np.inf).sum())
        assert s.neginf == int((v == -np.inf).sum())
    assert s.zeros == int((v == 0).sum())
    if not fin.size:
        assert np.isnan(s.mean) and np.isnan(s.min) and s.hist == (0,) * stats.rows.BINS
        return
    assert s.min == fin.min() and s.max == fin.max()
    f = fin.astype(np.float64)
    top = float(np.abs(f).max()) or 1.0  # scaled: no overflow near finfo.max
    mean, std = (f / top).mean() * top, (f / top).std() * top
    acc = stats.layout(np.asarray(a).dtype).acc
    tol = (np.finfo(acc).eps * 8) * (abs(mean) + std + 1e-300)
    assert abs(s.mean - mean) <= tol, (s.mean, mean)
    assert abs(s.std - std) <= tol, (s.std, std)
    if s.hist_sample and fin.size < v.size:  # the sample's finite elements
        assert 0 < sum(s.hist) <= min(fin.size, s.hist_sample)
    else:
        assert sum(s.hist) == (min(fin.size, s.hist_sample) if s.hist_sample else fin.size)


def exact_rows(arrays):
    """The exact device path's Stats of ``arrays`` (the oracle the programs' rows must equal)."""
    rows = jax.device_get(stats.describe_many(arrays))
    return stats.unpack(rows, [a.dtype for a in arrays], [np.shape(a) for a in arrays])


def mixed():
    edge = programs.MIN_BUCKET
    out = [rng.normal(size=n).astype(np.float32) for n in (1, edge - 1, edge, edge + 1, 4096, 4097, 8192)]
    out += [np.zeros(0, np.float32), np.float32(3.5) * np.ones((), np.float32),
            (rng.normal(size=(9, 13)) * 100).astype(jnp.bfloat16), rng.normal(size=300).astype(np.float16),
            np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -2.0], np.float32), np.array([np.nan, np.inf], np.float32),
            (rng.normal(size=700) + 1e4).astype(np.float32)]
    for dt in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32):
        info = np.iinfo(dt)
        out.append(rng.integers(info.min, info.max, 600, dtype=dt, endpoint=True))
    out += [rng.integers(0, 2, 130).astype(bool), np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], np.int32),
            (rng.normal(size=90) + 1j * rng.normal(size=90)).astype(np.complex64)]
    return [jnp.asarray(a) for a in out]


def test_rows_equal_the_exact_paths_and_numpy_for_every_dtype():
    arrays = mixed()
    got = programs.describe_bucketed(arrays)
    for a, s, e in zip(arrays, got, exact_rows(arrays)):
        check(a, s)
        assert (s.count, s.min, s.max, s.zeros, s.nan, s.posinf, s.neginf) == \
               (e.count, e.min, e.max, e.zeros, e.nan, e.posinf, e.neginf) or np.isnan(e.min)
        assert s.hist == e.hist and s.hist_edges == e.hist_edges and s.hist_sample == e.hist_sample
        assert s.trusted and s.of == e.of


def test_64_bit_under_x64():
    with jax.enable_x64(True):
        arrays = [jnp.asarray(rng.normal(size=333) * 1e200), jnp.asarray(rng.integers(-2**62, 2**62, 500)),
                  jnp.asarray(rng.integers(0, 2**63, 70, dtype=np.uint64) * 2), jnp.asarray(rng.normal(size=9) + 1e9)]
        got = programs.describe_bucketed(arrays)
        for a, s, e in zip(arrays, got, exact_rows(arrays)):
            assert stats.layout(a.dtype).acc == np.float64
            check(a, s)
            assert (s.min, s.max, s.hist, s.hist_edges) == (e.min, e.max, e.hist, e.hist_edges)


def test_a_second_model_with_the_same_buckets_compiles_nothing():
    first = [jnp.asarray(rng.normal(size=(n, 3)), jnp.float32) for n in (100, 150, 30)]
    programs.describe_bucketed(first)
    before = programs.compiles
    second = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((17, 17), (2, 3, 50), (100,), (129, 2), (5, 20))]
    assert programs.ready(second)
    for a, s in zip(second, programs.describe_bucketed(second)):
        check(a, s)
    assert programs.compiles == before
    assert not programs.ready([jnp.ones(3_000_000, jnp.uint16)])  # a new bucket is not


def test_many_arrays_of_one_bucket_are_one_program_and_few_dispatches():
    arrays = [jnp.asarray(rng.normal(size=70 + i), jnp.float32) for i in range(40)]
    assert len(programs.keys(arrays)) == 1
    for a, s in zip(arrays, programs.describe_bucketed(arrays)):
        check(a, s)


def test_cache_dir_is_created_only_when_used(tmp_path, monkeypatch):
    where = tmp_path / "xdg"
    monkeypatch.delenv("INSPECTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(where))
    assert programs.cache_dir() == where / "flax-inspector" / "jax"
    import inspector as fi  # noqa: F401 - importing creates nothing
    assert not where.exists()
    monkeypatch.setenv("INSPECTOR_NO_CACHE", "1")
    assert programs.cache_dir() is None
    monkeypatch.setenv("INSPECTOR_NO_CACHE", "")
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", "")
    assert programs.cache_dir() is None


CHILD = """
import json, sys
import numpy as np
import jax.numpy as jnp
from inspector.stats import programs
arrays = [jnp.asarray(np.arange(n, dtype=np.float32) - 7) for n in (300, 301, 5)] + [jnp.arange(90, dtype=jnp.int32)]
got = programs.describe_bucketed(arrays)
print(json.dumps({"compiles": programs.compiles, "loads": programs.loads,
                  "means": [s.mean for s in got], "hist": [list(s.hist) for s in got]}))
"""


def child(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("INSPECTOR_CACHE_DIR", "INSPECTOR_NO_CACHE")}
    env.update(env_extra, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_programs_from_disk_and_the_opt_out_saves_nothing(tmp_path):
    cache = tmp_path / "programs"
    first = child({"INSPECTOR_CACHE_DIR": str(cache)})
    assert first["compiles"] == 3 and first["loads"] == 0 and any(cache.iterdir())
    again = child({"INSPECTOR_CACHE_DIR": str(cache)})
    assert again["compiles"] == 0 and again["loads"] == 3
    assert again["means"] == first["means"] and again["hist"] == first["hist"]
    home = tmp_path / "home"
    off = child({"INSPECTOR_NO_CACHE": "1", "XDG_CACHE_HOME": str(home), "HOME": str(home)})
    assert off["compiles"] == 3 and off["loads"] == 0 and not home.exists()
    empty = child({"INSPECTOR_CACHE_DIR": "", "XDG_CACHE_HOME": str(home), "HOME": str(home)})
    assert empty["compiles"] == 3 and not home.exists()


def test_a_process_with_another_device_count_does_not_load_the_saved_programs(tmp_path):
    """An executable saved by a one-device process refuses to run where there are four devices ("Expected
    args to have 4 shards"): the saved programs are keyed by the devices too."""
    cache = str(tmp_path / "programs")
    one = child({"INSPECTOR_CACHE_DIR": cache, "XLA_FLAGS": ""})
    four = child({"INSPECTOR_CACHE_DIR": cache, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert one["compiles"] == 3 and four["compiles"] == 3 and four["loads"] == 0
    assert four["means"] == one["means"] and four["hist"] == one["hist"]
    again = child({"INSPECTOR_CACHE_DIR": cache, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert again["compiles"] == 0 and again["loads"] == 3


def spied(monkeypatch):
    """Records every use of the bucketed programs: descriptions, preparations (now or in the background)
    and builds (compiles or loads)."""
    used: list[str] = []
    for name in ("describe_bucketed", "prepare", "_build"):
        real = getattr(programs, name)
        monkeypatch.setattr(programs, name,
                            lambda *a, _real=real, _name=name, **k: used.append(_name) or _real(*a, **k))
    return used


def test_the_host_chooser_leaves_on_host_arrays_to_numpy_even_where_a_program_is_ready(monkeypatch):
    """On the CPU backend numpy is quicker than the bucketed programs (for float arrays at every size:
    bench_stats_programs.py): arrays numpy reads in place are described by numpy, never by a program, ready
    or not."""
    arrays = [jnp.asarray(rng.normal(size=50_000) * 3 + 1, jnp.float32) for _ in range(3)]  # one bucket, 150K
    arrays += [jnp.asarray(rng.normal(size=300_000) - 2, jnp.bfloat16),
               jnp.asarray(rng.integers(-40_000, 40_000, 9_000), jnp.int32),
               jnp.asarray(np.array([1.0, np.nan, -np.inf] * 30_000), jnp.float32),
               jnp.asarray(rng.normal(size=10), jnp.float32)]
    assert stats.on_host(arrays)
    programs.prepare(arrays)  # every program they'd need is ready
    assert programs.ready(arrays)
    used = spied(monkeypatch)
    before = programs.compiles, programs.loads
    exact = stats.host_stats_many(arrays)
    with stats.summaries_after_the_call():
        summarized = stats.host_stats_many(arrays)
    assert used == [] and (programs.compiles, programs.loads) == before
    for a, e, n in zip(arrays, exact, stats.host.numpy_stats_many(arrays)):
        check(a, e)
        assert e == n  # numpy's own description
    for a, s, e in zip(arrays, summarized, exact):  # summaries where trusted, numpy's exact description elsewhere
        if s.hist == ():  # a summary (no histogram until asked for): the in-call summary's reductions, by numpy
            assert s == stats.host.host_summary(a)
            assert (s.count, s.min, s.max, s.zeros, s.nan) == (e.count, e.min, e.max, e.zeros, e.nan)
        else:
            assert s == e
    assert [s.hist == () for s in summarized] == [True] * 4 + [False] * 3  # large real floats, all finite


def test_on_host_arrays_compile_no_program_now_or_later_at_any_size(monkeypatch):
    """No program is compiled for arrays numpy reads in place, in the calling thread or in the background,
    however often or large they are described (2^24 elements and more were once compiled for at once)."""
    import time

    huge = jnp.asarray(rng.integers(0, 256, (1 << 24) + 3, dtype=np.uint8))
    arrays = [jnp.asarray(rng.normal(size=40_000), jnp.int32) for _ in range(4)]  # a bucket no test compiles
    used = spied(monkeypatch)
    before = programs.compiles, programs.loads
    for _ in range(3):
        got = stats.host_stats_many([*arrays, huge])
    time.sleep(programs.START_DELAY_S + 0.5)  # a background preparation would have started by now
    assert used == [] and (programs.compiles, programs.loads) == before
    assert not programs.ready(arrays) and not programs.ready([huge])
    for a, s in zip([*arrays, huge], got):
        check(a, s)


def test_inspected_calls_on_the_cpu_compile_no_statistics_program(monkeypatch):
    """The whole path: an inspected call's variables (large, as the chooser once sent to their ready programs)
    and captured arrays, first calls and later ones, are described without a bucketed program."""
    import flax.linen as nn

    import inspector as fi

    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(3):
                x = jnp.tanh(nn.Dense(512)(x))
            return x

    x = jnp.asarray(rng.normal(size=(256, 512)), jnp.float32)
    v = Wide().init(jax.random.key(0), x)
    programs.prepare(jax.tree_util.tree_leaves(v))  # ready, as once for a user who ran the model before
    used = spied(monkeypatch)
    before = programs.compiles, programs.loads
    run = fi.inspect_apply(Wide.__call__, Wide())
    for _ in range(3):
        insp = run(v, x)
    assert used == [] and (programs.compiles, programs.loads) == before
    leaves = {"/".join(map(str, lf.path)): lf for lf in insp.variables.leaves()}
    kernel = leaves["params/Dense_1/kernel"]
    assert kernel.size == 512 * 512
    check(v["params"]["Dense_1"]["kernel"], kernel.stats)
    for call in insp.calls:  # the captured outputs too (summarized or exact: numpy's either way)
        for out in call.outputs:
            assert out.stats.count == out.size


EXIT_SCRIPT = r'''
import sys, time
import jax.numpy as jnp
from inspector.stats import programs
arrays = [jnp.ones(n, jnp.float32) for n in (300_000, 70_000, 9_000)]  # three programs to compile
programs.prepare(arrays, background=True)  # starts after programs.START_DELAY_S
time.sleep(float(sys.argv[1]))
print("compiled before exit:", programs.compiles, flush=True)
'''


@pytest.mark.parametrize("linger", [0.0, 1.5], ids=["at-once", "mid-compile"])
def test_a_script_ending_while_programs_prepare_exits_cleanly(tmp_path, linger):
    """A background preparation starts no compile in a script that ends at once after asking for it, and one
    in progress at exit is finished, not torn down (a daemon thread inside XLA at finalization aborts)."""
    env = dict(os.environ, INSPECTOR_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(linger)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr and "FATAL" not in done.stderr, done.stderr[-3000:]
    if linger == 0.0:
        assert "compiled before exit: 0" in done.stdout, done.stdout
        assert not list(tmp_path.iterdir())  # nothing was compiled, so nothing saved

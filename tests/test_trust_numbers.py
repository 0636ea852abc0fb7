"""Numbers that must be right (issue 22): typed PRNG keys in mutation diffs, 64-bit statistics
under x64 on every path, and exact integer extremes in ``to_pandas``/``to_records``.

Statistics are checked against an exact oracle (Python ints and fractions) with the README's
tolerance for 64-bit accumulators, 1e-12 x (|mean| + std); extremes and counts exactly.
"""

from __future__ import annotations

import math
import re
import warnings
from fractions import Fraction

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from rich.console import Console

import inspector as fi
from inspector import stats
from inspector.inspection import pipeline
from inspector.views.inspection_sources import DiffSource

RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


# -- typed PRNG keys in mutation diffs ------------------------------------------------------
class KeyState(nn.Module):
    """Holds a typed key, a raw uint32 key, an array of typed keys and a float counter in 'state';
    ``split`` writes new keys (one of the three in the array), else writes them back as they were."""

    split: bool = True

    @nn.compact
    def __call__(self, x):
        key = self.variable("state", "key", lambda: jax.random.key(0))
        raw = self.variable("state", "raw", lambda: jax.random.PRNGKey(1))
        keys = self.variable("state", "keys", lambda: jax.random.split(jax.random.key(2), 3))
        count = self.variable("state", "count", lambda: jnp.zeros((), jnp.float32))
        if self.split:
            key.value, sub = jax.random.split(key.value)
            raw.value, _ = jax.random.split(raw.value)
            keys.value = keys.value.at[1].set(jax.random.fold_in(keys.value[1], 7))
            x = x + jax.random.normal(sub, x.shape)
        else:
            key.value, raw.value, keys.value = key.value, raw.value, keys.value
        count.value = count.value + 1
        return x


def key_inspections(split: bool) -> list[fi.Inspection]:
    """The first call (statistics by numpy after the call) and a warm one (summarized inside it)."""
    model = KeyState(split=split)
    x = jnp.ones(3)
    variables = model.init(jax.random.key(5), x)
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["state"])
    first = run(variables, x)
    run.settle()
    return [first, run(variables, x)]


def key_rows(insp: fi.Inspection) -> dict[str, tuple[str, int]]:
    (diff,) = insp.diffs
    return {d.path[-1]: (d.status, d.changed) for d in diff.leaves}


def rendered(insp: fi.Inspection) -> list[str]:
    """The mutation lines of every view: text, rich, static HTML and the widget's rows."""
    console = Console(record=True, width=1000, force_terminal=False)
    console.print(insp)
    source = DiffSource(insp)
    widget = [f"{r['name']}: " + "; ".join(p for p in (r.get("fact", ""), r["summary"]) if p)
              for r in source.children("state")[0]]  # the key fact (the changed count) first, then the rest
    page = [re.sub(r"<[^>]*>", "", block) for block in re.split(r"</div>|</summary>", insp.to_html())]
    return [*str(insp).splitlines(), *console.export_text().splitlines(), *page, *widget]


def test_a_typed_key_that_changed_reads_changed_in_every_view():
    for insp in key_inspections(split=True):
        rows = key_rows(insp)
        assert rows["key"] == ("changed", 1)
        assert rows["raw"] == ("changed", 2)  # raw uint32 key data: per word
        assert rows["keys"] == ("changed", 1)  # one of three keys
        assert rows["count"] == ("changed", 1)
        lines = rendered(insp)
        assert any("state: 4 changed" in line for line in lines)
        assert not any(re.search(r"\d unchanged", line) for line in lines)
        for name, n in (("key", "1/1"), ("keys", "1/3")):
            shown = [line for line in lines if re.search(rf"\b{name}: {n} changed\b", line)]
            assert len(shown) >= 4, (name, shown)  # text, rich, html, widget
            assert not any("Δmean" in line for line in shown)  # keys have no statistics to compare


def test_a_typed_key_written_back_unchanged_reads_unchanged():
    for insp in key_inspections(split=False):
        rows = key_rows(insp)
        assert rows["key"] == ("unchanged", 0) and rows["keys"] == ("unchanged", 0)
        assert rows["raw"] == ("unchanged", 0) and rows["count"] == ("changed", 1)
        text = str(insp)
        assert "state: 1 changed, 3 unchanged" in text
        assert re.search(r"\bkey: 0/1 changed$", text, re.M) and re.search(r"\bkeys: 0/3 changed$", text, re.M)


def test_compare_counts_changed_typed_keys():
    model = KeyState()
    x = jnp.ones(3)
    variables = model.init(jax.random.key(5), x)
    moved = {"state": {**variables["state"], "key": jax.random.split(variables["state"]["key"])[0]}}
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["state"])
    c = fi.compare(run(variables, x), run(moved, x))
    assert (c["state/key"].status, c["state/key"].changed) == ("differs", 1)
    assert (c["state/keys"].status, c["state/keys"].changed) == ("equal", 0)
    assert re.search(r"\bstate/key: 1/1 changed$", str(c), re.M)


# -- 64-bit statistics --------------------------------------------------------------------
def oracle(raw: np.ndarray) -> tuple[float, float]:
    """Exact mean and population std of the finite elements, by fractions (no overflow)."""
    vals = [Fraction(int(v)) for v in raw.reshape(-1)] if raw.dtype.kind in "iub" else \
        [Fraction(float(v)) for v in raw.reshape(-1).astype(np.float64) if math.isfinite(float(v))]
    n = len(vals)
    mean = sum(vals, Fraction(0)) / n
    var = sum(((v - mean) ** 2 for v in vals), Fraction(0)) / n
    k = max(0, (var.numerator.bit_length() - var.denominator.bit_length()) // 2)  # var / 4**k fits a float
    return float(mean), math.ldexp(math.sqrt(float(var / 4 ** k)), k)


def check(raw: np.ndarray, s: fi.Stats, what: str = "") -> None:
    """``s`` against the exact statistics of ``raw``: extremes and counts exactly."""
    acc = stats.layout(raw.dtype).acc
    flat = raw.reshape(-1)
    assert s.count == flat.size, what
    if raw.dtype.kind in "iub":
        ints = [int(v) for v in flat]
        assert (s.min, s.max, s.abs_max) == (min(ints), max(ints), max(map(abs, ints))), what
        assert all(type(v) is int for v in (s.min, s.max, s.abs_max)), what
    else:
        f = flat[np.isfinite(flat)].astype(np.float64)
        assert (s.min, s.max, s.abs_max) == (f.min(), f.max(), np.abs(f).max()), what
    mean, std = oracle(raw)
    tol = RTOL[acc] * (abs(mean) + std)
    assert abs(s.mean - mean) <= tol, (what, s.mean, mean)
    assert abs(s.std - std) <= tol, (what, s.std, std)


def x64_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.integers(-(2**62), 2**62, 20_000, dtype=np.int64) * 2  # past stats.summary.SMALL and SAMPLE
    big[:2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    ubig = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)
    ubig[:2] = [0, 2**64 - 1]
    fbig = rng.uniform(-1, 1, 20_000) * 1.7e308
    return {
        "int64 span": np.array([-5e18, 5e18], np.int64),
        "int64 extremes": np.array([2**63 - 1, -(2**63) + 1, 0, 7], np.int64),
        "int64 iinfo": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max] * 3, np.int64),
        "int64 large": big,
        "uint64 above 2**63": np.array([2**64 - 1, 2**63 + 5, 1, 2**63], np.uint64),
        "uint64 large": ubig,
        "float64 near max": np.array([1e308, -1e308]),
        "float64 max": np.array([np.finfo(np.float64).max, np.finfo(np.float64).max, -1.5e308, 3.0]),
        "float64 large": fbig,
        "float64 max with nan": np.array([1.7e308, np.nan, -1.7e308, np.inf, 1.7e308]),
        "int32 past 2**24": np.array([2**31 - 1, -(2**31), 2**24 + 1, 2**24 + 3], np.int32),
    }


def every_path(a: jax.Array) -> dict[str, fi.Stats]:
    """Stats of ``a`` by each path: the exact device programs (grouped and one at a time), the
    in-call summary (redone exactly where not trusted, as the assembly does) and numpy's host path."""
    rows = jax.device_get(stats.describe_many([a]))
    exact = stats.unpack(rows, [a.dtype], [a.shape])[0]
    one = stats.unpack(jax.device_get(stats.device.describe_exact(a))[None], [a.dtype], [a.shape])[0]
    summary = stats.unpack(jax.device_get(jax.jit(stats.summarize)([a])), [a.dtype], [a.shape])[0]
    return {"exact": exact, "exact one": one, "summary": summary if summary.trusted else exact,
            "host": stats.host.host_stats(a), "host many": stats.host_stats_many([a])[0]}


@pytest.mark.parametrize("name", list(x64_arrays()))
def test_x64_statistics_are_exact_on_every_path(name):
    raw = x64_arrays()[name]
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        a = jnp.asarray(raw)
        for path, s in every_path(a).items():
            check(raw, s, f"{name} by {path}")
            if raw.dtype.kind == "f":
                assert (s.nan, s.posinf, s.neginf) == (int(np.isnan(raw).sum()), int((raw == np.inf).sum()),
                                                      int((raw == -np.inf).sum()))


class Mixed(nn.Module):
    """Params of several dtypes, and intermediates of 64-bit extremes computed from them."""

    @nn.compact
    def __call__(self, x):
        p = {name: self.param(name, lambda _, v=v: jnp.asarray(v)) for name, v in params_of_every_dtype().items()}
        wide = nn.Dense(2, dtype=jnp.float64, param_dtype=jnp.float64)(x)
        ints = p["int64"] * 1  # a copy: an int64 intermediate spanning more than 2**63
        uints = p["uint64"] + jnp.uint64(0)
        huge = p["float64"] * 1.0
        return {"wide": wide, "ints": ints, "uints": uints, "huge": huge, "f32": p["float32"] * 2,
                "bf16": p["bfloat16"] * 2}


def params_of_every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "int64": np.array([-5e18, 5e18, 2**63 - 1, -(2**63) + 1], np.int64),
        "uint64": np.array([2**64 - 1, 2**63 + 1, 3], np.uint64),
        "float64": np.array([1e308, -1e308, 1.5e308]),
        "float32": rng.normal(size=(64, 8)).astype(np.float32),
        "bfloat16": rng.normal(size=40).astype(ml_dtypes.bfloat16),
    }


@pytest.mark.parametrize("host", [True, False], ids=["host", "device"])
@pytest.mark.parametrize("quick", [True, False], ids=["quick-first", "compiled-first"])
def test_x64_mixed_tree_first_and_warm_calls(host, quick, monkeypatch):
    monkeypatch.setattr(stats.host, "HOST", host)  # False: the exact device programs describe, as on a GPU
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", quick)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Mixed()
        x = jnp.ones((3, 4), jnp.float64)
        variables = model.init(jax.random.key(0), x)
        run = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=True)
        calls = [run(variables, x)]
        run.settle()
        calls += [run(variables, x), run(jax.tree_util.tree_map(jnp.copy, variables), x)]
        for i, insp in enumerate(calls):
            leaves = [*insp.variables.leaves(), *insp.outputs, *(lf for c in insp.calls for lf in c.outputs)]
            assert len(leaves) > 10
            for leaf in leaves:
                check(np.asarray(leaf.value), leaf.full_stats(), f"call {i}: {leaf.path}")
            out = {lf.path[-1]: lf.stats for lf in insp.outputs}
            assert out["ints"].mean == pytest.approx(oracle(params_of_every_dtype()["int64"])[0], abs=1e7)
            assert out["huge"].std == pytest.approx(oracle(params_of_every_dtype()["float64"])[1], rel=1e-12)
            records = {r["key"]: r for r in insp.to_records()}
            row = records["params/int64"]
            assert (row["min"], row["max"], row["abs_max"]) == (-(2**63) + 1, 2**63 - 1, 2**63 - 1)


# -- exact integer extremes in to_pandas / to_records -----------------------------------------
class Ints(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.param("i64", lambda _: jnp.asarray(np.array([2**63 - 1, -(2**63) + 1], np.int64)))
        self.param("u64", lambda _: jnp.asarray(np.array([2**64 - 1, 2**63 + 1], np.uint64)))
        self.param("i32", lambda _: jnp.asarray(np.array([2**31 - 1, -(2**31), 2**24 + 1], np.int32)))
        self.param("f32", lambda _: jnp.asarray(np.array([0.5, -1.25], np.float32)))
        return x


def test_to_pandas_and_to_records_keep_integer_extremes_exact():
    pd = pytest.importorskip("pandas")
    want = {"params/i64": (-(2**63) + 1, 2**63 - 1, 2**63 - 1),
            "params/u64": (2**63 + 1, 2**64 - 1, 2**64 - 1),
            "params/i32": (-(2**31), 2**31 - 1, 2**31),
            "params/f32": (-1.25, 0.5, 1.25)}
    with jax.enable_x64(True):
        model = Ints()
        variables = model.init(jax.random.key(0), jnp.ones(2))
        run = fi.inspect_apply(lambda m, x: m(x), model)
        insps = [run(variables, jnp.ones(2))]
        run.settle()
        insps.append(run(variables, jnp.ones(2)))
    for insp in insps:
        records = {r["key"]: r for r in insp.to_records() if r["section"] == "variables"}
        frame = insp.to_pandas()
        assert isinstance(frame, pd.DataFrame)
        rows = {k: frame[frame["key"] == k].iloc[0] for k in want}
        for key, (lo, hi, top) in want.items():
            assert (records[key]["min"], records[key]["max"], records[key]["abs_max"]) == (lo, hi, top), key
            got = (rows[key]["min"], rows[key]["max"], rows[key]["abs_max"])
            assert got == (lo, hi, top), (key, got)
            if key != "params/f32":
                assert all(int(v) == w for v, w in zip(got, (lo, hi, top))), key

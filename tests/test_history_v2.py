"""History, host side: records of one (step, site) merged exactly (checked against numpy in float64
on the concatenated arrays), clear key errors, bounded memory with every non-finite step kept, and
the views on large histories (correctness only; their timings are in bench/bench_watch.py)."""

import math

import numpy as np
import pytest

from inspector.history import FIELDS, History, Scalars, Site


def exact(a: np.ndarray) -> Scalars:
    """The statistics of ``a`` by numpy in float64 (the definitions fi.watch documents)."""
    a = np.asarray(a, np.float64).reshape(-1)
    fin = a[np.isfinite(a)]
    return Scalars(mean=float(fin.mean()) if fin.size else 0.0, std=float(fin.std()) if fin.size else 0.0,
                   abs_max=float(np.abs(fin).max()) if fin.size else 0.0,
                   zero_frac=int((a == 0).sum()) / a.size if a.size else 0.0,
                   nan=int(np.isnan(a).sum()), inf=int(np.isinf(a).sum()),
                   norm=float(np.sqrt((fin * fin).sum())), ratio=None, count=a.size)


def close(got: Scalars, want: Scalars, rel: float = 1e-12) -> None:
    assert (got.count, got.nan, got.inf, got.zero_frac, got.abs_max) == \
        (want.count, want.nan, want.inf, want.zero_frac, want.abs_max), (got, want)
    scale = abs(want.mean) + want.std
    assert abs(got.mean - want.mean) <= rel * scale, (got, want)
    assert abs(got.std - want.std) <= rel * scale, (got, want)
    assert got.norm == pytest.approx(want.norm, rel=rel, abs=0), (got, want)


def sample(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(rng.normal() * 10, rng.uniform(0.01, 5), n)
    for value, p in ((0.0, 0.1), (np.nan, 0.03), (np.inf, 0.02), (-np.inf, 0.02)):
        a[rng.random(n) < p] = value
    return a


@pytest.mark.parametrize("seed", range(40))
def test_records_of_one_step_and_site_merge_exactly(seed):
    rng = np.random.default_rng(seed)
    a = sample(rng, int(rng.integers(0, 400)))
    parts = np.array_split(a, int(rng.integers(1, 9)))
    h = History()
    site = Site("activation", "Dense_0:__call__[0]")
    for p in parts:
        h.add(7, site, exact(p))
    got = h[site][7]
    close(got, exact(a))
    assert got.applications == len(parts) and h.steps() == [7]
    assert got.finite == (not np.isnan(a).any() and not np.isinf(a).any())


def test_merge_keeps_mean_and_std_of_distant_parts():
    rng = np.random.default_rng(1)
    a = np.concatenate([1e8 + rng.normal(size=500), -1e8 + rng.normal(size=3), np.zeros(7)])
    merged = exact(a[:500]).merged(exact(a[500:503])).merged(exact(a[503:]))
    close(merged, exact(a), rel=1e-10)
    assert merged.applications == 3


def test_merge_of_ratio_and_empty_parts():
    a = Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 2.0, 0.5, 4)
    b = Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 2.0, None, 4)
    empty = Scalars(0.0, 0.0, 0.0, 0.0, 0, 0, 0.0, None, 0)
    assert a.merged(a).ratio == pytest.approx(math.hypot(0.5, 0.5)) and a.merged(b).ratio == 0.5
    assert b.merged(b).ratio is None and b.merged(a).ratio == 0.5
    assert empty.merged(empty) == Scalars(0.0, 0.0, 0.0, 0.0, 0, 0, 0.0, None, 0, 2)
    assert empty.merged(a) == Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 2.0, 0.5, 4, 2)
    all_nan = Scalars(0.0, 0.0, 0.0, 0.0, 3, 0, 0.0, None, 3)
    assert all_nan.merged(a) == Scalars(1.0, 0.0, 1.0, 0.0, 3, 0, 2.0, 0.5, 7, 2)


def test_a_second_record_of_a_step_is_never_lost():
    """A site applied twice in a step (microbatches, a scan, vmap, shards, a retried step): its
    non-finite first application still names the step."""
    h = History()
    bad, good = Scalars(0.0, 0.0, 0.0, 0.0, 1, 0, 0.0, None, 4), Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 2.0, None, 4)
    h.add(3, Site("activation", "a"), good)
    h.add(3, Site("activation", "b"), bad)
    h.add(3, Site("activation", "a"), bad)
    h.add(3, Site("activation", "b"), good)
    assert h.first_nonfinite() == (3, Site("activation", "a"))
    assert h["b"][3].nan == 1 and h["b"][3].count == 8


def test_first_nonfinite_is_the_earliest_step_then_the_first_site():
    h = History()
    ok, bad = Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 1.0, None, 1), Scalars(0.0, 0.0, 0.0, 0.0, 0, 1, 0.0, None, 1)
    order = [Site("activation", "x"), Site("activation", "y"), Site("grad", "w")]
    for step in (5, 2, 9):
        for s in order:
            h.add(step, s, ok)
    h.add(9, order[0], bad)
    h.add(5, order[2], bad)
    h.add(5, order[1], bad)  # recorded later, but earlier in site order
    assert h.first_nonfinite() == (5, order[1])


def test_keys():
    h = History()
    sc = Scalars(1.0, 0.0, 1.0, 0.0, 0, 0, 1.0, None, 1)
    h.add(0, Site("param", "Dense_0/kernel"), sc)
    h.add(0, Site("grad", "Dense_0/kernel"), sc)
    h.add(0, Site("activation", "Dense_0:__call__[0]"), sc)
    assert h["Dense_0:__call__[0]"] == {0: sc}
    assert h["grad", "Dense_0/kernel"] == h[Site("grad", "Dense_0/kernel")] == h["grad Dense_0/kernel"]
    with pytest.raises(KeyError, match="no site .nope.; recorded: .*activation Dense_0:__call__"):
        h["nope"]
    with pytest.raises(KeyError, match="several kinds"):
        h["Dense_0/kernel"]
    with pytest.raises(KeyError, match="'a', 'b', 'c'"):
        h["a", "b", "c"]
    with pytest.raises(KeyError, match="no site grad nope"):
        h["grad", "nope"]
    with pytest.raises(TypeError, match="indexed by"):
        h[3]


def test_records_and_columns():
    h = History()
    h.add(0, Site("activation", "a"), Scalars(1.0, 2.0, 3.0, 0.25, 0, 0, 4.0, None, 8))
    h.add(0, Site("activation", "a"), Scalars(1.0, 2.0, 3.0, 0.25, 0, 0, 4.0, None, 8))
    (rec,) = h.to_records()
    assert list(rec) == ["step", "kind", "site", *FIELDS, "last_step"]
    assert rec["applications"] == 2 and rec["count"] == 16 and rec["ratio"] is None and rec["last_step"] == 0

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


# -- bounded memory, downsampling ---------------------------------------------------
SITES = [Site("activation" if j < 20 else "grad", f"layer_{j}") for j in range(43)]


def fill(h: History, steps: range, bad: set[int] = frozenset(), sites=SITES) -> None:
    """One record per site and step: 8 elements, one NaN at the steps in ``bad`` (site 3)."""
    for step in steps:
        for j, site in enumerate(sites):
            nan = int(step in bad and j == 3)
            h.add(step, site, Scalars(float(step), 1.0, float(step) + 2, 0.25, nan, 0, 3.0, None, 8))


def test_memory_is_bounded_on_10000_steps_of_43_sites():
    h = History()
    fill(h, range(10_000))
    assert h.stored <= h.max_records  # about 7.6 MB of 76-byte records
    assert h._cells.size <= h.max_records + len(SITES) * 8  # no capacity beyond the budget
    snap = h.snapshot()
    assert snap.cells.dtype.itemsize == 76
    # nothing is lost: every record is in some stored row
    assert int(snap.cells["applications"].sum()) == 10_000 * 43
    assert int(snap.cells["count"].sum()) == 10_000 * 43 * 8
    assert h.steps()[0] == 0 and h.steps()[-1] == 9_999
    widths = snap.last - snap.steps + 1
    assert widths.max() <= 16 and (widths[-500:] == 1).all()  # older steps in even buckets, the latest whole


def test_memory_stays_flat_beyond_the_budget():
    h = History(max_records=43 * 64, window=16)
    sizes = []
    for chunk in range(6):
        fill(h, range(chunk * 2_000, (chunk + 1) * 2_000))
        sizes.append(h.stored)
        assert h._cells.size <= h.max_records + 43
    assert max(sizes) <= h.max_records  # a sawtooth between three quarters of the budget and all of it
    assert int(h.snapshot().cells["applications"].sum()) == 12_000 * 43


def test_downsampling_keeps_non_finite_steps_and_the_latest_window():
    bad = {17, 999, 2_500, 4_990}
    h = History(max_records=43 * 100, window=20)
    fill(h, range(5_000), bad)
    snap = h.snapshot()
    assert h.stored <= h.max_records
    full = {int(s) for s, e in zip(snap.steps, snap.last) if s == e}
    assert bad <= full and set(range(4_980, 5_000)) <= full
    assert len(snap.steps) < 5_000  # older steps were merged
    assert h.first_nonfinite() == (17, SITES[3])
    for step in bad:
        assert h[SITES[3]][step].nan == 1 and h[SITES[2]][step].finite
    assert int(snap.cells["nan"].sum()) == len(bad)
    # every stored row covers whole steps, in order, without overlap
    assert (snap.steps[1:] > snap.last[:-1]).all() and (snap.last >= snap.steps).all()


def test_a_diverged_run_stays_bounded_and_names_its_first_bad_step():
    h = History(max_records=43 * 64, window=16)
    fill(h, range(6_000), bad=set(range(100, 6_000)))
    assert h.stored <= h.max_records
    assert h.first_nonfinite() == (100, SITES[3])
    assert h[SITES[3]][100].nan == 1
    assert int(h.snapshot().cells["nan"].sum()) == 5_900


def test_non_finite_steps_every_other_step_do_not_make_every_step_compact(monkeypatch):
    h = History(max_records=43 * 64, window=16)
    calls = []
    compact = h._compact
    monkeypatch.setattr(h, "_compact", lambda: calls.append(1) or compact())
    fill(h, range(4_000), bad=set(range(0, 4_000, 2)))
    assert h.stored <= h.max_records and len(calls) <= 4_000 // 16  # each frees at least a quarter of the rows
    assert h.first_nonfinite() == (0, SITES[3]) and int(h.snapshot().cells["nan"].sum()) == 2_000


def test_merged_rows_are_exact_statistics_of_their_steps():
    rng = np.random.default_rng(3)
    site = Site("grad", "w")
    arrays = {step: sample(rng, int(rng.integers(1, 50))) for step in range(600)}
    h = History(max_records=40, window=8)
    for step, a in arrays.items():
        h.add(step, site, exact(a))
    snap = h.snapshot()
    assert len(snap.steps) <= 40 and (snap.last > snap.steps).any()
    for i in range(len(snap.steps)):
        a = np.concatenate([arrays[s] for s in range(int(snap.steps[i]), int(snap.last[i]) + 1)])
        got = snap.scalars(i, 0)
        close(got, exact(a), rel=1e-9)
        assert got.applications == snap.last[i] - snap.steps[i] + 1


def test_a_late_record_of_a_merged_step_joins_its_row():
    h = History(max_records=43 * 32, window=8)
    fill(h, range(1_000))
    snap = h.snapshot()
    i = int(np.flatnonzero(snap.last > snap.steps)[0])
    late = int(snap.steps[i]) + 1
    h.add(late, SITES[0], Scalars(0.0, 0.0, 0.0, 0.0, 0, 1, 0.0, None, 8))
    after = h.snapshot()
    assert len(after.steps) == len(snap.steps)
    assert after.cells["count"][i, 0] == snap.cells["count"][i, 0] + 8
    assert h.first_nonfinite() == (int(snap.steps[i]), SITES[0])


def test_sites_first_recorded_late_keep_the_bound():
    h = History(max_records=1_000, window=16)
    fill(h, range(150), sites=SITES[:5])
    fill(h, range(150, 160), bad={155})
    assert h.stored <= h.max_records and len(h.sites()) == 43
    assert h.first_nonfinite() == (155, SITES[3])
    assert int(h.snapshot().cells["applications"].sum()) == 150 * 5 + 10 * 43
    assert h.series == {site: h[site] for site in h.sites()}


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_records"):
        History(max_records=0)


# -- views of large histories (correctness; timings in bench/bench_watch.py) ------
@pytest.fixture(scope="module")
def long_history() -> History:
    h = History()
    fill(h, range(10_000), bad={4_321, 9_000})
    return h


def test_text_of_a_long_run_keeps_its_ends_and_its_non_finite_lines(long_history):
    text = long_history.to_text(limit=400)
    lines = text.splitlines()
    assert len(lines) <= 400 + 10
    assert "lines left out" in text
    assert lines[1].split()[0].startswith("0-")  # the first row merges the first steps
    marked = [line for line in lines if line.startswith("!")]
    assert len(marked) == 1 and marked[0].split()[1:3] == ["4321", "activation"]
    assert any(line.split()[:2] == ["9000", "activation"] for line in lines)
    assert lines[-2].split()[0] == "9999" and lines[-1] == "first non-finite: step 4321, activation layer_3"


def test_records_and_pandas_give_every_stored_row(long_history):
    pd = pytest.importorskip("pandas")
    df = long_history.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == long_history.stored
    assert int(df["count"].sum()) == 10_000 * 43 * 8 and int(df["nan"].sum()) == 2
    assert df.iloc[-1]["step"] == 9_999 and df.iloc[-1]["last_step"] == 9_999
    assert len(long_history.to_records()) == len(df)


def test_html_of_a_long_run_is_bounded_and_names_the_first_bad_step(long_history):
    import json
    import re

    page = long_history.to_html()
    data = json.loads(re.search(r'id="fi-data">(.*?)</script>', page, re.S).group(1))
    assert "first non-finite: step 4321, activation layer_3" in data["status"]
    assert len(page.encode()) <= 1_000_000 and data["charted"] == 43
    heat = data["heat"]
    r, c = heat["first"]
    assert heat["sites"][r] == 3 and heat["steps"][c] <= 4321 <= heat["last"][c]
    assert all(len(s["x"]) <= 1000 for s in data["series"].values())
    assert [b[0] for b in data["series"]["3"]["bad"]] == [4321, 9000]
    h = History()
    fill(h, range(220), bad={150}, sites=SITES[:27])
    page = h.to_html()
    assert len(page.encode()) <= 1_000_000 and "first non-finite: step 150, activation layer_3" in page


def test_the_live_widget_draws_the_latest_window_of_a_long_run(long_history):
    pytest.importorskip("anywidget")
    from inspector.views.history_html import unb64
    from inspector.views.history_widget import HEAT_CELLS, WatchWidget

    w = WatchWidget(long_history, interval=60, window=10)
    try:
        heat = w.data["heat"]
        assert len(heat["steps"]) * 43 <= 2 * HEAT_CELLS and heat["last"][-1] == 9999
        assert "first non-finite: step 4321, activation layer_3" in w.status
        assert w.site == SITES[3] and list(w.data["series"]) == ["3"]
        s = w.data["series"]["3"]
        assert len(s["x"]) <= 1000 and [b[0] for b in s["bad"]] == [4321, 9000]
        assert unb64(s["y"]["abs_max"], "<f8").max() == 9999 + 2
        lo, hi = w.data["range"]
        assert lo <= 4321 and hi == 9999
    finally:
        w.close()


@pytest.mark.parametrize("seed", range(10))
def test_add_many_records_and_merges_as_add_does(seed):
    """A step's records added at once (as fi.watch hands them over) equal those added one by one,
    and a second application of the same sites at that step merges exactly."""
    from inspector.history import CELL, _cell

    rng = np.random.default_rng(seed)
    sites = tuple(Site("grad", f"w{j}") for j in range(5))
    parts = [[sample(rng, int(rng.integers(1, 40))) for _ in sites] for _ in range(3)]
    one, many = History(), History()
    for part in parts:
        for site, a in zip(sites, part):
            one.add(7, site, exact(a))
        many.add_many(7, sites, np.array([_cell(exact(a)) for a in part], CELL))
    assert one.sites() == many.sites() == list(sites)
    for j, site in enumerate(sites):
        close(many[site][7], exact(np.concatenate([part[j] for part in parts])), rel=1e-9)
        assert many[site][7].applications == 3
    with pytest.raises(ValueError, match="listed twice"):
        many.add_many(8, (sites[0], sites[0]), np.zeros(2, CELL))

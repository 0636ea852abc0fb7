"""The watch history's charts (history_html.payload, the static page, the live WatchWidget): the
numbers they carry are the history's, downsampling keeps every min, max and non-finite step, the
first non-finite step is where the views open, hostile names stay text, and the page fits its
budget. The browser tests (tests/browser/test_static_history.py, test_lab_watch.py) check the drawing."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from inspector.history import CELL, History, Site, Snapshot
from inspector.names import safe
from inspector.views.history_html import (
    LABELS, PAGE_BYTES, heat, history_html, minmax_buckets, payload, script_json, series, site_label, unb64,
)
from inspector.views.history_widget import WatchWidget


def fill(h: History, steps: range, sites: list[Site], bad: dict[int, int] | None = None, seed: int = 0) -> None:
    """Random positive records (std growing over the steps); ``bad``: step -> site index with a NaN."""
    rng = np.random.default_rng(seed)
    tup = tuple(sites)
    for step in steps:
        c = np.zeros(len(tup), CELL)
        c["mean"] = rng.normal(size=len(tup))
        c["std"] = np.exp(rng.normal(size=len(tup)) + step / 40)
        c["abs_max"], c["norm"] = 3 * c["std"], 10 * c["std"]
        c["zero_frac"] = rng.uniform(size=len(tup))
        c["ratio"] = np.where(np.arange(len(tup)) % 2, rng.uniform(size=len(tup)), np.nan)
        c["count"], c["applications"] = 100, 1
        if bad and step in bad:
            c["nan"][bad[step]] = 3
        h.add_many(step, tup, c)


def sites(n: int) -> list[Site]:
    return [Site("activation", f"layer_{j}:__call__[0]") for j in range(n)]


def page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="fi-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_series_are_the_stored_numbers():
    h = History()
    fill(h, range(50), sites(4), bad={20: 2})
    snap = h.snapshot()
    for j in range(4):
        s = series(snap, j)
        rows = np.flatnonzero(snap.present[:, j])
        assert s["x"] == snap.steps[rows].tolist() and s["buckets"] == 0
        for f in LABELS:
            if f == "ratio" and j % 2 == 0:
                assert f not in s["y"]  # no ratio recorded: no chart
                continue
            np.testing.assert_array_equal(unb64(s["y"][f], "<f8"), snap.cells[f][rows, j].astype(np.float64))
    assert series(snap, 2)["bad"] == [[20, 3, 0]] and series(snap, 1)["bad"] == []


def test_heatmap_is_the_stored_numbers_and_flags():
    h = History()
    fill(h, range(30), sites(5), bad={7: 1, 9: 4})
    h.add(30, Site("grad", "late"), h[sites(1)[0]][0])  # a site recorded at one step only
    snap = h.snapshot()
    m = heat(snap)
    assert m["sites"] == list(range(6)) and m["steps"] == list(range(31)) and m["last"] == list(range(31))
    flags = unb64(m["flags"], "u1").reshape(6, 31)
    np.testing.assert_array_equal(flags == 1, snap.nonfinite.T)
    np.testing.assert_array_equal(flags == 2, ~snap.present.T)
    for f in ("std", "abs_max", "zero_frac"):
        got = unb64(m["values"][f], "<f4").reshape(6, 31)
        np.testing.assert_array_equal(got, snap.values(f).T.astype(np.float32))
    assert m["first"] == [1, 7]


def test_downsampling_keeps_every_min_max_and_nonfinite_step():
    h = History(max_records=10_000_000)
    bad = {s: 0 for s in (17, 18, 1234, 4999)}
    fill(h, range(5000), sites(2), bad=bad)
    snap = h.snapshot()
    s = series(snap, 0, points=1000)
    assert len(s["x"]) <= 1000 and s["buckets"] == 500
    assert [b[0] for b in s["bad"]] == sorted(bad)  # every non-finite step, exactly
    x = np.asarray(s["x"])
    assert np.all(np.diff(x) >= 0) and x[0] == 0 and x[-1] == 4999
    for f in ("mean", "std", "abs_max", "zero_frac", "norm"):
        v, y = snap.values(f)[:, 0], unb64(s["y"][f], "<f8")
        assert y.max() == v.max() and y.min() == v.min()
        for b in range(0, 500, 37):  # each bucket's two points are its min and max, in order
            lo, hi = x[2 * b], x[2 * b + 1]
            part = v[(snap.steps >= lo) & (snap.steps <= hi)]
            assert sorted(y[2 * b: 2 * b + 2]) == [part.min(), part.max()]
            first = int(np.argmin(part)) <= int(np.argmax(part))
            assert (y[2 * b] == part.min()) == first or part.min() == part.max()
    m = heat(snap, cells=400, sites=10)  # 200 columns: 25 steps each, their largest value
    flags = unb64(m["flags"], "u1").reshape(2, -1)
    for step in bad:
        c = np.searchsorted(m["steps"], step, "right") - 1
        assert m["steps"][c] <= step <= m["last"][c] and flags[0, c] == 1
    std = unb64(m["values"]["std"], "<f4").reshape(2, -1)
    assert std.max() == np.float32(min(snap.values("std").max(), float(np.finfo(np.float32).max)))


def test_minmax_buckets_order_and_nan():
    v = np.array([3.0, 1.0, 2.0, np.nan, np.nan, 5.0, 9.0, 4.0])
    a, b = minmax_buckets(v, np.array([0, 3, 5]))
    assert a.tolist()[0] == 3.0 and b.tolist()[0] == 1.0  # max came first
    assert np.isnan(a[1]) and np.isnan(b[1])  # a bucket of NaN alone
    assert (a[2], b[2]) == (9.0, 4.0)  # max first again
    a, b = minmax_buckets(np.array([2.0, 2.0, 7.0]), np.array([0]))
    assert (a[0], b[0]) == (2.0, 7.0)


def test_the_views_open_on_the_first_nonfinite_step():
    h = History()
    fill(h, range(300), sites(6), bad={40: 4, 250: 1})
    snap = h.snapshot()
    d = payload(snap, [4], window=20)
    assert d["first"] == {"step": 40, "site": 4} and d["selected"] == 4
    lo, hi = d["range"]
    assert lo <= 40 <= hi and hi == 299  # the latest steps, widened to the first non-finite one
    m = payload(snap, [], cells=60)["heat"]  # 10 columns of 30 steps
    r, c = m["first"]
    assert m["sites"][r] == 4 and m["steps"][c] <= 40 <= m["last"][c]
    d = payload(Snapshot(snap.steps[:30], snap.last[:30], snap.sites, snap.cells[:30]), [0], window=10)
    assert d["first"] is None and d["range"] == [19, 29] and d["selected"] == 0


def test_the_live_widget_syncs_the_history_and_follows_the_first_nonfinite_site():
    h = History()
    fill(h, range(40), sites(5))
    w = WatchWidget(h, interval=60, window=10)
    try:
        assert w.status == "40 recorded steps (0 to 39), 5 sites" and w.selected == 0
        assert w.data["live"] and w.data["sites"] == [site_label(s) for s in h.sites()]
        assert list(w.data["series"]) == ["0"]  # the selected site's charts alone
        fill(h, range(40, 45), sites(5), bad={42: 3}, seed=1)
        w.refresh()
        assert w.selected == 3 and w.site == sites(5)[3] and list(w.data["series"]) == ["3"]
        assert "first non-finite: step 42, activation layer_3:__call__[0]" in w.status
        snap = h.snapshot()
        np.testing.assert_array_equal(unb64(w.data["series"]["3"]["y"]["abs_max"], "<f8"), snap.cells["abs_max"][:, 3])
        lo, hi = w.data["range"]
        assert lo <= 42 <= hi and hi == 44
        w.select(sites(5)[1])  # as a pick in the page: its charts are sent, and it keeps the selection
        assert list(w.data["series"]) == ["1"]
        fill(h, range(45, 47), sites(5), bad={45: 0}, seed=2)
        w.refresh()
        assert w.selected == 1
    finally:
        w.close()
    w._thread.join(60)
    assert not w._thread.is_alive()


def test_the_live_widget_overlays_another_run():
    a, b = History(), History()
    fill(a, range(20), sites(3))
    fill(b, range(25), sites(2), seed=5)
    w = WatchWidget(a, interval=60, overlay=("baseline", b))
    try:
        assert w.data["other"]["title"] == "baseline"
        np.testing.assert_array_equal(unb64(w.data["other"]["series"]["0"]["y"]["std"], "<f8"),
                                      b.snapshot().cells["std"][:, 0])
        w.select(sites(3)[2])
        assert w.data["other"]["series"] == {}  # not recorded in the other run
    finally:
        w.close()


HOSTILE = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a\u202eb", "c\u2028d", "e&f>g"]


def test_hostile_names_stay_text_in_the_page_and_the_widget():
    h = History()
    hostile = [Site("activation", name) for name in HOSTILE]
    fill(h, range(5), hostile, bad={3: 0})
    page = h.to_html()
    assert page.count("</script") == 2  # the data's and the module's own
    assert "<img" not in page and "\u202e" not in page and "\u2028" not in page and "<script>alert" not in page
    d = page_data(page)
    assert d["sites"] == [safe(f"activation {n}") for n in HOSTILE]
    assert "\\u202e" in d["sites"][2] and d["sites"][0].startswith("activation </script>")  # as text
    w = WatchWidget(h, interval=60)
    try:
        assert w.data["sites"] == d["sites"]
        assert "\u202e" not in json.dumps(w.data, ensure_ascii=False)
    finally:
        w.close()
    assert script_json({"a": "</script>\u2028&"}) == '{"a":"\\u003c/script\\u003e\\u2028\\u0026"}'


def test_a_page_of_220_steps_by_27_sites_holds_every_chart_under_a_megabyte():
    h = History()
    fill(h, range(220), sites(27), bad={204: 2})
    page = h.to_html()
    assert len(page.encode()) <= 1_000_000
    d = page_data(page)
    assert d["charted"] == 27 and sorted(map(int, d["series"])) == list(range(27))
    assert d["first"] == {"step": 204, "site": 2} and d["selected"] == 2
    assert "uPlot" in page and "https://" not in page.replace("https://github.com/leeoniya/uPlot", "")
    assert d["heat"]["steps"] == list(range(220))  # every step a column


def test_a_page_of_1000_steps_by_2000_sites_stays_under_a_megabyte():
    h = History(max_records=2_100_000)
    fill(h, range(1000), sites(2000), bad={700: 1500, 900: 3})
    page = h.to_html()
    assert len(page.encode()) <= PAGE_BYTES <= 1_000_000
    d = page_data(page)
    assert len(d["sites"]) == 2000
    assert 0 < d["charted"] < 2000 and {"1500", "3"} <= set(d["series"])  # the non-finite sites first
    assert d["selected"] == 1500 and d["first"] == {"step": 700, "site": 1500}
    m = d["heat"]
    assert m["omitted"] == 2000 - len(m["sites"]) and {3, 1500} <= set(m["sites"])
    r, c = m["first"]
    assert m["sites"][r] == 1500 and m["steps"][c] <= 700 <= m["last"][c]
    assert all(len(s["x"]) <= 1000 for s in d["series"].values())


def test_nothing_recorded():
    page = History().to_html()
    d = page_data(page)
    assert d["sites"] == [] and d["status"].startswith("0 recorded steps")
    w = WatchWidget(History(), interval=60)
    try:
        assert w.selected == -1 and w.data["series"] == {}
    finally:
        w.close()


@pytest.mark.parametrize("field", ["std", "abs_max", "zero_frac"])
def test_to_html_fields_choose_the_heatmaps(field):
    h = History()
    fill(h, range(5), sites(2))
    assert history_html(h, (field,)) and page_data(history_html(h, (field,)))["heat"]["fields"] == [field]

"""Δ views: every count and magnitude a mutation, a comparison or their detail shows, checked against
numpy in float64 on the stored values; a NaN or Inf change never reads as zero."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import stats
from inspector.demo import demo_inputs
from inspector.views import detail as D
from inspector.views import format as F
from inspector.views.comparison_source import ComparisonSource
from inspector.views.document import document
from inspector.views.gradient_section import grad_axis
from inspector.views.inspection_sections import change_row
from inspector.views.row_source import lower
from inspector.views.viewmodel import DIVERGENCE_MARK, line
from models import ScanNet


class Writer(nn.Module):
    """Writes its input to ``state/v`` (a mutation) and returns it (an output and an intermediate)."""

    @nn.compact
    def __call__(self, x):
        v = self.variable("state", "v", lambda: jnp.zeros(x.shape, x.dtype))
        v.value = x * 1
        return x * 1


A = np.array([1, np.nan, 2, np.inf, 5, -np.inf, np.nan, 7, -3, 0], np.float32)
B = np.array([1, 3, np.nan, 4, np.inf, np.inf, np.nan, 7.5, -3, 0], np.float32)


def written(before, after, **kw):
    """The inspection of writing ``after`` over ``before``."""
    run = fi.inspect_apply(lambda m, x: m(x), Writer(), mutable=["state"], **kw)
    return run({"state": {"v": jnp.asarray(before)}}, jnp.asarray(after))


def ref(a, b):
    """What every Δ view must say, from the stored values in float64: changed, to nan, from nan,
    to/from inf, max|Δ| and mean|Δ| (over the pairs with no NaN, as the device computes them)."""
    a, b = np.asarray(a).astype(np.float64), np.asarray(b).astype(np.float64)
    na, nb = np.isnan(a), np.isnan(b)
    changed = ~((a == b) | (na & nb))
    to_nan, from_nan = changed & nb & ~na, changed & na & ~nb
    inf = changed & ~na & ~nb & (np.isinf(a) | np.isinf(b))
    numbers = changed & ~na & ~nb
    with np.errstate(invalid="ignore"):
        mags = np.where(numbers, np.abs(b - a), 0.0)
    return (int(changed.sum()), int(to_nan.sum()), int(from_nan.sum()), int(inf.sum()),
            float(mags.max()) if mags.size else 0.0, float(mags.sum() / max(mags.size, 1)))


@pytest.fixture(params=[True, False], ids=["host", "device"])
def path(request, monkeypatch):
    """Both ways a Δ is computed: numpy in place (CPU), and the device programs."""
    monkeypatch.setattr(stats.host, "HOST", request.param)
    return request.param


def _check(d, a, b, host):
    changed, to_nan, from_nan, inf, mx, mean = ref(a, b)
    assert d.changed == changed
    assert tuple(d.nonfinite_delta()) == (to_nan, from_nan, inf)
    assert d.finite_changed == changed - to_nan - from_nan - inf
    if math.isinf(mx):
        assert d.max_abs == mx and (math.isinf(d.mean_abs) if host else d.mean_abs > 0)
    else:
        assert d.max_abs == pytest.approx(mx, rel=0 if host else 1e-6)


def test_comparison_counts_and_names_nan_and_inf_changes(path):
    c = fi.compare(written(A, A), written(A, B))
    out = c["output"]
    _check(out, A, B, path)
    line = F.delta(out)
    assert line.startswith("6/10 changed (1 to nan, 1 from nan, 3 to/from inf); max|Δ| inf")
    assert "nan%" not in line and "Δmean +nan" not in line
    assert out.divergence == math.inf and c.ranked("output")[0] is out


def test_a_nan_to_finite_change_alone_never_reads_as_zero(path):
    """The review's row: ``max|Δ| 0 (nan% of max|a|)`` for a red 'changed' row."""
    a, b = np.array([np.nan, np.nan], np.float32), np.array([1.0, 2.0], np.float32)
    d = fi.compare(written(a, a), written(a, b))["output"]
    _check(d, a, b, path)
    assert d.max_abs == 0 and d.relative == 0 and d.scale is None and d.divergence == math.inf
    line = F.delta(d)
    assert line == "2/2 changed (2 from nan)", line
    assert not re.search(r"max\|Δ\| 0\b", line)
    # one finite change beside: its magnitude, relative to the finite max|a|
    a2, b2 = np.array([np.nan, 2.0], np.float32), np.array([1.0, 3.0], np.float32)
    d2 = fi.compare(written(a2, a2), written(a2, b2))["output"]
    _check(d2, a2, b2, path)
    assert F.delta(d2).startswith("2/2 changed (1 from nan); max|Δ| 1 (50.0% of max|a|)")


def test_mutation_rows_state_the_changed_count_first_and_rank_nan_changes_first(path):
    insp = written(A, B)
    (diff,) = insp.diffs
    (d,) = diff.leaves
    _check(d, A, B, path)
    row = change_row(d)
    assert row.fact == "6/10 changed (1 to nan, 1 from nan, 3 to/from inf)" and row.summary.startswith("max|Δ| inf")
    assert lower(row)["fact"] == row.fact
    # a NaN change ranks above a larger finite one
    insp2 = fi.inspect_apply(
        lambda m, x: m(x), TwoWriter(), mutable=["state"])(
        {"state": {"small": jnp.array([0.0, 1.0]), "big": jnp.array([0.0, 0.0])}}, jnp.array([np.nan, 1.0]))
    ranked = [d.path[-1] for d in insp2.diffs[0].ranked()]
    assert ranked == ["small", "big"], ranked
    small = insp2.diffs[0].leaves[[d.path[-1] for d in insp2.diffs[0].leaves].index("small")]
    # the means are over the finite elements: [0, 1] -> [1]
    assert F.delta(small) == "1/2 changed (1 to nan); Δmean +0.5, Δstd -0.5"
    assert small.delta_mean == np.nanmean([np.nan, 1.0]) - np.mean([0.0, 1.0])


class TwoWriter(nn.Module):
    @nn.compact
    def __call__(self, x):
        small = self.variable("state", "small", lambda: jnp.zeros(2))
        big = self.variable("state", "big", lambda: jnp.zeros(2))
        small.value = x  # [0, 1] -> [nan, 1]: one change, to NaN
        big.value = jnp.array([100.0, 0.0])  # a large finite change
        return x


def test_without_the_arrays_a_delta_says_what_the_statistics_know():
    import dataclasses

    insp = written(A, B, keep="stats")
    (d,) = insp.diffs[0].leaves
    assert d.changed == ref(A, B)[0] and tuple(d.nonfinite_delta()) == ref(A, B)[1:4]  # the call's own arrays
    gone = fi.LeafDiff(d.path, "changed", dataclasses.replace(d.before, handle=None),
                       dataclasses.replace(d.after, handle=None), d.changed, d.max_abs, d.mean_abs)
    assert gone.nonfinite_delta() is None and gone.finite_changed is None  # where the NaNs went: unknown
    line = F.delta(gone)
    assert line.startswith("6/10 changed; non-finite 2 nan, 1 +inf, 1 -inf -> 2 nan, 2 +inf, max|Δ| inf, Δmean"), line
    fa, fb = A[np.isfinite(A)].astype(np.float64), B[np.isfinite(B)].astype(np.float64)
    assert gone.delta_mean == pytest.approx(fb.mean() - fa.mean(), rel=1e-12)
    assert gone.delta_std == pytest.approx(fb.std() - fa.std(), rel=1e-12)
    assert f"Δmean {fb.mean() - fa.mean():+.4g}, Δstd {fb.std() - fa.std():+.4g}" in line


def test_unchanged_and_equal_read_as_such():
    insp = written(A, A)
    (d,) = insp.diffs[0].leaves
    assert d.status == "unchanged" and F.delta(d) == "0/10 changed" and d.nonfinite_delta() == (0, 0, 0)


# -- compare: order, first divergence, equal leaves -------------------------------------
def train_eval():
    model, variables, x = demo_inputs()
    run = fi.inspect_apply(lambda m, x, train: m(x, train), model, mutable=["batch_stats"],
                           capture_intermediates=True)
    return run(variables, x, False), run(variables, x, True, rngs={"dropout": jax.random.key(0)})


def test_comparison_in_execution_order_names_the_first_divergence_and_folds_equal_leaves():
    ev, tr = train_eval()
    cmp = fi.compare(ev, tr, labels=("eval", "train"))
    first = cmp.first_divergence()
    # the first call whose output differs, in execution order: BatchNorm normalises by batch statistics in train
    calls = {c.key: c for c in ev.calls}
    assert first.key == "encoder/BatchNorm_0:__call__[0]" and first.section == "intermediates"
    assert all(d.equal for d in cmp.in_order("intermediates") if d.order < calls[first.key].order)
    orders = [d.order for d in cmp.in_order("intermediates")]
    assert orders == sorted(orders)
    text = cmp.to_text()
    lines = text.splitlines()
    assert lines[0].endswith("; first divergence: intermediates encoder/BatchNorm_0:__call__[0]")
    inter = lines[lines.index(next(x for x in lines if x.startswith("intermediates:"))) + 1]
    assert inter.startswith("  encoder/BatchNorm_0:__call__[0]: ") and inter.endswith(DIVERGENCE_MARK)
    assert "  16 equal leaves" in lines and "  1 equal leaf" in lines  # variables; Dense_0 in intermediates
    assert not any("params/" in x for x in lines)  # the equal leaves folded: one line each section
    # by size on request: the ranking, the first divergence still marked
    by_size = cmp.to_text(order="size").splitlines()
    ranked = [d.key for d in cmp.ranked("intermediates") if not d.equal]
    listed = [x.split(": ")[0].strip() for x in by_size if x.startswith("  ") and "changed" in x
              and x.split(": ")[0].strip() in {d.key for d in cmp.deltas if d.section == "intermediates"}]
    assert listed == ranked
    assert any(x.endswith(DIVERGENCE_MARK) for x in by_size)
    with pytest.raises(ValueError):
        cmp.ordered("intermediates", "largest")  # type: ignore[arg-type]
    # every Δ line against numpy on the stored values
    for d in cmp.deltas:
        if d.a is not None and d.b is not None and d.a.kept and d.b.kept:
            changed, _, _, _, mx, _ = ref(d.a.value, d.b.value)
            assert d.changed == changed and d.max_abs == pytest.approx(mx, rel=1e-6, abs=0), d.key


def test_comparison_rows_fold_equal_leaves_and_open_them_on_request():
    ev, tr = train_eval()
    cmp = fi.compare(ev, tr)
    src = ComparisonSource(cmp)
    top, _ = src.children("")
    assert [r["name"] for r in top] == ["output", "variables", "intermediates"]
    variables, n = src.children("variables")
    assert n == 1 and variables[0]["folded"] and variables[0]["name"] == "16 equal leaves" and variables[0]["n"] == 16
    leaves, total = src.children(variables[0]["id"])
    assert total == 16 and all(r["summary"] == "" and r.get("fact") == "equal" for r in leaves)
    inter, _ = src.children("intermediates")
    assert inter[0]["mark"] == DIVERGENCE_MARK and inter[0]["fact"].endswith("changed")
    assert "first divergence: intermediates encoder/BatchNorm_0:__call__[0]" in src.heading()
    # a leaf inside the folded row is reachable (a jump opens the fold)
    key = f"variables:{cmp.in_order('variables')[3].key}"
    assert src.page("variables", until=key)[0]["id"] == variables[0]["id"]
    by_size = ComparisonSource(cmp, order="size")
    sized, _ = by_size.children("intermediates")
    assert [r["id"] for r in sized if not r.get("folded")] == [
        f"intermediates:{d.key}" for d in cmp.ranked("intermediates") if not d.equal]


# -- the detail pane -----------------------------------------------------------------
def _text(fragment: str) -> str:
    return re.sub(r"<script.*?</script>", "", fragment, flags=re.S)


def test_mutation_detail_shows_before_after_and_delta_with_counts_from_numpy():
    insp = written(A, B)
    (d,) = insp.diffs[0].leaves
    html = D.leaf_detail("state/v", d)
    body = _text(html)
    titles = re.findall(r"<div class='fi-title'>(.*?)</div>", body)
    assert titles == ["state/v", "before", "after", "Δ = after − before"]
    assert body.count("<treescope-container") == 3  # before, after, Δ heatmap
    p = D.delta_preview(d.before, d.after)
    changed, to_nan, from_nan, inf, mx, _ = ref(A, B)
    assert (p.changed, p.to_nan, p.from_nan, p.inf, p.max_abs, p.shown) == (changed, to_nan, from_nan, inf, mx, A.size)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(p.delta, B.astype(np.float64) - A.astype(np.float64))
    np.testing.assert_array_equal(p.mask, ~((A == B) | (np.isnan(A) & np.isnan(B))))
    assert p.line() == "Δ: 6 of 10 changed (1 to nan, 1 from nan, 3 to/from inf), max|Δ| inf"
    assert F.esc(p.line()) in body
    assert F.esc(F.delta(d)) in body


def test_detail_of_a_bounded_preview_counts_the_shown_part():
    big_a = np.zeros((300, 300), np.float32)
    big_b = big_a.copy()
    big_b[0, :5] = [1, 2, np.nan, -4, 0]
    big_b[299, 299] = 9  # outside the preview
    d = written(big_a, big_b).diffs[0].leaves[0]
    p = D.delta_preview(d.before, d.after)
    shown = tuple(s.stop for s in D.preview_index((300, 300)))
    assert p.shown == shown[0] * shown[1] < big_a.size
    assert (p.changed, p.to_nan, p.max_abs) == (4, 1, 4.0)
    assert p.line().startswith(f"Δ over [:{shown[0]}, :{shown[1]}]: 4 of {p.shown:,} changed (1 to nan)")
    assert d.changed == 5  # the whole array's count stays in the header line
    assert F.delta(d).startswith("5/90,000 changed (1 to nan); max|Δ| 9")


def test_pair_detail_shows_both_sides_and_the_delta_escaped():
    c = fi.compare(written(A, A), written(A, B), labels=("<i>a</i>", "b"))
    body = _text(D.pair_detail(c.labels, c["output"]))
    assert "<i>a" not in body and "&lt;i&gt;a&lt;/i&gt; vs b: output" in body
    assert re.findall(r"<div class='fi-title'>(.*?)</div>", body)[1:] == ["&lt;i&gt;a&lt;/i&gt;", "b",
                                                                          "Δ = b − &lt;i&gt;a&lt;/i&gt;"]
    assert "6 of 10 changed" in body
    # a pair of other shapes: both sides, no Δ
    other = fi.compare(written(A, A), written(A[:4], B[:4]))
    body = _text(D.pair_detail(other.labels, other["output"]))
    assert "Δ =" not in body and body.count("<treescope-container") == 2


# -- gradients: bars on one log axis ----------------------------------------------------
def test_gradient_bars_share_one_log_axis_in_every_view():
    from models import grad_inspection

    insp = grad_inspection()
    axis = grad_axis(insp)
    values = [n.grad_norm for n in insp.grad_norms()] + [u.grad_norm for u in insp.update_scales()]
    logs = np.log10([v for v in values if v > 0 and np.isfinite(v)])
    assert axis.lo == math.floor(logs.min()) and axis.hi == max(math.ceil(logs.max()), axis.lo + 1)
    doc = document(insp)
    grads = doc.section("gradients")
    assert f"bars: |grad| on a log axis 1e{axis.lo:+03d}..1e{axis.hi:+03d}" in grads.summary
    rows = [r for head in grads.rows for r in head.children if r.bar_title]
    assert rows
    for r in rows:
        value = float(r.bar_title.split()[-1])
        if value > 0 and np.isfinite(value):
            assert r.bar == pytest.approx((np.log10(value) - axis.lo) / (axis.hi - axis.lo), abs=1e-12)
            assert 0 <= r.bar <= 1
        else:
            assert r.bar is None
        assert lower(r)["bar_title"] == r.bar_title
    # text: the bars are a column of one width at the start of each row
    text = [x for x in insp.to_text().splitlines() if x.lstrip().startswith("[")]
    assert len({x.index("[") for x in text if x.startswith("    [")}) == 1
    assert all(re.match(r"\s*\[[#. ]{12}\]|\s*\[\s+n/a\s+\] ", x) for x in text)
    page = insp.to_html()
    widths = re.findall(r'class="fi-bar-fill" style="width:([0-9.]+)%"', page)
    assert len(widths) == len(rows)


# -- depth chart --------------------------------------------------------------------------
def test_depth_chart_has_ticks_and_one_point_per_scan_iteration():
    from inspector.views.depth import caption, depth_figure, depth_points, depth_svg, point_line

    model, x = ScanNet(axes=("params", "intermediates")), jnp.arange(8.0).reshape(2, 4)
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    points = depth_points(insp)
    dense = insp.call("layers/Dense_0:__call__")
    steps = [p for p in points if p.order == dense.order]
    assert [p.step for p in steps] == [0, 1, 2]
    stacked = np.asarray(dense.outputs[0].value, np.float64)
    for p in steps:
        v = stacked[p.step]
        assert p.mean == pytest.approx(v.mean(), rel=1e-12) and p.std == pytest.approx(v.std(), rel=1e-12)
        assert p.abs_max == np.abs(v).max() and p.nonfinite == 0
    assert "one point per iteration" in caption(points)
    svg = depth_svg(points)
    assert ">#0.0<" in svg.replace("</title>", "<") or "#0.0" in svg
    assert len(re.findall(r'text-anchor="end" style="font-size:10px">', svg)) >= 4  # y tick labels, both panels
    assert "call index (execution order)" in svg
    assert all(point_line(p) in svg for p in points if "<" not in p.label)
    # statistics only: the scanned call is one point, and the caption says so
    kept = fi.inspect_apply(lambda m, x: m(x), model, keep="stats")(variables, x)
    pts = depth_points(kept)
    assert sum(1 for p in pts if p.stacked) == 2 and "keep='stats'" in caption(pts)
    assert F.esc(caption(pts)) in depth_figure(pts)


# -- rows: the key fact first ----------------------------------------------------------
def _walk(rows):
    for row in rows:
        yield row
        yield from _walk(row.children)


@pytest.mark.parametrize("which", ["lognet", "grad"])
def test_every_row_with_a_nan_or_inf_says_it_first(which):
    from models import LogNet, grad_inspection

    if which == "grad":
        insp = grad_inspection()
    else:
        model, x = LogNet(), jnp.ones((2, 3))
        insp = fi.inspect_apply(lambda m, x: m(x), model)(nn.init(lambda m, x: m(x), model)(jax.random.key(0), x), x)
    doc = document(insp)
    rows = [r for s in doc.sections for r in _walk(s.rows)]
    bad = [r for r in rows if r.leaf is not None and r.leaf.nonfinite]
    assert bad
    for r in bad:
        st = r.leaf.stats
        assert r.fact == "!! " + ", ".join(f"{n} {k}" for n, k in ((st.nan, "nan"), (st.posinf, "+inf"),
                                                                   (st.neginf, "-inf")) if n), r
        assert line(r).split(": ", 1)[1].startswith(r.fact)  # before shape and dtype
        assert lower(r)["fact"] == r.fact and "!!" not in lower(r)["summary"]
    page = insp.to_html()
    first = insp.first_nonfinite() if which == "lognet" else None
    if first is not None:  # the static page's value line of the first non-finite call says it first too
        assert f"value: !! {first.outputs[0].stats.nan} nan; " in page


def test_plurals_and_short_call_names():
    assert F.plural(1, "leaf") == "1 leaf" and F.plural(2, "leaf") == "2 leaves" and F.plural(1, "call") == "1 call"
    assert F.plural(0, "call") == "0 calls" and F.plural(1_000, "output") == "1,000 outputs"
    insp = written(A, B)
    text = insp.to_text()
    assert "intermediates: 1 call in execution order" in text and "variables: !! 4 non-finite; 1 leaf," in text
    assert "binding: 1 method call in order" in text
    assert repr(insp).endswith("1 variable, 1 mutated collection, 1 captured call>")


class Mixed(nn.Module):
    """A mutation of each kind of array: an int scalar, a typed PRNG key, bfloat16, bool, complex."""

    @nn.compact
    def __call__(self, x):
        count = self.variable("state", "count", lambda: jnp.zeros((), jnp.int32))
        count.value = count.value + 3
        key = self.variable("state", "key", lambda: jax.random.key(0))
        key.value = jax.random.split(key.value)[0]
        half = self.variable("state", "half", lambda: jnp.zeros(3, jnp.bfloat16))
        half.value = half.value + x.astype(jnp.bfloat16)
        flag = self.variable("state", "flag", lambda: jnp.zeros(3, bool))
        flag.value = ~flag.value
        z = self.variable("state", "cplx", lambda: jnp.zeros(2, jnp.complex64))
        z.value = z.value * 2 + jnp.array([1j, 0])
        return x


def test_mutation_detail_of_every_dtype_shows_a_delta_that_numpy_agrees_with():
    m, x = Mixed(), jnp.array([1.5, -1.0, 2.0])
    insp = fi.inspect_apply(lambda m, x: m(x), m, mutable=["state"])(m.init(jax.random.key(1), x), x)
    for d in insp.diffs[0].leaves:
        body = _text(D.leaf_detail(d.key, d))
        assert titles_of(body)[:3] == [d.key, "before", "after"]
        if d.key == "state/key":
            assert "no array view of PRNG keys" in body and D.delta_preview(d.before, d.after) is None
            continue
        p = D.delta_preview(d.before, d.after)
        a, b = np.asarray(d.before.value), np.asarray(d.after.value)
        assert p.changed == d.changed == int(np.count_nonzero(a != b)), d.key
        ref_delta = np.abs(b.astype(np.complex128) - a) if a.dtype.kind == "c" else \
            b.astype(np.float64) - a.astype(np.float64)
        np.testing.assert_array_equal(p.delta, ref_delta)
        assert p.max_abs == (float(np.abs(ref_delta[a != b]).max()) if p.changed else 0.0)
        assert F.esc(p.line()) in body


def titles_of(body):
    return re.findall(r"<div class='fi-title'>(.*?)</div>", body)

"""The Inspection model: variables, diffs, intermediates order, lookup, lazy values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import capture as C
from models import LogNet, ae_setup


def fn(m, x):
    return m.decode(m.encode(x))


def test_variables_tree_metadata():
    model, variables, x = ae_setup()
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
    assert list(insp.variables.collections) == ["batch_stats", "params"]
    kernel = insp["params/enc/kernel"]
    assert kernel.shape == (5, 3) and kernel.dtype == "float32" and kernel.size == 15 and kernel.nbytes == 60
    assert kernel.device == str(jax.devices()[0])
    np.testing.assert_array_equal(kernel.value, np.asarray(variables["params"]["enc"]["kernel"]))
    params = insp.variables["params"]
    assert params.count == 8
    assert params.size == sum(np.size(v) for v in jax.tree.leaves(variables["params"]))
    assert insp.variables.nbytes == sum(v.nbytes for v in jax.tree.leaves(variables))


def test_mutation_diff():
    model, variables, x = ae_setup()
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
    (diff,) = insp.diffs
    assert diff.name == "batch_stats"
    assert {d.path: d.status for d in diff.leaves} == {("batch_stats", "bn", "mean"): "changed",
                                                         ("batch_stats", "bn", "var"): "changed"}
    y, state = nn.apply(fn, model, mutable=["batch_stats"])(variables, x)
    mean = diff.leaves[[d.path[-1] for d in diff.leaves].index("mean")]
    delta = np.abs(np.asarray(state["batch_stats"]["bn"]["mean"]) - np.asarray(variables["batch_stats"]["bn"]["mean"]))
    assert mean.changed == int((delta > 0).sum())
    assert mean.max_abs_delta == pytest.approx(delta.max(), rel=1e-5)
    assert mean.delta_mean == pytest.approx(float(state["batch_stats"]["bn"]["mean"].mean()) -
                                            float(variables["batch_stats"]["bn"]["mean"].mean()), abs=1e-6)
    ranked = diff.ranked()
    assert ranked[0].max_abs_delta >= ranked[1].max_abs_delta
    np.testing.assert_allclose(insp.output, y, rtol=1e-5)
    # one delta type: a mutation is a LeafDelta of before (a) and after (b), keyed by its path
    assert isinstance(mean, fi.LeafDelta) and mean.key == "batch_stats/bn/mean" and mean.section == "batch_stats"
    assert (mean.a, mean.b, mean.max_abs) == (mean.before, mean.after, mean.max_abs_delta)
    assert mean.delta_mean == fi.LeafDelta("variables", mean.key, mean.before, mean.after).delta_mean


def test_added_and_unchanged_leaves():
    class Counter(nn.Module):
        @nn.compact
        def __call__(self, x):
            c = self.variable("counter", "n", lambda: jnp.zeros((), jnp.int32))
            fixed = self.variable("counter", "fixed", lambda: jnp.ones(3))
            c.value += 1
            self.variable("extra", "fresh", lambda: jnp.ones(2))
            return x * fixed.value

    model, x = Counter(), jnp.ones(3)
    variables = {"counter": {"n": jnp.zeros((), jnp.int32), "fixed": jnp.ones(3)}}
    insp = fi.inspect_apply(lambda m, x: m(x), model, mutable=["counter", "extra"])(variables, x)
    statuses = {d.path: d.status for diff in insp.diffs for d in diff.leaves}
    assert statuses == {("counter", "fixed"): "unchanged", ("counter", "n"): "changed", ("extra", "fresh"): "added"}


def test_intermediates_in_execution_order_with_sows_and_shared_calls():
    model, variables, x = ae_setup()
    insp = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"],
                            capture_intermediates=C.everything)(variables, x)
    assert [c.key for c in insp.calls] == [
        "enc:__call__[0]", "/:h[0]", "/:encode[0]", "dec:__call__[0]", "bn:__call__[0]", "/:decode[0]",
        "/:h[1]", "shared:__call__[0]", "shared:__call__[1]", "/:__call__[0]"]
    assert [c.order for c in insp.calls] == list(range(10))
    assert insp.call("/:h[1]").sown and not insp.call("enc:__call__").sown
    assert insp.call("shared:__call__[1]").module_type == "Dense"
    _, state = nn.apply(lambda m, x: m(x), model, mutable=["batch_stats"],
                        capture_intermediates=C.everything)(variables, x)
    for call, ref in [("/:h[0]", state["intermediates"]["h"][0]), ("/:h[1]", state["intermediates"]["h"][1]),
                      ("shared:__call__[1]", state["intermediates"]["shared"]["__call__"][1])]:
        np.testing.assert_allclose(insp[call].value, ref, rtol=1e-6)
        s = insp[call].stats
        assert s.mean == pytest.approx(float(np.mean(ref)), abs=1e-6)


def test_first_nonfinite():
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    first = insp.first_nonfinite()
    assert first is not None and first.key == "d3:__call__[0]"
    # d2's output is finite (the log happens outside it); d3 sees the NaN first
    assert [c.key for c in insp.calls if c.nonfinite] == ["d3:__call__[0]", "/:__call__[0]"]


def test_tuple_outputs_and_lookup_errors():
    class Pair(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x), {"aux": x * 2}

    model, x = Pair(), jnp.ones((1, 2))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    top = insp.call("/:__call__")
    assert [leaf.path for leaf in top.outputs] == [("__call__[0]", "0"), ("__call__[0]", "1", "aux")]
    assert len(insp.outputs) == 2
    with pytest.raises(KeyError, match="returned 2 arrays"):
        insp["/:__call__"]
    with pytest.raises(KeyError, match="no captured call"):
        insp.call("nope:__call__")
    with pytest.raises(KeyError, match="no variable"):
        insp["params/nope"]


def test_keep_stats_keeps_no_activations():
    model, variables, x = ae_setup()
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"], keep="stats")(variables, x)
    assert "intermediates" not in insp.state and "batch_stats" in insp.state
    call = insp.call("enc:__call__")
    assert call.outputs[0].stats is not None and not call.outputs[0].kept
    with pytest.raises(LookupError, match="keep='stats'"):
        _ = call.outputs[0].value
    assert insp["params/enc/kernel"].value.shape == (5, 3)  # variables are still reachable


def test_init_inspections():
    model, _, x = ae_setup()
    insp = fi.inspect_init(lambda m, x: m(x), model)(jax.random.key(0), x)
    assert insp.kind == "init" and insp.outputs == [] and insp.calls == []
    assert set(insp.variables.collections) == {"params", "batch_stats"}
    assert insp["params/enc/kernel"].shape == (5, 3)
    iwo = fi.inspect_init_with_output(lambda m, x: m(x), model)(jax.random.key(0), x)
    assert iwo.output.shape == (2, 5) and "intermediates" in iwo.state
    assert [c.key for c in iwo.calls][-1] == "/:__call__[0]"


def test_to_records_and_pandas_one_row_per_leaf_with_its_statistics():
    model, variables, x = ae_setup()
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
    records = insp.to_records()
    by_section = {}
    for r in records:
        by_section.setdefault(r["section"], []).append(r)
    assert len(by_section["variables"]) == len(list(insp.variables.leaves()))
    assert len(by_section["intermediates"]) == sum(len(c.outputs) for c in insp.calls)
    for r in by_section["variables"]:  # each row is the leaf insp[key] finds, with numpy's statistics
        value = np.asarray(insp[r["key"]].value, np.float64)
        assert r["shape"] == value.shape and r["size"] == value.size
        assert r["max"] == value.max() and r["min"] == value.min()
        assert r["mean"] == pytest.approx(value.mean(), rel=2e-5, abs=1e-7)
        assert r["zero_frac"] == pytest.approx((value == 0).mean())
    call = insp.calls[0]
    row = next(r for r in by_section["intermediates"] if r["key"] == call.key)
    assert row["order"] == call.order and row["nonfinite"] == call.nonfinite
    pd = pytest.importorskip("pandas")
    frame = insp.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(records)
    assert list(frame.columns[:4]) == ["section", "key", "part", "order"]


def test_to_records_of_gradients():
    from models import grad_inspection

    insp = grad_inspection()
    sections = {r["section"] for r in insp.to_records()}
    assert {"gradients", "activation gradients"} <= sections
    grad_rows = [r for r in insp.to_records() if r["section"] == "gradients"]
    for r in grad_rows:
        assert r["nonfinite"] == insp.grad(r["key"]).nonfinite


def test_leaf_delta_relative_is_never_nan_and_statistics_only_pairs_compare_their_statistics():
    def leaf(values):
        from inspector import stats

        return fi.Leaf(("v",), (len(values),), "float32", stats=stats.host.host_stats(np.asarray(values, np.float32)))

    nan, ok = leaf([np.nan, np.nan]), leaf([1.0, 3.0])
    d = fi.LeafDelta("variables", "v", nan, ok)  # statistics only: no element-wise numbers
    assert d.status == "statistics only" and not d.equal
    assert d.scale is None and d.relative == float("inf") and d.divergence == float("inf")
    same = fi.LeafDelta("variables", "v", leaf([1.0, np.nan]), leaf([1.0, np.nan]))
    assert same.equal and same.relative == 0.0
    measured = fi.LeafDelta("variables", "v", ok, leaf([1.0, 4.0]), max_abs=1.0, mean_abs=0.5, changed=1)
    assert measured.scale == 3.0 and measured.relative == pytest.approx(1 / 3)
    assert measured.nonfinite_delta() == (0, 0, 0)  # no NaN or Inf on either side: nothing to count


def test_comparison_orders_by_execution_or_size_and_names_the_first_divergence():
    model, variables, x = ae_setup()
    run = fi.inspect_apply(fn, model, mutable=["batch_stats"], capture_intermediates=True)
    a = run(variables, x)
    b = run(variables, x * 2)
    cmp = fi.compare(a, b)
    inter = cmp.in_order("intermediates")
    assert [d.order for d in inter] == sorted(d.order for d in inter) == [c.order for c in a.calls]
    assert cmp.ordered("intermediates", "size") == cmp.ranked("intermediates")
    first = cmp.first_divergence()
    assert first is next(d for d in inter if not d.equal) and first.order == 0
    assert fi.compare(a, a).first_divergence() is None
    assert "no differences" in fi.compare(a, a).to_text().splitlines()[0]

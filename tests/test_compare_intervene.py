"""fi.compare aligns two inspections; fi.intervene patches an intermediate and re-runs."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import inspector as fi
from inspector.demo import demo_inputs
from inspector.views.widgets import ComparisonWidget


def train_eval():
    model, variables, x = demo_inputs()
    run = fi.inspect_apply(lambda m, x, train: m(x, train), model, mutable=["batch_stats"])
    ev = run(variables, x, False)
    tr = run(variables, x, True, rngs={"dropout": jax.random.key(0)})
    return ev, tr


def test_compare_train_vs_eval_is_aligned_and_ranked():
    ev, tr = train_eval()
    cmp = fi.compare(ev, tr, labels=("eval", "train"))
    out = cmp["output"]
    ref = np.abs(np.asarray(tr.output) - np.asarray(ev.output))
    assert out.max_abs == pytest.approx(ref.max(), rel=1e-5) and out.changed == int((ref > 0).sum())
    assert out.mean_abs == pytest.approx(ref.mean(), rel=1e-5)
    assert all(d.status == "equal" for d in cmp.ranked("variables"))  # same variables went in
    ranked = cmp.ranked("intermediates")
    assert [d.divergence for d in ranked] == sorted((d.divergence for d in ranked), reverse=True)
    # the first BatchNorm normalises with batch statistics in train mode, running averages in eval
    assert cmp["encoder/BatchNorm_0:__call__[0]"].status == "differs"
    assert cmp["encoder/Dense_0:__call__[0]"].status == "equal"
    assert "intermediates: 11 of 12 differ" in cmp.to_text()


def test_compare_structural_differences_and_stats_only():
    model, variables, x = demo_inputs()
    a = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    b = fi.inspect_apply(lambda m, x: m.encode(x), model, keep="stats")(variables, x)
    cmp = fi.compare(a, b)
    assert cmp["decoder/Dense_0:__call__[0]"].status == "only in a"
    assert cmp["encoder:__call__[0]"].status == "statistics only"  # b kept no arrays
    assert cmp["output"].status == "shape differs"
    assert cmp.ranked()[0].divergence == float("inf")


def test_intervene_zeroes_an_intermediate_and_shows_the_effect():
    model, variables, x = demo_inputs()
    cmp = fi.intervene(lambda m, x: m(x), model, {"encoder/Dense_1:__call__": fi.zero})(variables, x)
    patched = cmp.b.call("encoder/Dense_1:__call__")
    assert np.all(patched.outputs[0].value == 0)
    assert cmp["encoder/Dense_0:__call__[0]"].status == "equal"  # upstream untouched
    assert cmp["output"].status == "differs"
    # flax agrees: zeroing Dense_1's output by hand gives the patched output
    def zero_dense_1(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        return y * 0 if context.module.path == ("encoder", "Dense_1") else y

    with nn.intercept_methods(zero_dense_1):
        ref = model.apply(variables, x)
    np.testing.assert_allclose(cmp.b.output, ref, rtol=1e-5, atol=1e-6)


def test_patch_values_indices_and_typos():
    model, variables, x = demo_inputs()
    run = fi.inspect_apply(lambda m, x: m(x), model, patches={"decoder/Dense_1:__call__[0]": 2.5})
    assert np.all(run(variables, x).output == 2.5)
    scaled = fi.inspect_apply(lambda m, x: m(x), model, patches={"decoder/Dense_1:__call__": fi.scale(0.5)})
    clean = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    np.testing.assert_allclose(scaled(variables, x).output, clean.output * 0.5, rtol=1e-6)
    with pytest.raises(KeyError,
                       match=r"patch 'decoder/Dense_9:__call__' matched no call; calls seen: .*decoder/Dense_1"):
        fi.inspect_apply(lambda m, x: m(x), model, patches={"decoder/Dense_9:__call__": fi.zero})(variables, x)
    with pytest.raises(ValueError, match="not of the form"):
        fi.inspect_apply(lambda m, x: m(x), model, patches={"nonsense": fi.zero})


def test_comparison_views():
    ev, tr = train_eval()
    cmp = fi.compare(ev, tr, labels=("eval", "<b>train</b>"))
    w = ComparisonWidget(cmp)
    assert [r["name"] for r in w.tree.initial] == ["output", "variables", "intermediates"]
    inter = w.tree.initial[2]["children"]
    assert inter[0]["cls"] == "changed"
    w.set_state({"selected": {"tree": "comparison", "id": "output:output"}})  # what a click on the leaf does
    html = w.detail_html  # views/detail.py's pair_detail, shown in the widget's detail pane
    assert "eval" in html and "&lt;b&gt;train&lt;/b&gt;" in html and "<b>train" not in html
    page = cmp._repr_mimebundle_()["text/html"]
    assert "&lt;b&gt;train&lt;/b&gt;" in page and "<b>train" not in page

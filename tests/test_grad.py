"""fi.inspect_grad against jax.grad on the same function: parameter gradients, and activation
gradients checked against a model that calls flax's ``perturb`` by hand."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from tests.models import ScanNet

KEYS = {"dropout": jax.random.key(2)}


class Net(nn.Module):
    """Dense, BatchNorm, Dropout, one Dense called twice, a remat'd Dense. With ``perturbed``, the
    output of each call is passed through ``perturb`` (the hand-written reference)."""

    perturbed: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        p = self.perturb if self.perturbed else (lambda name, y: y)
        h = p("dense", nn.Dense(6)(x))
        h = p("bn", nn.BatchNorm(use_running_average=not train)(h))
        h = p("drop", nn.Dropout(0.5, deterministic=not train)(h))
        shared = nn.Dense(6)
        h = p("shared0", shared(nn.relu(h)))
        h = p("shared1", shared(jnp.tanh(h)))
        return p("remat", nn.remat(nn.Dense)(3)(h))


SITES = {"Dense_0:__call__[0]": "dense", "BatchNorm_0:__call__[0]": "bn", "Dropout_0:__call__[0]": "drop",
         "Dense_1:__call__[0]": "shared0", "Dense_1:__call__[1]": "shared1", "CheckpointDense_0:__call__[0]": "remat"}


def loss_fn(model, x):
    return jnp.mean(model(x) ** 2)


def net_setup():
    x = jax.random.normal(jax.random.key(9), (4, 5))
    variables = Net(perturbed=True).init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    perturbations = variables.pop("perturbations")
    return x, dict(variables), perturbations


def reference(variables, perturbations, x):
    """jax.grad of the loss w.r.t. params and the hand-written perturbations; flax's new state."""
    def loss(params, perts):
        y, state = Net(perturbed=True).apply({**variables, "params": params, "perturbations": perts}, x,
                                             rngs=KEYS, mutable=["batch_stats"])
        return jnp.mean(y ** 2), state

    (value, state), (g_params, g_perts) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], perturbations)
    return value, state, g_params, g_perts


def assert_tree_close(leaves, ref):
    flat = {tuple(k.key for k in kp): np.asarray(v) for kp, v in jax.tree_util.tree_flatten_with_path(ref)[0]}
    got = {leaf.path[1:]: leaf.value for leaf in leaves}
    assert got.keys() == flat.keys()
    for path, value in flat.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_gradients_equal_jax_grad_with_batchnorm_dropout_remat_and_a_shared_module():
    x, variables, perturbations = net_setup()
    run = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"])
    insp = run(variables, x, rngs=KEYS)
    value, state, g_params, g_perts = reference(variables, perturbations, x)
    assert insp.loss == pytest.approx(float(value), rel=1e-6)
    np.testing.assert_allclose(np.asarray(insp.output), np.asarray(value), rtol=1e-6)
    # the new batch statistics are returned as flax returns them
    np.testing.assert_allclose(insp.state["batch_stats"]["BatchNorm_0"]["mean"],
                               state["batch_stats"]["BatchNorm_0"]["mean"], rtol=1e-6)
    assert_tree_close(list(insp.grads.leaves()), g_params)
    for key, name in SITES.items():  # the shared Dense: one gradient per call
        np.testing.assert_allclose(insp.grad(key).value, np.asarray(g_perts[name]), rtol=1e-5, atol=1e-7,
                                   err_msg=key)
    assert insp.grad("Dense_1:__call__[0]").value.tolist() != insp.grad("Dense_1:__call__[1]").value.tolist()
    # the activations are those of the run, unperturbed
    y = Net().apply(variables, x, rngs=KEYS, mutable=["batch_stats"], capture_intermediates=True)[1]
    np.testing.assert_allclose(insp["Dense_1:__call__[1]"].value,
                               np.asarray(y["intermediates"]["Dense_1"]["__call__"][1]), rtol=1e-6)
    # statistics of the gradients, as for variables
    g = insp.grad("params/Dense_0/kernel")
    ref = np.asarray(g_params["Dense_0"]["kernel"])
    assert g.stats.mean == pytest.approx(ref.mean(), rel=1e-4, abs=1e-8)
    assert g.stats.norm == pytest.approx(np.linalg.norm(ref), rel=1e-4)
    # jitted once per signature
    again = run(variables, x * 2, rngs=KEYS)
    assert run.traces == 1 and again.timings.cached
    assert again.loss == pytest.approx(float(reference(variables, perturbations, x * 2)[0]), rel=1e-6)


def test_dropout_draws_from_the_given_rngs():
    x, variables, _ = net_setup()
    run = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"])
    a, b = run(variables, x, rngs=KEYS), run(variables, x, rngs={"dropout": jax.random.key(3)})
    assert a.loss != b.loss
    with pytest.raises(Exception, match="dropout"):
        run(variables, x)


def test_has_aux_and_no_mutable_collections():
    x, variables, _ = net_setup()

    def with_aux(model, x):
        y = model(x, train=False)
        return jnp.mean(y ** 2), {"y": y}

    insp = fi.inspect_grad(with_aux, Net(), has_aux=True)(variables, x)
    loss, aux = insp.output
    ref = jax.grad(lambda p: with_aux(Net().bind({**variables, "params": p}), x)[0])(variables["params"])
    assert insp.loss == pytest.approx(float(loss)) and aux["y"].shape == (4, 3)
    assert_tree_close(list(insp.grads.leaves()), ref)
    assert insp.state is None or "batch_stats" not in insp.state


class Embedder(nn.Module):
    """Integer tokens in; a call that returns an integer array beside a float one."""

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(10, 4)(tokens)
        return Pair()(h)


class Pair(nn.Module):
    def __call__(self, h):
        return h * 2, jnp.argmax(h, axis=-1)


def test_integer_inputs_and_integer_outputs():
    tokens = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
    model = Embedder()
    variables = model.init(jax.random.key(0), tokens)
    loss = lambda m, t: jnp.sum(m(t)[0] ** 2)
    insp = fi.inspect_grad(loss, model)(variables, tokens)
    ref = jax.grad(lambda p: loss(model.bind({"params": p}), tokens))(variables["params"])
    assert_tree_close(list(insp.grads.leaves()), ref)
    pair = insp.call("Pair_0:__call__[0]")
    assert [pair.output_path(g) for g in pair.grads] == [("0",)]  # no gradient for the argmax
    np.testing.assert_allclose(pair.grads[0].value, 2 * np.asarray(pair.outputs[0].value))
    embed = insp.grad("Embed_0:__call__[0]").value
    np.testing.assert_allclose(embed, 8 * np.asarray(insp["Embed_0:__call__[0]"].value), rtol=1e-6)


class Root(nn.Module):
    def __call__(self, x):
        return jnp.sqrt(x)


class SqrtNet(nn.Module):
    """Finite forward; ``sqrt`` at 0 gives an infinite derivative, so the backward pass makes NaN."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="d1")(x)
        z = Root(name="root")(h * 0.0)
        return nn.Dense(2, name="d2")(z)


def test_first_nonfinite_grad_finds_a_nan_born_in_the_backward_pass():
    model, x = SqrtNet(), jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), x)
    loss = lambda m, x: jnp.sum(m(x))
    insp = fi.inspect_grad(loss, model)(variables, x)
    ref = jax.grad(lambda p: loss(model.bind({"params": p}), x))(variables["params"])
    assert insp.first_nonfinite() is None  # the forward pass is finite
    first = insp.first_nonfinite_grad()
    assert (first.path, first.method, first.index) == (("d1",), "__call__", 0)  # the input of the sqrt
    assert insp.call("root:__call__[0]").grad_nonfinite == 0
    assert np.isnan(ref["d1"]["kernel"]).all() and insp.grad("params/d1/kernel").stats.nan == 12
    assert {u.key for u in insp.update_scales()[:2]} == {"params/d1/bias", "params/d1/kernel"}  # NaN first
    text = insp.to_text(timings=False)
    assert "first non-finite gradient (backward order): d1:__call__[0]" in text


def test_update_scales_and_gradient_norms():
    x, variables, _ = net_setup()
    insp = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"])(variables, x, rngs=KEYS)
    scales = {u.key: u for u in insp.update_scales()}
    g = np.asarray(insp.grad("params/Dense_1/kernel").value)
    p = np.asarray(variables["params"]["Dense_1"]["kernel"])
    u = scales["params/Dense_1/kernel"]
    assert u.grad_norm == pytest.approx(np.linalg.norm(g), rel=1e-4)
    assert u.ratio == pytest.approx(np.linalg.norm(g) / np.linalg.norm(p), rel=1e-4)
    ranked = [s.ratio for s in insp.update_scales()]
    finite = [r for r in ranked if r != float("inf")]
    assert ranked == finite + [float("inf")] * (len(ranked) - len(finite))  # all-zero parameters last
    assert finite == sorted(finite, reverse=True) and len(finite) == 4  # 3 kernels, the BatchNorm scale
    module = {s.key: s for s in insp.update_scales(by="module")}["params/Dense_1"]
    both = np.sqrt(np.sum(g ** 2) + np.sum(np.asarray(insp.grad("params/Dense_1/bias").value) ** 2))
    assert module.grad_norm == pytest.approx(both, rel=1e-4)
    norms = insp.grad_norms()
    assert [n.key for n in norms] == list(SITES) + ["/:__call__[0]"]  # execution order
    act = np.asarray(insp["BatchNorm_0:__call__[0]"].value)
    bn = norms[1]
    assert bn.activation_norm == pytest.approx(np.linalg.norm(act), rel=1e-4)
    assert bn.grad_norm == pytest.approx(np.linalg.norm(insp.grad("BatchNorm_0:__call__[0]").value), rel=1e-4)


def test_gradients_in_every_view():
    x, variables, _ = net_setup()
    insp = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"])(variables, x, rngs=KEYS)
    text = insp.to_text(timings=False)
    assert f"gradients: loss {insp.loss:.4g}, 7 of 7 calls with gradients" in text
    for line in ("  update scales: |grad| / |param| per parameter, largest first",
                 "  activation gradients: |grad| per captured call, execution order",
                 "] #4 Dense_1:__call__[1] (Dense): |grad| ",  # called twice: the whole key
                 "] #0 Dense_0 (Dense): |grad| "):  # called once: its path
        assert line in text
    # a bar per call and per parameter, on one log axis named in the section's title line
    assert re.search(r"calls with gradients, bars: \|grad\| on a log axis 1e[+-]\d\d\.\.1e[+-]\d\d$", text, re.M)
    bars = [line for line in text.splitlines() if re.match(r"    \[[#. ]{12}\] ", line)]
    assert len(bars) == 7 + 8  # 7 calls, 8 parameters
    html = insp.to_html()
    assert 'data-panel="gradients"' in html and "Dense_1:__call__[1]" in html
    plain = fi.inspect_apply(lambda m, x: m(x, train=False), Net())(variables, x)
    assert "gradients" not in plain.to_text(timings=False) and plain.grads is None


def test_compare_two_gradient_inspections():
    x, variables, _ = net_setup()
    run = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"])
    a, b = run(variables, x, rngs=KEYS), run(variables, x * 2, rngs=KEYS)
    cmp = fi.compare(a, b)
    d = cmp["grad params/Dense_0/kernel"]
    assert d.section == "gradients"
    ref = np.abs(b.grad("params/Dense_0/kernel").value - a.grad("params/Dense_0/kernel").value)
    assert d.max_abs == pytest.approx(ref.max(), rel=1e-5)
    assert cmp["Dense_1:__call__[1]"].section == "intermediates"
    assert cmp["grad Dense_1:__call__[1]"].section == "gradients"
    grads = cmp.ranked("gradients")
    assert len(grads) == 8 + 7 and all(g.status == "differs" for g in grads)
    assert "gradients: 15 of 15 differ" in cmp.to_text()
    assert fi.compare(a, a).ranked("gradients")[0].status == "equal"


def test_keep_stats_keeps_no_activation_gradients():
    x, variables, _ = net_setup()
    insp = fi.inspect_grad(loss_fn, Net(), mutable=["batch_stats"], keep="stats")(variables, x, rngs=KEYS)
    grad = insp.call("Dense_0:__call__[0]").grads[0]
    assert grad.stats is not None and not grad.kept
    with pytest.raises(LookupError):
        grad.preview()
    assert insp.grad("params/Dense_0/kernel").kept


def test_a_call_inside_nn_scan_gets_a_note_not_a_wrong_gradient():
    model, x = ScanNet(axes=("params", "intermediates")), jnp.ones((2, 4))
    variables = model.init(jax.random.key(0), x)
    insp = fi.inspect_grad(lambda m, x: jnp.sum(m(x)[0]), model)(variables, x)
    assert insp.call("layers/Dense_0:__call__[0]").grads is None
    assert any(n.startswith("no gradient: layers/Dense_0:__call__ runs inside a lifted transform") for n in insp.notes)
    ref = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x)[0]))(variables["params"])
    assert_tree_close(list(insp.grads.leaves()), ref)
    root = insp.grad("/:__call__[0]") if len(insp.call("/:__call__[0]").grads) == 1 else None
    assert root is None  # the root returns (carry, stacked sums): two gradients
    assert [g.shape for g in insp.call("/:__call__[0]").grads] == [(2, 4), (3,)]


def test_captured_calls_follow_the_filter():
    x, variables, _ = net_setup()
    insp = fi.inspect_grad(loss_fn, Net(), capture_intermediates=fi.capture.types(nn.Dense),
                           mutable=["batch_stats"])(variables, x, rngs=KEYS)
    assert [c.key for c in insp.calls] == ["Dense_0:__call__[0]", "Dense_1:__call__[0]", "Dense_1:__call__[1]",
                                           "CheckpointDense_0:__call__[0]"]
    assert all(c.grads for c in insp.calls)

"""Capture inside lifted transforms (never silently dropped) and the binding trace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import capture as C
from inspector.demo import demo_inputs
from models import ScanNet


class Ensemble(nn.Module):
    axes: tuple = ("params",)

    @nn.compact
    def __call__(self, x):
        members = nn.vmap(nn.Dense, variable_axes={a: 0 for a in self.axes}, split_rngs={"params": True},
                          in_axes=None, out_axes=0, axis_size=5)
        return members(2, name="members")(x)


def inspect(model, x, **kw):
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    return fi.inspect_apply(lambda m, x: m(x), model, **kw)(variables, x)


def test_scan_without_intermediates_axis_says_what_was_dropped():
    insp = inspect(ScanNet(), jnp.ones((2, 4)))
    assert [c.key for c in insp.calls] == ["/:__call__[0]"]
    assert any(n.startswith("not captured: layers/Dense_0:__call__ runs inside layers (ScanBlock)")
               for n in insp.notes)
    assert "variable_axes" in insp.to_text() and "not captured" in insp.to_html()


def test_scan_with_intermediates_axis_is_captured_per_step():
    insp = inspect(ScanNet(axes=("params", "intermediates")), jnp.ones((2, 4)))
    dense = insp.call("layers/Dense_0:__call__")
    assert dense.outputs[0].shape == (3, 2, 4)  # stacked over the 3 scan steps
    assert insp.notes == []


@pytest.mark.parametrize("axes, captured", [(("params",), False), (("params", "intermediates"), True)])
def test_vmap_ensemble(axes, captured):
    insp = inspect(Ensemble(axes=axes), jnp.ones((3, 6)))
    keys = [c.key for c in insp.calls]
    if captured:
        assert insp.call("members:__call__").outputs[0].shape == (5, 3, 2) and not insp.notes
    else:
        assert keys == ["/:__call__[0]"]
        assert insp.notes and "members:__call__ runs inside members (VmapDense)" in insp.notes[0]


@pytest.mark.parametrize("transform", [nn.remat, nn.jit])
def test_remat_and_jit_capture_normally(transform):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return transform(nn.Dense)(3, name="inner")(x)

    insp = inspect(Net(), jnp.ones((1, 2)), capture_intermediates=C.types(nn.Dense))
    assert insp.call("inner:__call__").outputs[0].shape == (1, 3) and insp.notes == []


def test_binding_trace_reads_writes_rngs():
    model, variables, x = demo_inputs()
    run = fi.inspect_apply(lambda m, x: m(x, train=True), model, mutable=["batch_stats"])
    insp = run(variables, x, rngs={"dropout": jax.random.key(0)})
    by_key = {c.key: c for c in insp.binding}
    assert [c.key for c in insp.binding][:3] == ["/:__call__", "/:encode", "encoder:__call__"]
    bn = by_key["encoder/BatchNorm_0:__call__"]
    assert bn.reads == {"batch_stats": ["mean", "var"], "params": ["scale", "bias"]}
    assert bn.writes == {"batch_stats": ["mean", "var"]}
    assert by_key["encoder/Dense_0:__call__"].reads == {"params": ["kernel", "bias"]}
    assert by_key["encoder/Dropout_0:__call__"].rngs == {"dropout": 1}
    assert by_key["encoder/Dense_0:__call__"].depth == 3
    assert by_key["encoder/Dense_0:__call__"].parent == by_key["encoder:__call__"].order
    # one key instead of a dict: flax falls back to the params stream
    fallback = run(variables, x, rngs=jax.random.key(0))
    assert {c.key: c for c in fallback.binding}["encoder/Dropout_0:__call__"].rngs == {"dropout->params": 1}


def test_binding_trace_of_init_writes_params():
    model, _, x = demo_inputs()
    insp = fi.inspect_init(lambda m, x: m(x), model)(jax.random.key(0), x)
    dense = {c.key: c for c in insp.binding}["encoder/Dense_0:__call__"]
    assert dense.writes == {"params": ["kernel", "bias"]}


def test_probes_are_inert_outside_inspection():
    model, variables, x = demo_inputs()
    fi.inspect_apply(lambda m, x: m(x), model)(variables, x)  # installs the probes
    y = nn.apply(lambda m, x: m(x), model)(variables, x)
    assert y.shape == (4, 8)
    assert fi.apply(lambda m, x: m(x), model)(variables, x).shape == (4, 8)


def test_scan_body_appears_once_in_the_binding_trace_and_patches_hit_the_loop():
    model, x = ScanNet(), jnp.ones((2, 4))
    insp = inspect(model, x)
    keys = [b.key for b in insp.binding]
    # flax traces the body twice (a structure-only pass, then the loop); the timeline shows the loop once
    assert keys == ["/:__call__", "layers:__call__", "layers/Dense_0:__call__"]
    assert insp.binding[2].reads == {"params": ["kernel", "bias"]}
    assert [b.traced for b in insp.binding] == [1, 2, 2]
    assert "layers:__call__ (Block): traced 2x by its lifted transform" in insp.to_text()
    # call index 0 is the loop's call, so patching it changes what the scan computes
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    fn = lambda m, x: m(x)
    patched = fi.inspect_apply(fn, model, patches={"layers/Dense_0:__call__[0]": fi.zero})(variables, x)
    carry, sums = patched.output
    assert float(jnp.abs(carry).max()) == 0.0 and float(jnp.abs(sums).max()) == 0.0

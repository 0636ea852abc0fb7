"""Displayed, then deleted, inspections are freed with their device arrays and widgets."""

import gc
import weakref

import flax.linen as nn
import ipywidgets
import jax
import jax.numpy as jnp

import inspector as fi


class Wide(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(256)(nn.relu(nn.Dense(256)(x)))


def test_displayed_then_deleted_inspections_are_freed():
    m, x = Wide(), jnp.ones((64, 32))
    v = m.init(jax.random.key(0), x)
    run = fi.inspect_apply(lambda m, x: m(x), m)
    gc.collect()
    before = len(ipywidgets.widgets.widget._instances)
    refs = []
    for i in range(20):
        insp = run(v, x + i)
        bundle = insp._repr_mimebundle_()  # what the notebook does to display it
        assert "application/vnd.jupyter.widget-view+json" in bundle
        refs.append((weakref.ref(insp), weakref.ref(insp.output),
                     [weakref.ref(lf.handle) for c in insp.calls for lf in c.outputs if lf.handle is not None]))
        del insp, bundle
    gc.collect()
    assert all(r() is None for r, _, _ in refs), "an Inspection outlived its display"
    assert all(o() is None for _, o, _ in refs), "an output array outlived its Inspection"
    assert all(a() is None for _, _, arrays in refs for a in arrays), "an intermediate outlived its Inspection"
    assert len(ipywidgets.widgets.widget._instances) - before < 5, "widgets of freed inspections stay open"


def test_a_widget_shown_for_a_kept_inspection_still_works():
    m, x = Wide(), jnp.ones((4, 32))
    v = m.init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), m)(v, x)
    insp._repr_mimebundle_()
    gc.collect()
    w = insp.widget()
    assert w.inspection is insp and w.trees["variables"].source is not None

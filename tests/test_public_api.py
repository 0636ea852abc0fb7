"""What ``import inspector`` offers and what it loads."""

import subprocess
import sys

import flax.linen as nn
import jax.numpy as jnp

import inspector as fi
from inspector import capture as C


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_inspector_does_not_load_flax_nnx_until_nnx_is_used():
    _run("import flax.linen, sys; assert 'flax.nnx' not in sys.modules")  # flax.linen alone does not
    _run("import inspector, sys; assert 'flax.nnx' not in sys.modules; inspector.inspect_nnx; "
         "assert 'flax.nnx' in sys.modules")
    _run("from inspector import NnxInspectRun, inspect_nnx")


def test_entry_points_return_exported_types():
    model = nn.Dense(2)
    fn = lambda m, x: m(x)
    assert isinstance(fi.apply(fn, model), fi.Runner)
    assert isinstance(fi.inspect_apply(fn, model), fi.InspectRun)
    assert isinstance(fi.inspect_init(fn, model), fi.InspectRun)
    assert issubclass(fi.NnxInspectRun, fi.InspectRun)
    assert fi.Filter is C.Filter and isinstance(C.calls, fi.Filter)
    for name in ("InspectRun", "Runner", "Filter", "CaptureFilter", "CollectionFilter", "patches",
                 "inspect_nnx", "NnxInspectRun", "SpansProcessesError"):
        assert name in fi.__all__ and name in dir(fi)
    assert issubclass(fi.SpansProcessesError, LookupError)  # what leaf.value raises for a part of a global array


def test_patch_helpers_live_in_inspector_patches():
    assert fi.zero is fi.patches.zero and fi.scale is fi.patches.scale
    y = {"h": jnp.ones(3)}
    assert float(fi.patches.zero(y)["h"].sum()) == 0.0 and float(fi.patches.scale(2.0)(y)["h"].sum()) == 6.0

"""Labels say what happened: the transform that dropped a capture, the device the outputs live on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp

import inspector as fi


class Cell(nn.Module):
    @nn.compact
    def __call__(self, c, x):
        h = nn.Dense(4)(x) + c
        return h, h


class ScanThenVmap(nn.Module):
    """An ``nn.scan`` cell holding a Dense, then an ``nn.vmap(nn.Dense)``: two transforms, one class in common."""

    @nn.compact
    def __call__(self, xs):
        scan = nn.scan(Cell, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0)
        _, ys = scan(name="scan")(jnp.zeros((2, 4)), xs)
        vmapped = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=0)
        return vmapped(4, name="vd")(ys)


def test_each_dropped_capture_names_the_transform_it_runs_inside():
    xs = jnp.ones((3, 2, 4))
    m = ScanThenVmap()
    v = m.init(jax.random.key(0), xs)
    notes = [n for n in fi.inspect_apply(ScanThenVmap.__call__, m)(v, xs).notes if n.startswith("not captured")]
    by_site = {n.split(" runs inside ")[0].removeprefix("not captured: "): n for n in notes}
    assert set(by_site) == {"scan/Dense_0:__call__", "scan:__call__", "vd:__call__"}, notes
    assert "runs inside scan (ScanCell)" in by_site["scan/Dense_0:__call__"]
    assert "runs inside scan (ScanCell)" in by_site["scan:__call__"]
    assert "runs inside vd (VmapDense)" in by_site["vd:__call__"] and "nn.vmap(" in by_site["vd:__call__"]
    assert "nn.scan(" in by_site["scan:__call__"]


def test_the_header_names_the_device_the_outputs_live_on():
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, flax.linen as nn
        import inspector as fi
        class M(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(3)(x)
        with jax.default_device(jax.devices()[1]):
            x = jnp.ones((2, 4))
            v = M().init(jax.random.key(0), x)
            run = fi.inspect_apply(M.__call__, M())
            for _ in range(3):
                insp = run(v, x)
                assert insp.output.devices() == {jax.devices()[1]}
                print(insp.device, "|", str(insp).splitlines()[0], flush=True)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        device, header = line.split(" | ")
        assert device == "cpu:1" and " on cpu:1" in header, line

"""The caller's jax contexts (default device, matmul precision) hold for an inspected run's every call,
the ones compiled ahead in the background included, and the header names the device the outputs live on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r'''
    import warnings
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np
    import inspector as fi

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x)))

    x = jnp.ones((2, 4))
    v = Net().init(jax.random.key(0), x)
    second = jax.devices()[1]
    plain = jax.jit(Net().apply)(v, x)

    with jax.default_device(second):
        run = fi.inspect_apply(Net.__call__, Net())
        first = run(v, x)
        run.settle()
        traces = run.traces
        again = run(v, x)
    for insp in (first, again):
        assert insp.output.devices() == {second}, insp.output.devices()
        assert insp.device == "cpu:1", insp.device  # the header's device
        assert [leaf.device for leaf in insp.outputs] == ["cpu:1"], [leaf.device for leaf in insp.outputs]
        assert str(insp).splitlines()[0].startswith("Inspection: apply Net on cpu:1 "), str(insp).splitlines()[0]
    assert again.timings.cached and run.traces == traces, (again.timings, run.traces, traces)
    np.testing.assert_array_equal(np.asarray(again.output), np.asarray(plain))

    # matmul precision: the program compiled ahead is the one the caller's context needs
    with jax.default_matmul_precision("highest"):
        run = fi.inspect_apply(Net.__call__, Net())
        first = run(v, x)
        run.settle()
        traces = run.traces
        again = run(v, x)
        ref = jax.jit(Net().apply)(v, x)
    assert again.timings.cached and run.traces == traces, (again.timings, run.traces, traces)
    np.testing.assert_array_equal(np.asarray(again.output), np.asarray(ref))
    print("ok")
''')


def test_default_device_and_matmul_precision_hold_for_every_call():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]

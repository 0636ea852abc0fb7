"""Sharded variables on 8 host devices: placement, per-device bytes, stats without gathering."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import inspector as fi
    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    model = nn.Dense(64)
    x = jnp.arange(16 * 32, dtype=jnp.float32).reshape(16, 32) / 100
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    kernel = jax.device_put(variables["params"]["kernel"], NamedSharding(mesh, P(None, "model")))
    variables = {"params": {"kernel": kernel, "bias": variables["params"]["bias"]}}
    x = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    run = fi.inspect_apply(lambda m, x: m(x), model)
    insp = run(variables, x)
    leaf = insp["params/kernel"]
    assert leaf.device == "8 devices (cpu)", leaf.device
    assert leaf.sharding == "NamedSharding(mesh[data=2, model=4], spec=(None, 'model'))", leaf.sharding
    assert leaf.shard_shape == (32, 16) and leaf.per_device_bytes == 32 * 16 * 4 and leaf.nbytes == 32 * 64 * 4
    ref = np.asarray(kernel)
    assert abs(leaf.stats.mean - ref.mean()) < 1e-6 and abs(leaf.stats.max - ref.max()) < 1e-6
    out = insp.call("/:__call__").outputs[0]
    assert np.allclose(out.value, np.asarray(x) @ ref + np.asarray(variables["params"]["bias"]), atol=1e-4)
    assert "/device" in insp.to_text()
    # statistics are reduced where the shards live: no all-gather of a whole array in the compiled call
    hlo = run.runner.lower(variables, x).compile().as_text()
    gathers = [l for l in hlo.splitlines() if "all-gather" in l and "= " in l]
    assert not any("f32[32,64]" in l.split("=")[1] for l in gathers), gathers
    print("OK")
''')


def test_sharded_leaves_on_eight_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr

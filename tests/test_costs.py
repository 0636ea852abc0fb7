"""insp.costs(): per-module FLOPs, bytes and parameters, held to XLA's own cost analysis and to hand counts."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.costs import Costs, CostsUnavailable, costs, si

_BENCH_MODELS = pathlib.Path(__file__).resolve().parent.parent / "bench" / "models.py"


def _bench_models():
    spec = importlib.util.spec_from_file_location("_bench_models_for_costs", _BENCH_MODELS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def xla_flops(model, variables, *args):
    """XLA's HloCostAnalysis of the unoptimized program of the same flax call."""
    analysis = jax.jit(lambda v, *a: model.apply(v, *a)).lower(variables, *args).cost_analysis()
    assert "flops" in analysis and "bytes accessed" in analysis  # jax 0.10.2: no 'transcendentals' when 0
    return {"transcendentals": 0.0, **analysis}


def n_params(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def check_sums(c: Costs) -> None:
    """Own costs sum to the total, every subtree to its own cost plus its children's, the root to the total."""
    assert sum(m.own_flops for m in c.modules) == pytest.approx(c.flops, rel=1e-9)
    assert sum(m.own_transcendentals for m in c.modules) == pytest.approx(c.transcendentals, rel=1e-9)
    assert sum(m.own_bytes_accessed for m in c.modules) == pytest.approx(c.bytes_accessed, rel=1e-9)
    root = c.module(())
    assert (root.flops, root.bytes_accessed) == pytest.approx((c.flops, c.bytes_accessed), rel=1e-9)
    for m in c.modules:
        kids = [k for k in c.modules if len(k.path) == len(m.path) + 1 and k.path[:len(m.path)] == m.path]
        assert m.flops == pytest.approx(m.own_flops + sum(k.flops for k in kids), rel=1e-9, abs=1e-9)
        assert m.params == c.params if not m.path else m.params <= c.params


# -- hand counts -------------------------------------------------------------------


def test_single_dense_hand_count():
    B, n_in, n_out = 4, 8, 16
    model = nn.Dense(n_out)
    x = jnp.ones((B, n_in))
    v = model.init(jax.random.key(0), x)
    c = fi.inspect(model, v, x).costs()
    assert c.flops == 2 * B * n_in * n_out + B * n_out  # the matmul, then the bias
    assert c.transcendentals == 0
    assert c.params == n_in * n_out + n_out and c.param_bytes == 4 * (n_in * n_out + n_out)
    call = c.call("/:__call__")
    assert call.flops == c.flops and call.output_bytes == B * n_out * 4
    assert (call.params, call.param_bytes) == (c.params, c.param_bytes)
    # operands and results of dot_general (x, kernel -> y), reshape (bias), add (y, bias -> y)
    assert c.bytes_accessed == 4 * ((B * n_in + n_in * n_out + B * n_out) + (n_out + n_out) + (2 * B * n_out + n_out))


@pytest.mark.parametrize("padding, positions", [
    ("VALID", 4 * 4),  # every kernel position of each of the 4x4 outputs is inside the 6x6 input
    ("SAME", 16 * 16),  # 6 outputs x 3 taps per axis, less the 2 that fall on the padding: 16 per axis
])
def test_conv_hand_count(padding, positions):
    B, size, c_in, c_out, k = 1, 6, 2, 4, 3
    model = nn.Conv(c_out, (k, k), padding=padding)
    x = jnp.ones((B, size, size, c_in))
    v = model.init(jax.random.key(0), x)
    c = fi.inspect(model, v, x).costs()
    taps = positions if padding == "SAME" else positions * k * k
    out = (size if padding == "SAME" else size - k + 1) ** 2
    assert c.flops == 2 * B * c_in * c_out * taps + B * out * c_out
    assert c.params == k * k * c_in * c_out + c_out
    assert c.flops == pytest.approx(xla_flops(model, v, x)["flops"], rel=1e-9)


def test_transcendentals_counted_apart_from_flops():
    class Tanh(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.tanh(nn.Dense(8)(x))

    x = jnp.ones((2, 4))
    model = Tanh()
    v = model.init(jax.random.key(0), x)
    c = fi.inspect(model, v, x).costs()
    assert c.transcendentals == 2 * 8
    assert c.flops == 2 * 2 * 4 * 8 + 2 * 8
    assert c.module(()).own_transcendentals == 16 and c.module("Dense_0").transcendentals == 0


# -- XLA's own count of the same program -----------------------------------------------


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64)(x))
        x = nn.gelu(nn.Dense(32)(x))
        x = nn.LayerNorm()(x)
        return nn.log_softmax(nn.Dense(10)(x))


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.Conv(16, (3, 3), strides=2, padding="VALID")(x)
        x = nn.Conv(16, (3, 3), kernel_dilation=2, feature_group_count=4)(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.BatchNorm(use_running_average=True)(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _oracle(model, x):
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    c = insp.costs()
    xla = xla_flops(model, v, x)
    assert c.flops == pytest.approx(xla["flops"], rel=0.02)
    assert c.transcendentals == pytest.approx(xla["transcendentals"], rel=0.02)
    assert c.xla["flops"] == xla["flops"]
    assert c.params == n_params(v)
    check_sums(c)
    return insp, c, v


def test_mlp_agrees_with_xla():
    insp, c, v = _oracle(MLP(), jnp.linspace(-1, 1, 64).reshape(4, 16))
    for name in ("Dense_0", "Dense_1", "Dense_2", "LayerNorm_0"):
        assert c.module(name).params == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v["params"][name]))


def test_convnet_agrees_with_xla():
    _oracle(ConvNet(), jnp.ones((2, 16, 16, 3)))


def test_bench_transformer_agrees_with_xla():
    models = _bench_models()
    model = models.Transformer(vocab=100, layers=2, d=32, heads=4, max_len=16)
    tokens = jnp.asarray(np.arange(2 * 16).reshape(2, 16) % 100, jnp.int32)
    insp, c, v = _oracle(model, tokens)
    assert c.module("blocks_0").flops == pytest.approx(c.module("blocks_1").flops)
    assert c.module("blocks_0/attn").flops > 0 and c.module("blocks_0/mlp/fc1").params == 32 * 128 + 128
    # every captured call has a cost row of the same key, in the same order
    keys = [call.key for call in c.calls]
    assert [call.key for call in insp.calls] == [k for k in keys if k in {call.key for call in insp.calls}]
    assert c.call("blocks_1:__call__").order == insp.call("blocks_1:__call__").order
    assert c.call("blocks_1/mlp:__call__").params == c.module("blocks_1/mlp").params == 2 * 32 * 128 + 128 + 32


class Cell(nn.Module):
    @nn.compact
    def __call__(self, carry, x):
        h = jnp.tanh(nn.Dense(32)(carry) + nn.Dense(32)(x))
        return h, h


class Scanned(nn.Module):
    unroll: int = 1

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(Cell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1,
                       unroll=self.unroll)
        _, ys = scan(name="scan")(jnp.zeros((x.shape[0], 32)), x)
        return nn.Dense(4)(ys)


def test_scan_body_charged_per_iteration():
    B, T, n_in = 2, 6, 8
    x = jnp.ones((B, T, n_in))
    model = Scanned()
    v = model.init(jax.random.key(0), x)
    c = fi.inspect(model, v, x).costs()
    # XLA counts a while loop's body once; with the loop unrolled it counts every iteration: that is the oracle
    unrolled = xla_flops(Scanned(unroll=T), v, x)
    assert c.flops == pytest.approx(unrolled["flops"], rel=0.02)
    assert c.transcendentals == pytest.approx(unrolled["transcendentals"], rel=0.02)
    assert xla_flops(model, v, x)["flops"] < c.flops / 2  # the rolled loop, counted once by XLA
    dense = c.call("scan/Dense_1:__call__")
    assert dense.flops == T * (2 * B * n_in * 32 + B * 32)
    assert dense.output_bytes == T * B * 32 * 4
    assert c.module("scan").transcendentals == T * B * 32
    assert c.params == n_params(v)
    check_sums(c)


def test_cond_charges_the_costlier_branch():
    class Branchy(nn.Module):
        @nn.compact
        def __call__(self, x, flag):
            return jax.lax.cond(flag, lambda y: y @ jnp.ones((8, 8)), lambda y: y + 1.0, x)

    x = jnp.ones((4, 8))
    model = Branchy()
    c = costs(model, {}, x, jnp.bool_(True), memory=False)
    # the matmul branch (not the 32 of the other, nor their sum), and the predicate's conversion to an index
    assert c.flops == 2 * 4 * 8 * 8 + 1
    assert c.flops == c.xla["flops"]


# -- the method on an inspection -----------------------------------------------------------


def test_costs_cached_and_memory():
    x = jnp.ones((4, 16))
    model = MLP()
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    c = insp.costs()
    assert insp.costs() is c
    mem = c.memory
    assert mem is not None and mem.argument_bytes >= 4 * n_params(v) and mem.output_bytes == 4 * 4 * 10
    assert mem.peak_bytes == mem.argument_bytes + mem.output_bytes + mem.temp_bytes - mem.alias_bytes


def test_costs_of_an_init_and_an_apply_function():
    x = jnp.ones((4, 16))
    model = MLP()
    insp = fi.inspect_init(lambda m, x: m(x), model)(jax.random.key(0), x)
    c = insp.costs(memory=False)
    assert c.params == sum(leaf.size for leaf in insp.variables.leaves() if leaf.path[0] == "params") > 0
    assert c.flops > 0 and c.memory is None
    v = model.init(jax.random.key(0), x)
    twice = fi.inspect_apply(lambda m, x: m(x) * 2.0, model)(v, x).costs(memory=False)
    once = fi.inspect(model, v, x).costs(memory=False)
    assert twice.flops == once.flops + 4 * 10  # the product outside every module is charged to the root
    assert twice.module(()).own_flops == once.module(()).own_flops + 4 * 10


def test_costs_unavailable_without_a_run():
    x = jnp.ones((2, 4))
    model = nn.Dense(3)
    v = model.init(jax.random.key(0), x)
    bare = dataclasses.replace(fi.inspect(model, v, x))
    with pytest.raises(CostsUnavailable):
        bare.costs()


def test_repeated_calls_of_one_module_are_told_apart():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            d = nn.Dense(8)
            return d(jnp.tanh(d(x)))

    x = jnp.ones((2, 8))
    model = Twice()
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    c = insp.costs()
    assert c.call("Dense_0:__call__[0]").flops == 2 * 2 * 8 * 8 + 16
    assert c.call("Dense_0:__call__[1]").flops == 2 * 2 * 8 * 8 + 16
    assert c.call("Dense_0:__call__[1]").order > c.call("Dense_0:__call__[0]").order
    assert c.module("Dense_0").calls == 2
    assert c.module("Dense_0").output_bytes == 2 * (2 * 8 * 4)
    assert c.module("Dense_0").flops == 2 * (2 * 2 * 8 * 8 + 16)
    assert {k.key for k in insp.calls} <= {k.key for k in c.calls}


# -- plain text ----------------------------------------------------------------------


def test_si():
    assert [si(0), si(999), si(1000), si(1234567), si(2.5e9, "B"), si(1.5)] == \
        ["0", "999", "1 k", "1.23 M", "2.5 GB", "1.5"]


class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(16, name="hidden")(x)
        return nn.Dense(4, name="out")(jnp.tanh(h))


GOLDEN = """\
module      FLOPs   share  transc.  bytes acc.  out bytes  params
/ (Small)  3.23 k  100.0%      128     4.72 kB      128 B     212
  hidden   2.18 k   67.3%        0      2.5 kB      512 B     144
  out      1.06 k   32.7%        0      1.2 kB      128 B      68
total: 3.23 kFLOPs, 128 transcendentals, 4.72 kB accessed, 212 params (848 B)
XLA cost_analysis of the unoptimized HLO: 3.23 kFLOPs (loop bodies counted once)"""
# by hand (batch 8): hidden 2*8*8*16 + 8*16 = 2176 FLOPs; out 2*8*16*4 + 8*4 = 1056; tanh 8*16 = 128
# transcendentals at the root; hidden's bytes: dot (64+128+128)*4 + bias reshape (16+16)*4 + add (128+16+128)*4


def test_to_text_golden():
    x = jnp.ones((8, 8))
    model = Small()
    v = model.init(jax.random.key(0), x)
    c = fi.inspect(model, v, x).costs(memory=False)
    assert c.to_text() == GOLDEN


def test_inspection_keeps_shapes_not_arrays():
    x = jnp.ones((4, 16))
    model = MLP()
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x, keep="stats")
    held = insp.__dict__["_inspector_costs"].leaves
    assert held and not any(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in held)
    del v, x
    assert insp.costs(memory=False).params == sum(leaf.size for leaf in insp.variables.leaves())


@jax.custom_vjp
def _clip_grad(x):
    return jnp.sin(x) * 2.0


_clip_grad.defvjp(lambda x: (_clip_grad(x), x), lambda x, g: (jnp.clip(g, -1.0, 1.0),))


class Inner(nn.Module):
    """Inner programs: remat, a nested jit, custom_jvp (relu), custom_vjp, and a while loop of unknown trip
    count (a body counted once, as XLA counts it)."""

    @nn.compact
    def __call__(self, x, n):
        x = nn.remat(nn.Dense)(16, name="remat")(x)
        x = jax.jit(lambda y: jax.nn.relu(y) @ jnp.ones((16, 16)))(x)
        x = _clip_grad(x)
        return jax.lax.fori_loop(0, n, lambda i, y: jnp.tanh(y @ jnp.ones((16, 16))), x)


def test_inner_programs_agree_with_xla():
    x = jnp.ones((4, 8))
    model = Inner()
    n = jnp.int32(3)
    v = model.init(jax.random.key(0), x, n)
    c = costs(model, v, x, n, memory=False)
    xla = jax.jit(lambda v, x, n: model.apply(v, x, n)).lower(v, x, n).cost_analysis()
    assert c.flops == pytest.approx(xla["flops"], rel=0.02)
    assert c.transcendentals == pytest.approx(xla["transcendentals"], rel=0.02)
    assert c.module("remat").flops == 2 * 4 * 8 * 16 + 4 * 16
    assert c.module(()).own_flops >= 2 * (2 * 4 * 16 * 16)  # the nested jit's matmul and the loop body's
    check_sums(c)


def test_copied_and_pickled_inspections():
    import copy
    import pickle

    x = jnp.ones((2, 4))
    model = nn.Dense(3)
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(v, x)  # a lambda: not picklable
    assert copy.deepcopy(insp).costs(memory=False).flops == 2 * 2 * 4 * 3 + 2 * 3
    source = insp.__dict__["_inspector_costs"]
    assert pickle.loads(pickle.dumps(source)) is None  # no function or module travels; costs() then raises

"""The binding trace charges reads of variables created in ``setup`` to the module that
owns them, not to the caller that triggered flax's lazy ``setup``."""

import flax.linen as nn
import jax
import jax.numpy as jnp

import inspector as fi


class Emb(nn.Module):
    def setup(self):
        self.table = self.param("table", nn.initializers.normal(), (10, 4))

    def __call__(self, ids):
        return self.table[ids]


class Net(nn.Module):
    def setup(self):
        self.emb = Emb()
        self.out = nn.Dense(2)
        self.bias = self.param("bias", nn.initializers.zeros, (2,))

    def __call__(self, ids):
        return self.out(self.emb(ids)) + self.bias


def _calls(insp):
    return {(c.path, c.method): c for c in insp.binding}


def test_setup_params_are_charged_to_their_module():
    m, ids = Net(), jnp.array([1, 2])
    v = m.init(jax.random.key(0), ids)
    insp = fi.inspect_apply(lambda m, ids: m(ids), m)(v, ids)
    calls = _calls(insp)
    root, emb = calls[((), "__call__")], calls[(("emb",), "__call__")]
    assert "table" in emb.reads.get("params", [])
    assert not any("table" in r for r in root.reads.get("params", []))
    assert "bias" in root.reads.get("params", [])  # the root's own setup param stays the root's
    assert calls[(("out",), "__call__")].reads["params"] == ["kernel", "bias"]


def test_setup_params_at_init_charge_rng_draws_to_their_module():
    m, ids = Net(), jnp.array([1, 2])
    insp = fi.inspect_init(lambda m, ids: m(ids), m)(jax.random.key(0), ids)
    calls = _calls(insp)
    emb, root = calls[(("emb",), "__call__")], calls[((), "__call__")]
    assert "table" in emb.writes.get("params", [])
    assert emb.rngs.get("params") == 1
    assert not any("table" in w for w in root.writes.get("params", []))

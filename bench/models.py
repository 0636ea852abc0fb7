"""Models shared by the benchmarks.

:class:`Transformer` is a plain pre-LN decoder (flax.linen): token ids (``nn.Embed``
over a vocabulary of 1000) plus a learned position embedding, ``layers`` blocks of

    x = x + MultiHeadDotProductAttention(LayerNorm(x), causal mask)
    x = x + MLP(LayerNorm(x))          # Dense(4d) -> gelu -> Dense(d)

then a final LayerNorm and a Dense head to vocabulary logits. Blocks are named
``blocks_0`` ... so ``capture.paths('blocks_*/**')`` selects them. Everything is
float32 and deterministic (no dropout), so a forward pass needs no RNG.

The benchmark configuration (case (a) of ``bench_core.py``) is :func:`bench_config`:
8 layers, d=256, 8 heads, batch 8 x 128 tokens (~6.8M parameters).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class MLP(nn.Module):
    d: int
    ratio: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.ratio * self.d, name="fc1")(x)
        return nn.Dense(self.d, name="fc2")(nn.gelu(h))


class Block(nn.Module):
    d: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(h, h, mask=mask)
        h = nn.LayerNorm(name="ln2")(x)
        return x + MLP(self.d, name="mlp")(h)


class Transformer(nn.Module):
    vocab: int = 1000
    layers: int = 8
    d: int = 256
    heads: int = 8
    max_len: int = 512

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.d, name="embed")(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.d))
        x = x + pos[: tokens.shape[-1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.layers):
            x = Block(self.d, self.heads, name=f"blocks_{i}")(x, mask)
        x = nn.LayerNorm(name="ln_f")(x)
        return nn.Dense(self.vocab, name="head")(x)


def forward(module: Transformer, tokens):
    """The ``fn`` given to ``flax.linen.apply`` / ``inspector.apply``."""
    return module(tokens)


def bench_config(layers: int = 8, d: int = 256, heads: int = 8, batch: int = 8, seq: int = 128,
                 vocab: int = 1000, seed: int = 0):
    """``(model, variables, tokens)`` on the default device, variables initialised once."""
    model = Transformer(vocab=vocab, layers=layers, d=d, heads=heads, max_len=max(seq, 1))
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=(batch, seq)), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(seed), tokens)
    variables = jax.block_until_ready(variables)
    return model, variables, tokens


def param_count(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))

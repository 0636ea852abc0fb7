"""Synthetic Inspections (no model run, just the plain data model): widget cost bounds and view benchmarks."""

from __future__ import annotations

import dataclasses

import numpy as np

from inspector.model import (
    CollectionDiff, Inspection, Leaf, LeafDiff, MethodCall, Stats, Timings, VariableTree, tree_from_leaves,
)


def _stats(rng, n):
    hist = tuple(int(v) for v in rng.multinomial(n, np.ones(16) / 16)) if n else (0,) * 16
    return Stats(n, float(rng.normal()), 1.0, -3.0, 3.0, 3.0, 0, 0, 0, 0, hist)


def wide_inspection(leaves: int = 5000, per_module: int = 2, seed: int = 0) -> Inspection:
    """``leaves`` small parameter leaves under ``leaves / per_module`` modules, plus as many calls."""
    rng = np.random.default_rng(seed)
    var_leaves, calls = [], []
    for i in range(leaves // per_module):
        for name, shape in (("kernel", (4, 4)), ("bias", (4,)))[:per_module]:
            var_leaves.append(Leaf(("params", f"layer_{i}", name), shape, "float32", "cpu:0", "",
                                   _stats(rng, int(np.prod(shape))),
                                   fetch=lambda idx=None, s=shape: np.zeros(s)[idx or ...]))
        calls.append(MethodCall((f"layer_{i}",), "Dense", "__call__", 0, i,
                                [Leaf((f"layer_{i}", "__call__[0]"), (8, 4), "float32", "cpu:0", "", _stats(rng, 32),
                                      fetch=lambda idx=None: np.zeros((8, 4))[idx or ...])]))
    stats = [Leaf(("batch_stats", f"bn_{i}", "mean"), (4,), "float32", "cpu:0", "", _stats(rng, 4)) for i in range(200)]
    diff = CollectionDiff("batch_stats",
                          [LeafDiff(s.path, "changed", s, s, 4, 0.1 * i, 0.01) for i, s in enumerate(stats)])
    return Inspection("apply", "Wide", None, None, [], VariableTree(tree_from_leaves("variables", var_leaves + stats)),
                      [diff], calls, "cpu:0", Timings(1.0, 2.0, 3.0))


def wide_grad_inspection(leaves: int = 5000, nan_at: int | None = None) -> Inspection:
    """:func:`wide_inspection` with gradients: one per parameter and per call (the values' own leaves),
    the gradient of call ``nan_at`` with a NaN."""
    insp = wide_inspection(leaves)
    params = [leaf for leaf in insp.variables.root.leaves() if leaf.path[0] == "params"]
    insp.grads = VariableTree(tree_from_leaves("grads", params))
    insp.loss = 1.0
    for call in insp.calls:
        (out,) = call.outputs
        stats = dataclasses.replace(out.stats, nan=3) if call.order == nan_at and out.stats else out.stats
        call.grads = [dataclasses.replace(out, stats=stats)]
    return insp


def attention_inspection(layers: int = 12, heads: int = 12, seq: int = 128, batch: int = 1, seed: int = 0,
                         dtype: str = "float32") -> Inspection:
    """Sown attention maps as flax's ``MultiHeadDotProductAttention(sow_weights=True)`` leaves them:
    ``layers`` calls of ``attention_weights`` ``[batch, heads, seq, seq]`` (softmax rows of random logits)."""
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(layers):
        logits = rng.normal(size=(batch, heads, seq, seq)) * 3
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w = (w / w.sum(-1, keepdims=True)).astype(dtype)
        path = (f"Block_{i}", "attn")
        leaf = Leaf(path + ("attention_weights[0]",), w.shape, dtype, "cpu:0", "", _stats(rng, w.size),
                    fetch=lambda idx=None, w=w: w if idx is None else w[idx], handle=w)
        calls.append(MethodCall(path, "MultiHeadDotProductAttention", "attention_weights", 0, i, [leaf], sown=True))
    return Inspection("apply", "Transformer", None, None, [], VariableTree(tree_from_leaves("variables", [])),
                      [], calls, "cpu:0", Timings(1.0, 2.0, 3.0))

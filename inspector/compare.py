"""Comparing two inspections (train vs eval, two checkpoints, a patched run).

Leaves are aligned by path (variables), by ``path:method[call]`` (intermediates)
and by position (output). Element-wise differences are computed on the device by
one program per shape and dtype (shared by every comparison); only three scalars
per pair reach the host; pairs with a NaN or Inf on either side also count, element-wise, the changes
that are not numbers (to or from NaN, to or from Inf: :meth:`~inspector.model.LeafDelta.nonfinite_delta`).
"""

from __future__ import annotations

import jax

from inspector import stats
from inspector.model import ComparedSection, Comparison, Inspection, Leaf, LeafDelta, path_str


def _orders(insp: Inspection) -> dict[tuple[ComparedSection, str], int]:
    """The call order of every intermediate (and call gradient) of ``insp``, by :func:`_keyed`'s keys."""
    out: dict[tuple[ComparedSection, str], int] = {}
    for call in insp.calls:
        for section, prefix, leaves in (("intermediates", "", call.outputs), ("gradients", "grad ", call.grads or ())):
            for leaf in leaves:
                sub = leaf.path[len(call.path) + 1:]
                out[(section, prefix + call.key + ("/" + path_str(sub) if sub else ""))] = call.order  # type: ignore[index]
    return out


def _keyed(insp: Inspection) -> dict[tuple[ComparedSection, str], Leaf]:
    """Every leaf of ``insp`` by section and key: ``output/<path>``, the variable's path, and the
    call's key (:func:`~inspector.names.format_key`) followed by the leaf's path in its output; the
    gradients of a gradient inspection by the same keys after ``grad `` (calls, then parameters)."""
    out: dict[tuple[ComparedSection, str], Leaf] = {}
    for leaf in insp.outputs:
        out[("output", path_str(("output",) + leaf.path))] = leaf
    for leaf in insp.variables.leaves():
        out[("variables", path_str(leaf.path))] = leaf
    for call in insp.calls:
        for leaf in call.outputs:
            sub = leaf.path[len(call.path) + 1:]
            out[("intermediates", call.key + ("/" + path_str(sub) if sub else ""))] = leaf
        for leaf in call.grads or ():
            sub = leaf.path[len(call.path) + 1:]
            out[("gradients", "grad " + call.key + ("/" + path_str(sub) if sub else ""))] = leaf
    for leaf in insp.grads.leaves() if insp.grads is not None else ():
        out[("gradients", "grad " + path_str(leaf.path))] = leaf
    return out


def compare(a: Inspection, b: Inspection, labels: tuple[str, str] = ("a", "b")) -> Comparison:
    """Aligns ``a`` and ``b`` and measures how every shared leaf differs."""
    ka, kb = _keyed(a), _keyed(b)
    keys = list(ka) + [k for k in kb if k not in ka]
    oa, ob = _orders(a), _orders(b)
    deltas = [LeafDelta(section, key, ka.get((section, key)), kb.get((section, key)),
                        order=oa.get((section, key), ob.get((section, key)))) for section, key in keys]
    measurable = [(d, d.a.handle, d.b.handle) for d in deltas
                  if d.a is not None and d.b is not None and d.a.handle is not None
                  and d.b.handle is not None and d.a.shape == d.b.shape and d.a.dtype == d.b.dtype]
    if measurable and stats.on_host([h for _, ha, hb in measurable for h in (ha, hb)]):
        for d, ha, hb in measurable:  # CPU: numpy reads them in place, nothing to compile
            d.changed, d.max_abs, d.mean_abs = stats.host_delta(ha, hb)
    elif measurable:
        words = jax.device_get([stats.delta_exact(ha, hb) for _, ha, hb in measurable])
        for (d, ha, _), w in zip(measurable, words):
            (d.changed, d.max_abs, d.mean_abs), = stats.unpack_deltas(w, [ha.dtype])
    for d, _, _ in measurable:
        d.nonfinite_delta()  # NaN/Inf changes counted now (only pairs with a NaN or Inf on a side)
    return Comparison(labels, a, b, deltas)

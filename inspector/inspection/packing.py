"""Small captured arrays leave the program in one buffer per dtype (:func:`pack`), and come back as
arrays only when read (:class:`Packs`).

Each output of a program costs the host a buffer and an array object: about 2.5 µs on a 2-core CPU
(measured: 50 outputs of 8 floats add 130 µs to a 160 µs call; packed, 5 µs). A 49-layer MLP's 50
captured activations cost about what its whole plain call does. So, on
one device, the captured arrays of at most :data:`PACK_MAX` elements are concatenated into one flat
buffer per dtype inside the program, and the result holds a :class:`Packed` placeholder where each
one was. On the host, numpy reads them as views of one host copy of their buffer (statistics, a view's
values); each device array (a leaf's ``handle``, the inspection's ``state``) is put on the device from
its view the first time it is read. Arrays inside
other pytree nodes (a ``flax.struct`` dataclass a method returns) are returned as they are.

Like any value of a jitted program, a packed array is what XLA computed for this program: where XLA
computes a value once for the rest of the model and once more inside another fusion, the two can
differ in the last bit (a program that returns the array on its own can differ so too); seen once on an
LSTM after a BatchNorm, where the packed BatchNorm output was one float32 ulp from the unpacked one.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.background import CallerContext
from inspector.engine.signature import rebuilt

PACK_MAX = 4096
"""Captured arrays of at most this many elements are packed (copying 16 kB costs about what an output does)."""

_PACKABLE = frozenset(np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", jnp.bfloat16))


class Packed:
    """Where a packed array lies: buffer ``buffer``, elements ``start`` to ``start + size``, and its
    ``shape`` and ``dtype``. Made at trace time, the same for every call of a signature; ``index``
    is its place among the signature's packed arrays."""

    __slots__ = ("buffer", "start", "size", "shape", "dtype", "index")

    def __init__(self, buffer: int, start: int, shape: tuple[int, ...], dtype: np.dtype, index: int) -> None:
        self.buffer, self.start, self.shape, self.dtype, self.index = buffer, start, shape, dtype, index
        self.size = int(np.prod(shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Packed({self.dtype}{list(self.shape)} at {self.buffer}:{self.start})"


def _packable(x: Any) -> bool:
    if not isinstance(x, jax.core.Tracer):
        return False
    aval: Any = x.aval
    return (not getattr(aval, "weak_type", False) and aval.dtype in _PACKABLE
            and 0 < int(np.prod(aval.shape, dtype=np.int64)) <= PACK_MAX)


def pack(tree: Any) -> tuple[Any, list[Any], list[Packed]]:
    """Inside a trace: ``(tree with a Packed where each small array was, the buffers, the placeholders)``.
    A dtype with a single small array is left as it is (packing it saves nothing)."""
    by_dtype: dict[np.dtype, list[Any]] = {}

    def note(x: Any) -> Any:
        if _packable(x):
            by_dtype.setdefault(x.aval.dtype, []).append(x)
        return x

    rebuilt(tree, note)
    groups = [xs for xs in by_dtype.values() if len(xs) > 1]
    if not groups:
        return tree, [], []
    where: dict[int, Packed] = {}
    buffers: list[Any] = []
    placed: list[Packed] = []
    for b, xs in enumerate(groups):
        start, parts = 0, []
        for x in xs:
            if id(x) in where:  # one value captured twice: packed once
                continue
            p = where[id(x)] = Packed(b, start, tuple(x.shape), x.aval.dtype, len(placed))
            placed.append(p)
            parts.append(jnp.ravel(x))
            start += p.size
        buffers.append(jnp.concatenate(parts))
    return rebuilt(tree, lambda x: where.get(id(x), x)), buffers, placed


class Packs:
    """One call's packed buffers: each packed array on the host (a view of one copy of its buffer) and on
    its device, made from that view when first asked for (no program to compile: a split program costs
    0.1-0.6 s of compile per layout on a 2-core CPU, putting 50 small arrays 1.3 ms), under ``context``
    (the jax options of the call's thread: its default device). Thread-safe."""

    def __init__(self, buffers: list[Any], placed: list[Packed], context: CallerContext) -> None:
        self._buffers, self._placed, self._context = buffers, placed, context
        self._host: list[np.ndarray | None] = [None] * len(buffers)
        self._arrays: dict[int, Any] = {}
        self._lock = threading.Lock()

    def buffer(self, p: Packed) -> Any:
        """The device buffer ``p`` lies in (where it lives)."""
        return self._buffers[p.buffer]

    def host(self, p: Packed) -> np.ndarray:
        """The array ``p`` as numpy reads it (no device work once its buffer is on the host)."""
        with self._lock:
            whole = self._host[p.buffer]
            if whole is None:
                whole = np.asarray(self._buffers[p.buffer])
                whole.flags.writeable = False  # shared by every view of it (a leaf's value among them)
                self._host[p.buffer] = whole
        return whole[p.start:p.start + p.size].reshape(p.shape)

    def array(self, p: Packed) -> Any:
        """The array ``p`` on its device, the same each time."""
        return self._made([p])[0]

    def _made(self, wanted: list[Packed]) -> list[Any]:
        missing = [p for p in wanted if p.index not in self._arrays]
        if missing:
            views = [self.host(p) for p in missing]
            # (asked inside a caller's trace, they are still made now)
            with self._lock, self._context.entered(), jax.ensure_compile_time_eval():
                # where the program ran; on the default device, as the program's outputs, if not committed there
                buffer = self._buffers[missing[0].buffer]
                made = jax.device_put(views, buffer.sharding if buffer.committed else None)
                for p, a in zip(missing, made):
                    self._arrays.setdefault(p.index, a)
        return [self._arrays[p.index] for p in wanted]

    def resolved(self, tree: Any) -> Any:
        """``tree`` with each :class:`Packed` replaced by its device array (all made at once)."""
        self._made(self._placed)
        return rebuilt(tree, lambda x: self._arrays[x.index] if type(x) is Packed else x)

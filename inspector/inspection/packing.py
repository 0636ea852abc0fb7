"""Small captured arrays leave the program in one buffer per dtype (:func:`pack`), and come back as
arrays only when read (:class:`Packs`).

Each output of a program costs the host a buffer and an array object: about 2.5 µs on a 2-core CPU
(measured: 50 outputs of 8 floats add 130 µs to a 160 µs call; packed, 5 µs). A 49-layer MLP's 50
captured activations cost about what its whole plain call does. So, on
one device, the captured arrays of at most :data:`PACK_MAX` elements are concatenated into one flat
buffer per dtype inside the program, and the result holds a :class:`Packed` placeholder where each
one was. On the host, numpy reads them as views of one host copy of their buffer. The device arrays
are made by one program that splits the buffers, the first time one of them is read. Arrays inside
other pytree nodes (a ``flax.struct`` dataclass a method returns) are returned as they are.
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


def _split(buffers: list[Any], placed: list[Packed]) -> list[Any]:
    return [jax.lax.slice_in_dim(buffers[p.buffer], p.start, p.start + p.size).reshape(p.shape) for p in placed]


_splitters: dict[tuple, Any] = {}
_splitters_lock = threading.Lock()


def _splitter(placed: list[Packed]) -> Any:
    """The jitted split of one layout, shared by every signature with that layout."""
    key = tuple((p.buffer, p.start, p.shape, p.dtype) for p in placed)
    with _splitters_lock:
        f = _splitters.get(key)
        if f is None:
            if len(_splitters) >= 256:
                _splitters.clear()
            f = _splitters[key] = jax.jit(lambda buffers: _split(buffers, placed))
        return f


class Packs:
    """One call's packed buffers: each packed array on the host (a view of one copy of its buffer) and,
    once one is asked for, all of them as device arrays, made under ``context`` (the jax options of the
    call's thread: its default device). Thread-safe."""

    def __init__(self, buffers: list[Any], placed: list[Packed], context: CallerContext) -> None:
        self._buffers, self._placed, self._context = buffers, placed, context
        self._host: list[np.ndarray | None] = [None] * len(buffers)
        self._arrays: list[Any] | None = None
        self._lock = threading.Lock()

    def host(self, p: Packed) -> np.ndarray:
        """The array ``p`` as numpy reads it (no device work once its buffer is on the host)."""
        with self._lock:
            whole = self._host[p.buffer]
            if whole is None:
                whole = self._host[p.buffer] = np.asarray(self._buffers[p.buffer])
        return whole[p.start:p.start + p.size].reshape(p.shape)

    def array(self, p: Packed) -> Any:
        """The array ``p`` on its device (every packed array of the call is made by the first ask)."""
        with self._lock:
            if self._arrays is None:
                # (asked inside a caller's trace, it still runs now)
                with self._context.entered(), jax.ensure_compile_time_eval():
                    self._arrays = _splitter(self._placed)(self._buffers)
            return self._arrays[p.index]

    def resolved(self, tree: Any) -> Any:
        """``tree`` with each :class:`Packed` replaced by its device array."""
        return rebuilt(tree, lambda x: self.array(x) if type(x) is Packed else x)

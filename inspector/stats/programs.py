"""Exact statistics programs keyed by what they depend on, not by the model: reused across calls,
models and sessions.

A program describes a batch of arrays of one dtype whose sizes fall in one *bucket* (a power of
two): each array is one row of a ``(batch, bucket)`` matrix, zero-padded and masked by its element
count, which the program reads at run time. The program's key is ``(dtype, bucket, x64, device)``
(the batch follows from the bucket), so a new model whose captured arrays fall in known buckets
compiles nothing, and a model's arrays cost a dispatch per bucket (per :func:`batch` arrays), not
one per array. The rows are those of the exact
path (:mod:`~inspector.stats.exact`): the same definitions (masked, overflow-safe, centred on the
median of the histogram's sample, sums added as a tree), the same layout, decoded by
:func:`~inspector.stats.rows.decode_rows`.

Compiled programs are kept in this process and, unless turned off, serialized to a user cache
directory (see :func:`cache_dir`) so that a restarted kernel loads them in milliseconds instead of
compiling them. jax's own persistent compilation cache is process-global (one directory and one
minimum compile time for every program, the user's included), so it is left exactly as the user
configured it; the programs here are serialized one by one with ``jax.experimental.serialize_executable``.

Contract for callers (see :func:`describe_bucketed`): any concrete arrays that
:func:`~inspector.stats.rows.supported` accepts, on one device of the default backend or in numpy;
results equal the exact path's within its documented tolerances. :func:`ready` says, without
compiling, whether every program a list of arrays needs is compiled (here or on disk);
:func:`prepare` compiles (or loads) them, in the calling thread or a background one.

The inspection path does not call them on the CPU backend: there numpy reads the arrays in place
and is quicker at every size measured (:func:`~inspector.stats.device.exact_host_stats_many`), so
an inspected call on the CPU compiles, loads and saves none of these programs. The arrays are packed
into the ``(batch, bucket)`` matrix in numpy, so on an accelerator a call copies them to the host
and back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import serialize_executable

from inspector.background import BackgroundWorker

from inspector.model import Stats
from inspector.stats import exact
from inspector.stats.exact import _EXPONENTS, _FAN, _distance, _moments, _pow2, bin_edges
from inspector.stats.rows import (BINS, SAMPLE, Layout, _matrix, _unsigned, _values, _x64, decode_rows,
                                  flat_positions, layout, row_groups)

MIN_BUCKET = 64
"""The smallest bucket: smaller arrays are padded to it (and are usually left to numpy anyway)."""
MAX_BUCKET = 1 << 26
"""The largest bucket: larger arrays are described by the other exact paths (padding would cost
as much memory again)."""

BATCH = 32
"""The most arrays one program describes at once (more take several dispatches)."""
BATCH_ELEMENTS = 1 << 18
"""The most elements one program reads (arrays and padding): a batch never costs more than this."""

VERSION = 1
"""Part of every program's key on disk: raised when the programs' code changes."""

compiles = 0
"""How many statistics programs this process compiled (not loaded from disk): tests and benchmarks
read it to check that known buckets compile nothing."""
loads = 0
"""How many statistics programs this process loaded from the disk cache."""

Key = tuple[str, int, int, bool, str]
"""``(dtype name, bucket, batch, x64, device)``: what a program depends on."""

_programs: dict[Key, Any] = {}
_lock = threading.Lock()
_building: dict[Key, threading.Event] = {}


def bucket(size: int) -> int:
    """The bucket of an array of ``size`` elements: the power of two at or above it (at least
    :data:`MIN_BUCKET`)."""
    return max(MIN_BUCKET, 1 << max(size - 1, 0).bit_length())


def fits(x: Any) -> bool:
    """True for an array the bucketed programs describe (at most :data:`MAX_BUCKET` elements, one
    device)."""
    devices = getattr(getattr(x, "sharding", None), "device_set", None)
    return math.prod(np.shape(x)) <= MAX_BUCKET and (devices is None or len(devices) == 1)


# -- where programs are kept across sessions ----------------------------------------------
def cache_dir() -> Path | None:
    """The directory the compiled programs are saved in, or None where saving is turned off.

    ``INSPECTOR_CACHE_DIR`` names it (empty: off); ``INSPECTOR_NO_CACHE=1`` turns it off; by default
    ``$XDG_CACHE_HOME/flax-inspector/jax`` (``~/.cache/flax-inspector/jax``). Nothing is created
    until a program is saved."""
    if os.environ.get("INSPECTOR_NO_CACHE", "") not in ("", "0"):
        return None
    named = os.environ.get("INSPECTOR_CACHE_DIR")
    if named is not None:
        return Path(named).expanduser() if named else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flax-inspector" / "jax"


@functools.cache
def _platform_id(device: Any) -> str:
    """What a serialized program depends on besides its key: jax's version, the device kind, which device it
    runs on among how many (an executable saved by a process with one CPU device refuses to run in one with
    four: "Expected args ... to have 4 shards"), and the XLA flags it was compiled under."""
    return (f"{jax.__version__}|{device.platform}|{getattr(device, 'device_kind', '')}|"
            f"{device.client.platform_version}|{device.id}/{jax.device_count()}/{jax.process_count()}|"
            f"{os.environ.get('XLA_FLAGS', '')}")


def _file(key: Key, device: Any) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    name = hashlib.sha256(json.dumps([VERSION, _platform_id(device), *key]).encode()).hexdigest()[:32]
    return root / f"stats-{name}.bin"


def _save(path: Path, compiled: Any) -> None:
    payload, _, _ = serialize_executable.serialize(compiled)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)  # atomic: a reader sees the whole file or none


# -- the program ------------------------------------------------------------------------
def _tree_sum(x: jax.Array) -> jax.Array:
    """Sums over axis 1 added as a tree, ``_FAN`` at a time (as the exact path adds an array's rows:
    no long chain of additions)."""
    while x.shape[1] > 1:
        m = x.shape[1]
        r = -(-m // _FAN)
        if r * _FAN != m:
            x = jnp.pad(x, [(0, 0), (0, r * _FAN - m)] + [(0, 0)] * (x.ndim - 2))
        x = exact._add(x.reshape(x.shape[0], r, _FAN, *x.shape[2:]), (2,))
    return x[:, 0]


def _row_hist(sample: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array, acc: Any
              ) -> tuple[jax.Array, jax.Array]:
    """:func:`~inspector.stats.exact._hist` per row of ``sample``: edges ``(k, BINS + 1)``, counts ``(k, BINS)``."""
    if jnp.issubdtype(sample.dtype, jnp.integer):
        s = (_unsigned(sample) - _unsigned(lo)[:, None]).astype(acc)
        lo, hi = jnp.zeros(lo.shape, acc), (_unsigned(hi) - _unsigned(lo)).astype(acc)
    else:
        s, lo, hi = sample.astype(acc), lo.astype(acc), hi.astype(acc)
    edges = bin_edges(lo, hi, acc)
    above = jnp.sum((s[:, :, None] >= edges[:, None, 1:BINS]) & ok[:, :, None], axis=1, dtype=jnp.int32)
    k = lo.shape[0]
    at = jnp.concatenate([jnp.sum(ok, axis=1, dtype=jnp.int32)[:, None], above, jnp.zeros((k, 1), jnp.int32)], axis=1)
    return edges, at[:, :-1] - at[:, 1:]


def _row_medians(sample: jax.Array, ok: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The lower median of each row's ``ok`` values and how many there are (a row without one
    gives its largest value), as :func:`~inspector.stats.exact._medians` per segment."""
    top = np.asarray(np.iinfo(sample.dtype).max if jnp.issubdtype(sample.dtype, jnp.integer) else np.inf,
                     sample.dtype)
    ordered = jnp.sort(jnp.where(ok, sample, top), axis=1)
    count = jnp.sum(ok, axis=1, dtype=jnp.int32)
    mid = jnp.take_along_axis(ordered, (jnp.maximum(count - 1, 0) // 2)[:, None], axis=1)[:, 0]
    return mid, count


def _bucket_rows(x: jax.Array, n: jax.Array, picks: jax.Array | None = None) -> jax.Array:
    """Exact rows ``(k, width)`` of the arrays in the rows of ``x`` (``n[i]`` elements of row ``i``
    are the array's, the rest padding); ``picks[i]`` are the positions of row ``i``'s histogram
    sample (``-1``: none), or, without ``picks``, every element is sampled."""
    lay = layout(x.dtype)
    acc = lay.acc
    k, width = x.shape[0], x.shape[1]
    v = _values(x)
    valid = jnp.arange(width, dtype=jnp.int32)[None, :] < n[:, None]
    if picks is None:
        sample, pick_ok = v, valid
    else:
        sample, pick_ok = jnp.take_along_axis(v, jnp.maximum(picks, 0), axis=1), picks >= 0
    scount = jnp.where(n > SAMPLE, jnp.sum(pick_ok, axis=1, dtype=jnp.int32), 0)

    def each(y: jax.Array) -> jax.Array:
        return y[:, None]

    if lay.kind == "int":
        big = np.asarray(np.iinfo(lay.native).max, lay.native)
        lo_ = jnp.min(jnp.where(valid, v, big), axis=1)
        hi_ = ~jnp.min(jnp.where(valid, ~v, big), axis=1)  # ~v reverses the order exactly
        lo = jnp.where(n > 0, lo_, 0).astype(lay.native)
        hi = jnp.where(n > 0, hi_, 0).astype(lay.native)
        ok = pick_ok
        centre = _row_medians(sample, ok)[0]
        m, corr, var = _moments(jnp.where(valid, _distance(v, each(centre), acc), 0), valid,
                                jnp.maximum(n, 1).astype(acc), _tree_sum, each)
        zeros = jnp.sum((v == 0) & valid, axis=1, dtype=jnp.int32)
        nf, nan, posinf, neginf, e = n, 0 * n, 0 * n, 0 * n, 0 * n
    else:
        fin = jnp.isfinite(v) & valid
        counts = jnp.sum(jnp.stack([fin, jnp.isnan(v), v == jnp.inf, v == -jnp.inf, (v == 0) & valid], axis=2),
                         axis=1, dtype=jnp.int32)
        nf, nan, posinf, neginf, zeros = (counts[:, i] for i in range(5))
        lo_ = jnp.min(jnp.where(fin, v, jnp.inf), axis=1)
        hi_ = -jnp.min(jnp.where(fin, -v, jnp.inf), axis=1)
        lo, hi = jnp.where(nf > 0, lo_, 0), jnp.where(nf > 0, hi_, 0)
        _, e = jnp.frexp(jnp.maximum(jnp.abs(lo), jnp.abs(hi)))  # top = m 2**e, 0.5 <= m < 1
        e = jnp.clip(e, *_EXPONENTS[acc.itemsize])  # scaled values stay normal, squares can't overflow
        scale = _pow2(-e, acc)
        ok = jnp.isfinite(sample) & pick_ok
        mid, kk = _row_medians(sample * each(scale), ok)
        # scaled values are centred on the median of the sample (else the middle of the range)
        centre = jnp.where(kk > 0, mid, lo * scale / 2 + hi * scale / 2)
        vs = jnp.where(fin, v * each(scale) - each(centre), 0)
        m, corr, var = _moments(vs, fin, jnp.maximum(nf, 1).astype(acc), _tree_sum, each)
    edges, hist = _row_hist(sample, ok, lo, hi, acc)
    ints = jnp.stack([jnp.ones((k,), jnp.int32), nan, posinf, neginf, zeros, nf, scount, e], axis=1)
    native = jnp.stack([lo, hi, centre.astype(lay.native)], axis=1).astype(lay.native)
    accs = jnp.concatenate([jnp.stack([m, corr, var], axis=1), edges], axis=1).astype(acc)
    return _matrix(ints.astype(jnp.int32), hist, native, accs, lay.width)


_shaped: Callable[[tuple[int, ...], Any], jax.ShapeDtypeStruct] = jax.ShapeDtypeStruct  # typed


def _arguments(key: Key) -> list[jax.ShapeDtypeStruct]:
    dtype, size, count = np.dtype(key[0]), key[1], key[2]
    args = [_shaped((count, size), dtype), _shaped((count,), np.int32)]
    if size > SAMPLE:
        args.append(_shaped((count, SAMPLE), np.int32))
    return args


def _build(key: Key, device: Any) -> Any:
    """The compiled program of ``key``: loaded from the disk cache, else compiled (and saved)."""
    global compiles, loads
    path = _file(key, device)
    args = _arguments(key)
    with jax.default_device(device), jax.enable_x64(key[3]):  # the key's context, in whatever thread
        if path is not None and path.is_file():
            try:  # no tracing: the arguments are the key's, the result one array
                in_tree = jax.tree_util.tree_structure((tuple(args), {}))
                # on this one device: by default jax spreads a loaded executable over every device
                program = serialize_executable.deserialize_and_load(path.read_bytes(), in_tree,
                                                                    jax.tree_util.tree_structure(0),
                                                                    backend=device.client, execution_devices=[device])
                loads += 1
                return program
            except Exception:  # noqa: BLE001 - a stale or damaged entry: compile it again
                pass
        program = jax.jit(_bucket_rows).trace(*args).lower().compile()
        compiles += 1
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only or full disk: the program still serves this process
            _save(path, program)
    return program


def _program(key: Key, device: Any) -> Any:
    """The program of ``key``, built once per process (a second thread asking waits for the first)."""
    with _lock:
        program = _programs.get(key)
        if program is not None:
            return program
        event = _building.get(key)
        mine = event is None
        if mine:
            event = _building[key] = threading.Event()
    assert event is not None
    if not mine:
        event.wait()
        return _programs.get(key) or _program(key, device)
    try:
        program = _build(key, device)
        with _lock:
            _programs[key] = program
        return program
    finally:
        with _lock:
            del _building[key]
        event.set()


# -- callers ----------------------------------------------------------------------------
def _device() -> Any:
    return jax.devices()[0]


def _dtype(x: Any) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))


def batch(size: int) -> int:
    """How many arrays a program of bucket ``size`` describes at once (padding rows hold nothing):
    at most :data:`BATCH_ELEMENTS` elements, at most :data:`BATCH` arrays."""
    return max(1, min(BATCH, BATCH_ELEMENTS // size))


def _groups(arrays: Sequence[Any], device: Any) -> dict[Key, list[int]]:
    x64 = _x64()
    groups: dict[Key, list[int]] = {}
    for i, a in enumerate(arrays):
        size = bucket(math.prod(np.shape(a)))
        groups.setdefault((_dtype(a).name, size, batch(size), x64, str(device.id)), []).append(i)
    return groups


def ready_key(key: Key) -> bool:
    """True if the program of ``key`` is compiled in this process or saved on disk."""
    if key in _programs:
        return True
    path = _file(key, _device())
    return path is not None and path.is_file()


def keys(arrays: Sequence[Any]) -> list[Key]:
    """The programs :func:`describe_bucketed` runs for ``arrays`` (one per dtype and bucket)."""
    return list(_groups(arrays, _device()))


def ready(arrays: Sequence[Any]) -> bool:
    """True if every program ``arrays`` need is compiled in this process or saved on disk: describing
    them compiles nothing. Cheap (no tracing)."""
    return all(ready_key(key) for key in _groups(arrays, _device()))


_worker = BackgroundWorker("inspector-stats-programs")
START_DELAY_S = 0.5
"""How long a background preparation waits before its first compile: a script that ends right after a
call exits without starting one (the exit waits only for a compile in progress)."""


def prepare(arrays: Sequence[Any], background: bool = False) -> Future[None] | None:
    """Compiles (or loads) the programs ``arrays`` need, now or, with ``background``, on one daemon
    worker (its future; nothing new starts once the interpreter exits, see
    :class:`~inspector.background.BackgroundWorker`): it compiles under the programs' own x64 mode and
    device, whatever the caller's thread-local jax context."""
    device = _device()
    with _lock:
        todo = [k for k in _groups(arrays, device) if k not in _programs and k not in _building]
    if not todo:
        return None

    def run() -> None:
        if background and not _worker.wait_while_running(START_DELAY_S):
            return
        for key in todo:
            if background and _worker.exiting:
                return
            _program(key, device)

    if not background:
        run()
        return None
    return _worker.submit(run)


@functools.lru_cache(maxsize=256)
def _picks(size: int) -> np.ndarray:
    """The histogram sample's flat positions in an array of ``size`` (> ``SAMPLE``) elements,
    padded with -1 to ``SAMPLE`` (as :func:`~inspector.stats.rows._positions`: the same positions)."""
    flat = flat_positions(size)
    out = np.full(SAMPLE, -1, np.int32)
    out[:flat.size] = flat
    return out


def _flat(x: Any, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(x)
    return (a if a.dtype == dtype else a.astype(dtype)).reshape(-1)


def describe_bucketed(arrays: Sequence[Any]) -> list[Stats]:
    """Exact :class:`~inspector.model.Stats` of concrete arrays by the bucketed programs: one
    dispatch per dtype and bucket, compiling (or loading from disk) only the programs not yet
    built (:func:`ready` says whether any is missing).

    Args:
        arrays: concrete arrays (numpy, or jax arrays on one device) that
            :func:`~inspector.stats.rows.supported` accepts and :func:`fits`.

    Returns:
        Their statistics, in order: the exact path's rows, decoded as every path's are.
    """
    device = _device()
    out: list[Stats | None] = [None] * len(arrays)
    pending = []
    for key, idx in _groups(arrays, device).items():
        dtype, size, count = np.dtype(key[0]), key[1], key[2]
        for start in range(0, len(idx), count):
            part = idx[start:start + count]
            x = np.zeros((count, size), dtype)
            n = np.zeros(count, np.int32)
            for r, i in enumerate(part):
                flat = _flat(arrays[i], dtype)
                x[r, :flat.size] = flat
                n[r] = flat.size
            args: list[np.ndarray] = [x, n]
            if size > SAMPLE:
                picks = np.full((count, SAMPLE), -1, np.int32)
                for r in range(len(part)):
                    picks[r] = _picks(int(n[r]))
                args.append(picks)
            pending.append((part, n[:len(part)], layout(dtype), _program(key, device)(*args)))
    for part, n, lay, rows in pending:  # dispatched above, read here: the programs run while the next is packed
        for i, st in zip(part, _decode(np.asarray(rows)[:len(part)], lay, n.tolist())):
            out[i] = st
    return [s for s in out if s is not None]


def _decode(rows: np.ndarray, lay: Layout, counts: list[int]) -> list[Stats]:
    return decode_rows(rows, row_groups([lay] * len(counts), counts))


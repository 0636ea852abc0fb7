"""The host side of an inspection: from what the runner returned and the trace's :class:`Plan`,
fetch only statistics (each in-call summary that can't be trusted redone exactly) and build the
:class:`~inspector.model.Inspection`; arrays stay on their device until a
:class:`~inspector.model.Leaf`'s ``value`` is read."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, overload

import jax
import numpy as np

from inspector import stats
from inspector.background import CallerContext
from inspector.engine.signature import weakly
from inspector.inspection.packing import Packed, Packs
from inspector.inspection.plan import Keep, Plan, Slot, SlotSource, lookup
from inspector.inspection import variables as V
from inspector.model import (
    CollectionDiff, Inspection, Kind, Leaf, LeafDiff, MethodCall, Stats, Timings, VariableTree,
)
from inspector.model.leaves import Later
from inspector.names import Path


_SINGLE = jax.sharding.SingleDeviceSharding


class _Placement:
    """Device, sharding text and shard shape per array, memoised per (sharding, shape)."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._memo: dict[Any, tuple[str, str, tuple[int, ...] | None]] = {}

    def __call__(self, x: Any) -> tuple[str, str, tuple[int, ...] | None]:
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            return ("host (numpy)" if isinstance(x, (np.ndarray, np.generic)) else self.default, "", None)
        # Every array has a sharding object of its own: a single device's is keyed by the device.
        key = next(iter(sharding.device_set)) if type(sharding) is _SINGLE else (sharding, x.shape)
        got = self._memo.get(key)
        if got is None:
            dev = devices_text(sharding.device_set)
            shard = tuple(sharding.shard_shape(x.shape)) if len(sharding.device_set) > 1 else None
            got = self._memo[key] = (dev, _sharding_text(sharding), shard)
        return got


def _sharding_text(sharding: Any) -> str:
    name = type(sharding).__name__
    if name == "SingleDeviceSharding":
        return ""
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is not None and mesh is not None:
        axes = ", ".join(f"{k}={v}" for k, v in dict(mesh.shape).items())
        return f"{name}(mesh[{axes}], spec={tuple(spec)})"
    return str(sharding)


class NeedsArrays(Exception):
    """A summary of an array that a lean program (``plan_inspection(lean=True)``) did not return
    can't be trusted: the call must run again with a program that returns the arrays."""


def dropped_any(plan: Plan, rows: list[int]) -> bool:
    """True if some of ``rows`` are of arrays the inspection does not keep (no later histogram)."""
    return any(plan.described[i].source == "dropped" for i in rows)


class CallStats(Sequence[Stats]):
    """The statistics rows of a call's described slots, by row, each computed the first time it is read
    (a batch of rows at a time, :meth:`fill`): the in-call summaries decoded, each redone exactly where it
    can't be trusted, and exact statistics of the rest (numpy's summaries inside
    :func:`~inspector.stats.summaries_after_the_call`, for a call that computed none: ``after_the_call``).

    They are computed under the jax options of the thread that made them (x64 changes the accumulator
    type); the arrays they read are let go once every row is filled. Thread-safe: a worker may fill
    them while a view reads."""

    def __init__(self, plan: Plan, words: np.ndarray, sources: dict[SlotSource, Any], after_the_call: bool,
                 values: dict[SlotSource, list[Any]] | None = None, packs: Packs | None = None,
                 context: CallerContext | None = None) -> None:
        self._plan, self._words = plan, words
        self._sources: dict[SlotSource, Any] | None = sources
        self._values = values or {}  # the slots' values as read at the call (:meth:`Plan.read`), by source
        self._packs = packs  # where a value read is a :class:`Packed`: read on the host from its buffer
        self._rows: list[Stats | None] = [None] * len(plan.described)
        self._decoded = not plan.summarized
        self._after_the_call = after_the_call
        self._context = context or CallerContext()
        self._lock = threading.RLock()
        self.spent_ms = 0.0  # computing them, so far
        self._on_filled: Callable[[float], None] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, row: int) -> Stats: ...
    @overload
    def __getitem__(self, row: slice) -> list[Stats]: ...
    def __getitem__(self, row: int | slice) -> Stats | list[Stats]:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        st = self._rows[row]
        if st is None:
            self.fill()
            st = self._rows[row]
        assert st is not None  # every row is filled by now
        return st

    def when_filled(self, told: Callable[[float], None]) -> None:
        """Calls ``told(ms)`` once every row is filled (now, if they are), with the milliseconds spent
        computing them."""
        with self._lock:
            if self._sources is not None:
                self._on_filled = told
                return
        told(self.spent_ms)

    def fill(self, rows: Iterable[int] | None = None) -> None:
        """Computes the rows not yet computed among ``rows`` (every row by default).

        Raises:
          NeedsArrays: a summary that can't be trusted is of an array the call did not return."""
        with self._lock:
            if self._sources is None:
                return
            want = [i for i in (range(len(self._rows)) if rows is None else rows) if self._rows[i] is None]
            if want:
                t0 = time.perf_counter()
                # (read inside a caller's trace, a program describing them must still run now)
                with self._context.entered(), jax.ensure_compile_time_eval(), (
                        stats.summaries_after_the_call() if self._after_the_call else contextlib.nullcontext()):
                    self._compute(want, self._sources)
                self.spent_ms += (time.perf_counter() - t0) * 1000
            if all(st is not None for st in self._rows):
                self._sources = self._words = None  # type: ignore[assignment]
                told, self._on_filled = self._on_filled, None
                if told is not None:
                    told(self.spent_ms)

    def _compute(self, want: list[int], sources: dict[SlotSource, Any]) -> None:
        plan, out = self._plan, self._rows
        if not self._decoded:  # the in-call summaries, all at once (each trusted one is final)
            for i, st in zip(plan.summarized, stats.decode_rows(self._words, plan.summary_rows)):
                out[i] = st if st.trusted else None
            self._decoded = True
        redo = [i for i in want if out[i] is None]
        if redo and sources.get("dropped") is None and dropped_any(plan, redo):
            raise NeedsArrays()
        arrays = [self._value(plan.described[i], sources) for i in redo]
        for i, st in zip(redo, V.describe_exactly(arrays, hist=dropped_any(plan, redo))):
            out[i] = st

    def _value(self, s: Slot, sources: dict[SlotSource, Any]) -> Any:
        values = self._values.get(s.source)
        v = values[s.at] if values is not None and s.at >= 0 else lookup(sources[s.source], s.keypath)
        return self._packs.host(v) if type(v) is Packed else v  # type: ignore[union-attr]


def _fetch(x: Any, index: Any = None) -> np.ndarray:
    """``x`` (or ``x[index]``) on the host."""
    return np.asarray(x if index is None else x[index])


@dataclasses.dataclass
class _LeafMaker:
    """The :class:`Leaf` of a slot: its statistics row, where it lives, and (kept) how to fetch it."""

    sources: dict[SlotSource, Any]
    stats: Sequence[Stats]  # of the described slots, by row
    variable_stats: Sequence[Stats]  # of the caller's variables, by row
    placement: _Placement
    plan: Plan | None = None  # reads the slots' values (else each is looked up on its own)
    _read: dict[SlotSource, list[Any]] = dataclasses.field(default_factory=dict)
    packs: Packs | None = None  # a packed value's device array (made when first read)

    def value(self, s: Slot) -> Any:
        """The slot's value as read at the call (a :class:`Packed` for a packed one)."""
        if self.plan is not None:
            values = self._read.get(s.source)
            if values is None:
                values = self._read[s.source] = self.plan.read(s.source, self.sources[s.source])
            if s.at >= 0:
                v = values[s.at]
                return v() if type(v) is weakref.ref else v  # (None: the caller's array is gone)
        return lookup(self.sources[s.source], s.keypath)

    def __call__(self, s: Slot, kept: bool = True) -> Leaf:
        if s.opaque is not None:
            return Leaf(s.path, opaque=s.opaque)
        fetch = device = sharding = shard = x = None
        if kept and s.source != "dropped":
            x = self.value(s)
        handle = x
        if type(x) is Packed:  # read on the host from its buffer; on the device only if its handle is
            assert self.packs is not None
            device, sharding, shard = self.placement(self.packs.buffer(x))
            handle = Later(functools.partial(self.packs.array, x))
            x = self.packs.host(x)
        elif x is not None:
            device, sharding, shard = self.placement(x)
        if x is not None:
            fetch = functools.partial(_fetch, x)
        row = None if s.row is None else (self.variable_stats if s.source == "in" else self.stats)[s.row]
        histogram = None
        if row is not None and not row.hist and x is not None:
            histogram = functools.partial(stats.histogram, x, row)
        return Leaf(s.path, s.shape, s.dtype, device or self.placement.default, sharding or "", row,
                    fetch=fetch, shard_shape=shard, handle=handle, histogram=histogram)


def leaf_maker(plan: Plan, words: np.ndarray, sources: dict[SlotSource, Any], device: str) -> _LeafMaker:
    """The :class:`Leaf` of each of ``plan``'s slots, for arrays described alongside a call (as
    gradients are): ``words`` their in-call summaries (fetched), ``sources`` where they live."""
    rows = CallStats(plan, words, sources, after_the_call=False)
    rows.fill()
    return _LeafMaker(sources, rows, [], _Placement(device))


def _diffs(plan: Plan, leaf: _LeafMaker, variables: Callable[[], list[Leaf]],
           delta_words: np.ndarray) -> list[CollectionDiff]:
    """Each mutated collection leaf by leaf: added, changed or unchanged (element-wise where both
    sides were described with one shape), and removed (passed in, not returned)."""
    before_at = {lf.path: lf for lf in variables()}
    deltas = stats.unpack_deltas(delta_words, plan.delta_dtypes)
    diffs = []
    for col, slots in plan.mutated.items():
        rows = [_diff(s.path, before_at.get(s.path), leaf(s), plan.pairs.get(s.path), deltas) for s in slots]
        returned = {s.path for s in slots}
        rows += [LeafDiff(path, "removed", before, None) for path, before in before_at.items()
                 if path[:1] == (col,) and path not in returned]
        diffs.append(CollectionDiff(col, rows))
    return diffs


def _diff(path: Path, before: Leaf | None, after: Leaf, pair: tuple[int | None, int | None] | None,
          deltas: list[Any]) -> LeafDiff:
    if before is None:
        return LeafDiff(path, "added", None, after)
    if pair is None or pair[0] is None:
        changed = before.shape != after.shape or before.dtype != after.dtype
        return LeafDiff(path, "changed" if changed else "unchanged", before, after)
    n, max_abs, mean_abs = deltas[pair[0]]
    return LeafDiff(path, "changed" if n else "unchanged", before, after, int(n), float(max_abs), float(mean_abs))


def _calls(plan: Plan, leaf: _LeafMaker, kept: bool) -> list[MethodCall]:
    return [MethodCall(c.path, c.module_type, c.method, c.index, order, [leaf(s, kept) for s in c.slots], c.sown)
            for order, c in enumerate(plan.calls)]


def _outputs(plan: Plan, leaf: _LeafMaker, call_stats: CallStats) -> list[Leaf]:
    call_stats.fill(_rows_of(plan.outputs))  # theirs only
    return [leaf(s) for s in plan.outputs]


def _described_slots(plan: Plan) -> list[Slot]:
    """The slots of ``plan``'s calls that have a statistics row (built once per trace, kept on the plan)."""
    got: list[Slot] | None = plan.__dict__.get("_described_call_slots")
    if got is None:
        got = plan.__dict__["_described_call_slots"] = [
            s for c in plan.calls for s in c.slots if s.row is not None and s.opaque is None]
    return got


def _any_nonfinite(plan: Plan, call_stats: Sequence[Stats], variable_stats: Sequence[Stats]) -> bool:
    """Whether some call's output has a NaN or Inf (what :meth:`MethodCall.nonfinite` sums), read from the
    statistics rows without building the calls."""
    for s in _described_slots(plan):
        st = (variable_stats if s.source == "in" else call_stats)[s.row]  # type: ignore[index]
        if st.nan or st.posinf or st.neginf:
            return True
    return False


def output_device(result: Any) -> str:
    """The device the call's results live on (``cpu:1`` under ``jax.default_device``), or how many
    devices they span; the default device if no array came back."""
    # flax's (output, state) a part at a time, in flatten order: the output is all that is read, usually
    for part in result if type(result) is tuple else (result,):
        for x in jax.tree.leaves(part):
            if isinstance(x, jax.Array):
                return devices_text(x.sharding.device_set)
    return str(jax.devices()[0])


def devices_text(device_set: Any) -> str:
    """``cpu:1`` for one device, ``4 devices (gpu)`` for several."""
    devices = sorted(device_set, key=lambda d: d.id)
    return str(devices[0]) if len(devices) == 1 else f"{len(devices)} devices ({devices[0].platform})"


def _rows_of(slots: Iterable[Slot]) -> list[int]:
    """The rows of ``slots`` among the call's statistics (not the caller's variables')."""
    return [s.row for s in slots if s.row is not None and s.source != "in" and s.opaque is None]


def assemble(kind: Kind, module: Any, inputs: Any, result: Any, stats_arrays: Any, plan: Plan,
             timings: Timings, keep: Keep, in_stats: Future[list[Stats]] | None = None,
             when_read: bool = False, after_the_call: bool = False,
             on_described: Callable[[float], None] | None = None) -> Inspection:
    """The host-side :class:`Inspection` of one call: ``result`` is what the runner returned,
    ``stats_arrays`` what :func:`plan_inspection` computed alongside, ``inputs`` the caller's
    variables (``apply``). Statistics are fetched; arrays stay on their device. Waiting for the
    variables' statistics (``in_stats``) adds to ``timings.run_ms``.

    ``when_read``: the statistics of the captured calls and of the output are computed the first time
    they are read (only where the inspection keeps every array they read); the mutated collections'
    are computed now. ``after_the_call``: the program computed none (see
    :class:`CallStats`). ``on_described(ms)`` is called once every statistic is computed, with the
    milliseconds computing them took."""
    words, delta_words, dropped, buffers = stats_arrays
    words, delta_words = stats.to_host([words, delta_words])
    context = CallerContext()
    packs = Packs(buffers, plan.packed, context) if plan.packed else None
    sources: dict[SlotSource, Any] = {"in": inputs, "out": result, "dropped": dropped}
    kept = keep != "stats"
    # What is built later (the variables, the calls, their statistics) reads the values as they were at
    # the call, whatever the caller then does to its containers (a training step putting new params in
    # its dict) or to the dicts flax returned. The caller's arrays are held weakly unless the inspection
    # keeps arrays (as its replay holds them).
    read: dict[SlotSource, list[Any]] = {"out": plan.read("out", result),
                                         "in": [] if inputs is None else (plan.read("in", inputs) if kept else
                                                                         [weakly(v) for v in plan.read("in", inputs)])}
    call_stats = CallStats(plan, words, sources, after_the_call, read, packs, context)
    if when_read:
        if plan.mutated:
            call_stats.fill(_rows_of(plan.variables) + _rows_of(s for slots in plan.mutated.values() for s in slots))
    else:
        call_stats.fill()
    t0 = time.perf_counter()
    variable_stats = in_stats.result() if in_stats is not None else []
    timings.run_ms += (time.perf_counter() - t0) * 1000
    device = output_device(result)
    leaf = _LeafMaker(sources, call_stats, variable_stats, _Placement(device), plan, dict(read), packs)
    # Built when first read; what it holds must not keep arrays the inspection drops.
    of_variables = _LeafMaker({"in": inputs, "out": result}, call_stats, variable_stats, leaf.placement, plan,
                              dict(read), packs)

    @functools.cache
    def variables() -> list[Leaf]:
        return [of_variables(s) for s in plan.variables]

    # The calls are built when first read; what their builder holds must not keep the arrays the
    # inspection drops (``keep='stats'``: it reads no value).
    of_calls = _LeafMaker({"in": inputs, "out": result} if kept else {}, call_stats, variable_stats,
                          leaf.placement, plan, dict(read) if kept else {}, packs)
    insp = Inspection(
        kind=kind,
        module_type=type(module).__name__,
        output=result[0] if plan.returns_tuple else (None if kind == "init" else result),
        state=result if kind == "init" else (result[1] if plan.returns_tuple else None),
        outputs=[leaf(s) for s in plan.outputs] if kind != "init" and not when_read else [],
        variables=VariableTree.of_leaves("variables", variables),
        diffs=_diffs(plan, leaf, variables, delta_words) if plan.mutated else [],
        calls=[],
        device=device,
        timings=timings,
        kept=kept,
        notes=list(plan.notes),
        binding=plan.binding,
        subnormals_as_zero=stats.flushes_subnormals(jax.default_backend()),
    )
    if kind != "init" and when_read:
        insp.defer_outputs(functools.partial(_outputs, plan, leaf, call_stats))
    if packs is not None:  # what flax returned, its small captured arrays made when first read
        insp.defer_state(functools.partial(packs.resolved, insp.state))
    any_nonfinite = functools.partial(_any_nonfinite, plan, call_stats, variable_stats)
    insp.defer_calls(functools.partial(_calls, plan, of_calls, kept),
                     any_nonfinite if when_read else any_nonfinite())
    if on_described is not None:
        call_stats.when_filled(on_described)
    return insp

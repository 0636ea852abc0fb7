"""Per-module cost of a flax call: FLOPs, transcendentals, bytes accessed, output (activation) bytes and
parameters, per captured call and per module subtree, and the compiled program's memory.

``insp.costs()`` (:meth:`inspector.model.Inspection.costs`) or :func:`costs` (a module, its variables and
inputs) return a :class:`Costs`. Nothing here imports a view.

**Attribution rule.** The program is the plain flax call the run makes (``nn.apply``/``init``/
``init_with_output`` of the run's function and module, ``mutable`` as the run's, without capture, statistics or
patches), traced once by ``jax.jit(...).trace`` on the inputs' shapes. Its jaxpr is counted equation by
equation, and each equation is charged to the innermost flax module method call in its
``source_info.name_stack``. flax labels module methods there itself (``Model/blocks_0/attn``, its
``flax_profile`` named scopes); while tracing, inspector adds one label of its own to each module method call
(through ``nn.intercept_methods``), so two calls of one module are told apart and the path and call index are
exact (the keys are those of :attr:`~inspector.model.MethodCall.key`). Equations outside every method call
(code in the run's own function) are charged to the root module ``/`` and to no call. A call's cost includes
the calls it makes; a module subtree's cost is the sum over the equations charged to the module and the
modules below it, so the ``own`` costs of all modules sum to the total, and so does the root's subtree.
For an inspection of ``fi.inspect_grad`` the program is the loss's forward call (its gradient is not counted).
Arrays count as their global shapes (the program before it is partitioned across devices).

**Counting rules** (those of XLA's ``HloCostAnalysis``, which ``jax.jit(f).lower(...).cost_analysis()`` applies
to the unoptimized HLO): ``dot_general`` is ``2 x batch x M x N x K``; ``conv_general_dilated`` 2 per
multiply-add over the kernel positions that fall inside the (padded, dilated) input, as XLA counts them;
elementwise arithmetic, comparisons, selects and conversions 1 per output element; transcendental functions
(``exp``, ``log``, ``tanh``, ``logistic``, ``sin``, ``cos``, ``pow``, ``sqrt``, ``rsqrt``...) 1 transcendental
per output element and no FLOP; reductions 1 per input element; ``integer_pow`` ``x**n`` the multiplications
its lowering makes; data movement (reshape, transpose, slices, broadcasts, concatenation) none. A
primitive without a rule here (``erf``, gathers, ``argmax``, sorts, cumulative sums, random bits...) is lowered
alone and counted by XLA itself (once per distinct primitive, shapes and parameters). Bytes accessed are, per
equation, its operands' bytes plus its results' bytes (XLA's rule, on the unfused program: an upper bound on
what a fused program moves; XLA's own count of the unoptimized HLO is higher, as it has more ops). Inner
programs are entered: ``jit``/``pjit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``/``checkpoint``,
``closed_call``; a ``scan`` body (an ``nn.scan`` layer) is charged once per iteration (times its length);
``cond`` is charged its most expensive branch (by FLOPs, the cost of a ``switch`` that takes it); a
``while`` loop's body and condition once each (the trip count is not known before running; XLA's own
analysis does the same).

**Whole program.** :attr:`Costs.flops`, :attr:`Costs.transcendentals` and :attr:`Costs.bytes_accessed` are
the counts above; :attr:`Costs.xla` holds XLA's own ``cost_analysis()`` of the unoptimized program (``flops``,
``transcendentals``, ``bytes accessed``; XLA counts a loop body once), and :attr:`Costs.memory` the compiled
program's ``memory_analysis()``: argument, output, alias, temporary and generated-code bytes, and
``peak_bytes = argument + output + temp - alias`` (what the executable holds at once at its peak).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from inspector.cost_attribution import _Labeller, _Tally
from inspector.engine.call_inputs import CallInputs
from inspector.cost_rules import _Count, _nbytes, _size
from inspector.names import Path, format_key, format_path, safe

__all__ = ["CallCost", "ModuleCost", "MemoryCost", "Costs", "costs", "costs_of", "remember", "CostsUnavailable",
           "computed", "available", "RULE"]

RULE = ("each operation is charged to the innermost module method call that made it (flax's name stack), "
        "a subtree includes the modules below it, a scan body is charged once per iteration")
"""The attribution rule in one line, as the views state it."""


@dataclasses.dataclass(frozen=True)
class CallCost:
    """One module method call; ``order`` counts calls in the order they returned (as
    :attr:`inspector.model.MethodCall.order` does). ``key`` is ``'path:method[index]'`` as
    :attr:`inspector.model.MethodCall.key`. Costs include the calls it makes; a call inside an ``nn.scan``
    body is charged once per iteration, and its ``output_bytes`` are those of all iterations. ``params`` and
    ``param_bytes``: the ``params`` collection of the call's module subtree (what the call can use)."""

    key: str
    path: Path
    method: str
    index: int
    order: int
    module_type: str
    flops: float
    transcendentals: float
    bytes_accessed: float
    output_bytes: int
    params: int = 0
    param_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class ModuleCost:
    """One module subtree (a path prefix; ``()`` is the root), aggregated over the module and every module
    below it. ``own_*``: the equations charged to this module alone. ``output_bytes``: the bytes the
    module's own calls return (its activations; not summed over the subtree). ``params`` and
    ``param_bytes``: the ``params`` collection under the path."""

    path: Path
    depth: int
    module_type: str
    flops: float
    transcendentals: float
    bytes_accessed: float
    output_bytes: int
    params: int
    param_bytes: int
    own_flops: float
    own_transcendentals: float
    own_bytes_accessed: float
    calls: int

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else "/"


@dataclasses.dataclass(frozen=True)
class MemoryCost:
    """The compiled program's ``memory_analysis()`` in bytes; ``peak_bytes`` is ``argument_bytes +
    output_bytes + temp_bytes - alias_bytes``."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    generated_code_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes


@dataclasses.dataclass(frozen=True)
class Costs:
    """The cost of one flax call (see the module's docstring for the attribution and counting rules).

    ``calls``: every module method call, in the order they returned (that of ``Inspection.calls``);
    ``modules``: every module subtree, depth first in the order modules were first called (the root ``()``
    first). ``flops``/``transcendentals``/``bytes_accessed``: the whole program's counts (equal to the root
    subtree's). ``params``/``param_bytes``: the ``params`` collection. ``xla``: XLA's own ``cost_analysis()``
    of the unoptimized program (the keys it gave of ``flops``, ``transcendentals``, ``bytes accessed``).
    ``memory``: the compiled program's memory (None if not compiled)."""

    calls: list[CallCost]
    modules: list[ModuleCost]
    flops: float
    transcendentals: float
    bytes_accessed: float
    params: int
    param_bytes: int
    xla: dict[str, float] = dataclasses.field(default_factory=dict)
    memory: MemoryCost | None = None
    module_type: str = ""

    def module(self, path: str | Sequence[str] = ()) -> ModuleCost:
        """The subtree at ``path`` (``'blocks_0/attn'`` or a tuple; ``'/'`` or ``()`` the root)."""
        if isinstance(path, str):
            from inspector.names import parse_path

            path = () if path in ("", "/") else parse_path(path)
        path = tuple(path)
        for m in self.modules:
            if m.path == path:
                return m
        raise KeyError(safe(f"no module {format_path(path)!r}"))

    def call(self, key: str) -> CallCost:
        """The call keyed ``'path:method'`` (its first call) or ``'path:method[i]'``."""
        from inspector.names import parse_key

        path, method, index = parse_key(key)
        for c in self.calls:
            if c.path == path and c.method == method and c.index == (index or 0):
                return c
        raise KeyError(safe(f"no call {key!r}"))

    def share(self, row: ModuleCost | CallCost) -> float:
        """The row's FLOPs as a fraction of the total (0 when the program has none)."""
        return row.flops / self.flops if self.flops else 0.0

    def to_text(self, max_depth: int | None = None) -> str:
        """A table: one line per module subtree (indented by depth), FLOPs with SI suffixes and their share
        of the total, transcendentals, bytes accessed, output bytes and parameters; then the totals."""
        head = ("module", "FLOPs", "share", "transc.", "bytes acc.", "out bytes", "params")
        rows = [head]
        for m in self.modules:
            if max_depth is not None and m.depth > max_depth:
                continue
            label = "  " * m.depth + (safe(m.name) if m.path else f"/ ({safe(self.module_type)})")
            rows.append((label, si(m.flops), f"{100 * self.share(m):.1f}%", si(m.transcendentals),
                         si(m.bytes_accessed, "B"), si(m.output_bytes, "B"), si(m.params)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                 for r in rows]
        total = (f"total: {si(self.flops)}FLOPs, {si(self.transcendentals)} transcendentals, "
                 f"{si(self.bytes_accessed, 'B')} accessed, {si(self.params)} params ({si(self.param_bytes, 'B')})")
        lines.append(total)
        if "flops" in self.xla:
            lines.append(f"XLA cost_analysis of the unoptimized HLO: {si(self.xla['flops'])}FLOPs "
                         "(loop bodies counted once)")
        if self.memory is not None:
            mem = self.memory
            lines.append(f"compiled memory: peak {si(mem.peak_bytes, 'B')} (arguments {si(mem.argument_bytes, 'B')}, "
                         f"outputs {si(mem.output_bytes, 'B')}, temporaries {si(mem.temp_bytes, 'B')})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def si(x: float, unit: str = "") -> str:
    """``1234567 -> '1.23 M'``: three significant digits and an SI prefix (k, M, G, T, P); ``unit`` after it."""
    if x == 0:
        return f"0 {unit}".rstrip() if unit else "0"
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale * 0.9995:
            return f"{x / scale:.3g} {prefix}{unit}"
    text = f"{x:.3g}" if x != int(x) else str(int(x))
    return f"{text} {unit}".rstrip() if unit else text


# -- re-tracing an inspected call: the entry points ------------------------------

class CostsUnavailable(RuntimeError):
    """The inspection cannot be re-traced for its costs (it was not made by an inspected flax.linen run, or
    what it needs is gone)."""


@dataclasses.dataclass
class _CostInputs:
    """What re-tracing an inspected call needs, kept cheaply on its :class:`~inspector.model.Inspection`: the
    flax call (kind, function, module, ``mutable``) and the inputs' structure with each array's shape and
    dtype (other values kept as given): no array is held."""

    kind: str
    fn: Callable
    module: Any
    mutable: Any
    tree: Any
    leaves: list[Any]

    def __reduce__(self) -> Any:
        return (_forgotten, ())  # a pickled inspection keeps no function or module: its costs() raises

    def __deepcopy__(self, memo: dict) -> _CostInputs:
        return self

    @property
    def inputs(self) -> tuple[tuple, dict]:
        import jax

        shaped = _array_types()[1]
        leaves = [jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=x.weak_type)
                  if type(x) is _Spec or type(x) is shaped else x for x in self.leaves]
        return jax.tree.unflatten(self.tree, leaves)


def _forgotten() -> None:
    return None


class _Spec:
    __slots__ = ("shape", "dtype", "weak_type")

    def __init__(self, shape: tuple[int, ...], dtype: Any, weak_type: bool = False):
        self.shape, self.dtype, self.weak_type = shape, dtype, weak_type


_TYPES: list[Any] = []


def _array_types() -> list[Any]:
    """jax's concrete array class and the class of its ``aval`` (found on first use)."""
    if not _TYPES:
        import jax

        x = jax.numpy.zeros(())
        _TYPES.extend((type(x), type(x.aval)))
    return _TYPES


def _spec(x: Any) -> Any:
    """``x``'s shape and dtype if it is an array other than jax's own (no reference to the array is kept),
    else ``x``."""
    import jax

    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return _Spec(tuple(np.shape(x)), x.dtype, bool(getattr(x, "weak_type", False)))
    return x


_ATTR = "_inspector_costs"


def _abstract(x: Any) -> Any:
    import jax

    def leaf(v: Any) -> Any:
        if isinstance(v, (jax.Array, np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(np.shape(v), v.dtype)
        return v

    return jax.tree.map(leaf, x)


def remember(run: Any, insp: Any, inputs: CallInputs) -> None:
    """Called by an inspected run after it built ``insp``: keeps what :meth:`Inspection.costs` needs (the
    inputs' shapes only, no arrays). Never fails the call."""
    try:
        runner = getattr(run, "runner", None)
        if runner is None or getattr(runner, "fn", None) is None or not getattr(runner, "intercepts", False):
            return
        leaves, tree = inputs.leaves, inputs.treedef
        impl = _array_types()[0]  # a jax array is kept as its aval (shape, dtype, weak type): a cheap attribute
        specs = [x.aval if type(x) is impl else _spec(x) for x in leaves]
        insp.__dict__[_ATTR] = _CostInputs(runner.kind, runner.fn, runner.module, runner.mutable, tree, specs)
    except Exception:  # noqa: BLE001 - keeping the costs' inputs never fails a call
        return


def inspection_costs(insp: Any, memory: bool = True) -> Costs:
    """:meth:`Inspection.costs`: computed on the first request, then cached on the inspection."""
    cached = insp.__dict__.get("_inspector_costs_value")
    if cached is not None and (cached.memory is not None or not memory):
        return cached
    source = insp.__dict__.get(_ATTR)
    if source is None:
        raise CostsUnavailable("costs are computed for inspections made by fi.inspect, fi.inspect_apply, "
                               "fi.inspect_init or fi.inspect_init_with_output of a flax.linen module")
    params = _param_sizes((leaf.path, leaf.size, leaf.nbytes) for leaf in insp.variables.leaves()
                          if leaf.opaque is None)
    result = costs_of(source.kind, source.fn, source.module, source.mutable, *source.inputs,
                      params=params, memory=memory)
    insp.__dict__["_inspector_costs_value"] = result
    return result


def computed(insp: Any) -> Costs | None:
    """The inspection's costs if :meth:`Inspection.costs` already computed them (never computes), else None."""
    cached = getattr(insp, "__dict__", {}).get("_inspector_costs_value")
    return cached if isinstance(cached, Costs) else None


def available(insp: Any) -> bool:
    """True if :meth:`Inspection.costs` can be asked of ``insp`` (it keeps what re-tracing its call needs, or
    holds the costs already), without computing them."""
    return getattr(insp, "__dict__", {}).get(_ATTR) is not None or computed(insp) is not None


def _param_sizes(leaves: Iterator[tuple[Path, int, int]]) -> dict[Path, tuple[int, int]]:
    """``{module path: (count, bytes)}`` of the ``params`` collection's leaves (the leaf's own module)."""
    out: dict[Path, tuple[int, int]] = {}
    for path, size, nbytes in leaves:
        if not path or path[0] != "params":
            continue
        module = tuple(path[1:-1])
        n, b = out.get(module, (0, 0))
        out[module] = (n + size, b + nbytes)
    return out


def costs(module: Any, variables: Any, *args: Any, method: Any = None, mutable: Any = False,
          memory: bool = True, **kwargs: Any) -> Costs:
    """The :class:`Costs` of ``module.apply(variables, *args, method=method, mutable=mutable, **kwargs)``
    (arrays or ``jax.ShapeDtypeStruct`` inputs), without inspecting it."""
    from inspector.engine.runner import method_fn

    import jax

    params = _param_sizes((tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in p), _size(v), _nbytes(v))
                          for p, v in jax.tree_util.tree_flatten_with_path(variables)[0])
    return costs_of("apply", method_fn(module, method), module, mutable, (variables, *args), kwargs,
                    params=params, memory=memory)


def costs_of(kind: str, fn: Callable, module: Any, mutable: Any, args: tuple, kwargs: dict, *,
             params: dict[Path, tuple[int, int]] | None = None, memory: bool = True) -> Costs:
    """Traces flax's ``kind`` call of ``fn`` on ``module`` (``args``/``kwargs`` arrays or
    ``jax.ShapeDtypeStruct``) and counts its :class:`Costs`; ``memory`` also compiles it for
    ``memory_analysis()``."""
    import flax.linen as nn
    import jax

    from inspector.engine.runner import FLAX_ENTRIES

    abstract = _abstract((args, kwargs))
    leaves, tree = jax.tree.flatten(abstract, is_leaf=lambda x: x is None)
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]
    labeller = _Labeller()

    def call(*arrays: Any) -> Any:
        full = list(leaves)
        for i, a in zip(where, arrays):
            full[i] = a
        a, k = jax.tree.unflatten(tree, full)
        flax_fn = FLAX_ENTRIES[kind](fn, module, mutable=mutable, capture_intermediates=False)  # type: ignore[index]
        with nn.intercept_methods(labeller):
            out = flax_fn(*a, **k)
        return [x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)]

    traced = jax.jit(call).trace(*[leaves[i] for i in where])
    tally = _Tally()
    tally.walk(traced.jaxpr.jaxpr)
    lowered = traced.lower()
    xla: dict[str, float] = {}
    try:
        analysis = lowered.cost_analysis() or {}
        xla = {k: float(analysis[k]) for k in ("flops", "transcendentals", "bytes accessed") if k in analysis}
    except Exception:  # noqa: BLE001 - a backend without cost analysis
        pass
    mem = None
    if memory:
        try:
            stats = lowered.compile().memory_analysis()
            mem = MemoryCost(int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
                             int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes),
                             int(stats.generated_code_size_in_bytes))
        except Exception:  # noqa: BLE001 - a backend without memory analysis
            mem = None
    return _assemble(labeller, tally, params or {}, xla, mem, type(module).__name__)


def _assemble(labeller: _Labeller, tally: _Tally, params: dict[Path, tuple[int, int]], xla: dict[str, float],
              mem: MemoryCost | None, module_type: str) -> Costs:
    calls = []
    zero = _Count()
    for mark, seen in sorted(labeller.seen.items(), key=lambda item: item[1].done):
        c = tally.inclusive.get(mark, zero)
        times = tally.times.get(mark, 1.0)
        calls.append(CallCost(format_key(seen.path, seen.method, seen.index), seen.path, seen.method, seen.index,
                              seen.done, seen.module_type, c.flops, c.transcendentals, c.bytes_accessed,
                              int(seen.output_bytes * times)))
    # module subtrees, in the order modules were first called (then modules holding only parameters)
    order: dict[Path, str] = {(): module_type}
    for seen in labeller.seen.values():
        for i in range(len(seen.path)):
            order.setdefault(seen.path[:i], "")
        if not order.get(seen.path):
            order[seen.path] = seen.module_type
    for path in params:
        for i in range(len(path) + 1):
            order.setdefault(path[:i], "")
    own: dict[Path, _Count] = {}
    for label, c in tally.own.items():
        path = labeller.seen[label].path if label is not None else ()
        own.setdefault(path, _Count()).add(c)
    out_bytes: dict[Path, int] = {}
    ncalls: dict[Path, int] = {}
    for call in calls:
        out_bytes[call.path] = out_bytes.get(call.path, 0) + call.output_bytes
        ncalls[call.path] = ncalls.get(call.path, 0) + 1
    # depth-first: children after their parent, in first-seen order
    children: dict[Path, list[Path]] = {}
    for path in order:
        if path:
            children.setdefault(path[:-1], []).append(path)
    modules: list[ModuleCost] = []

    def visit(path: Path) -> tuple[_Count, int, int]:
        total = _Count()
        total.add(own.get(path, zero))
        n, b = params.get(path, (0, 0))
        index = len(modules)
        modules.append(None)  # type: ignore[arg-type]  # filled below, after the subtree
        for child in children.get(path, []):
            c, cn, cb = visit(child)
            total.add(c)
            n, b = n + cn, b + cb
        mine = own.get(path, zero)
        modules[index] = ModuleCost(path, len(path), order[path], total.flops, total.transcendentals,
                                    total.bytes_accessed, out_bytes.get(path, 0), n, b, mine.flops,
                                    mine.transcendentals, mine.bytes_accessed, ncalls.get(path, 0))
        return total, n, b

    visit(())
    root = modules[0]
    by_path = {m.path: m for m in modules}
    calls = [dataclasses.replace(c, params=by_path[c.path].params, param_bytes=by_path[c.path].param_bytes)
             if c.path in by_path else c for c in calls]
    return Costs(calls, modules, tally.total.flops, tally.total.transcendentals, tally.total.bytes_accessed,
                 root.params, root.param_bytes, xla, mem, module_type)

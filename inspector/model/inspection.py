"""One inspected call: its captured method calls (:class:`MethodCall`), the binding trace
(:class:`BindingCall`), timings, gradient analytics and the :class:`Inspection` that holds them."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from inspector.model.deltas import CollectionDiff
from inspector.model.leaves import RECORD_STATS, Leaf, VariableTree
from inspector.model.vocabulary import Kind, parse_lookup_key
from inspector.names import Path, format_key, format_path, safe


@dataclasses.dataclass
class MethodCall:
    """One captured value: a method's return (or a sow'ed value) at a module path.

    ``index`` counts calls of the same ``(path, method)``; ``order`` is the position
    in execution order over the whole run. ``outputs`` are the array leaves of the
    returned value (a tuple output gives several).
    """

    path: Path
    module_type: str
    method: str
    index: int
    order: int
    outputs: list[Leaf]
    sown: bool = False
    grads: list[Leaf] | None = None  # d loss / d each floating-point output (fi.inspect_grad), by the output's path

    @property
    def key(self) -> str:
        """``'path:method[index]'`` in the key grammar of :mod:`inspector.names`."""
        return format_key(self.path, self.method, self.index)

    @property
    def nonfinite(self) -> int:
        return sum(leaf.nonfinite for leaf in self.outputs)

    @property
    def origin(self) -> Any:
        """Where this call's NaN/Inf was born (:class:`inspector.origin.Origin`: the operation, its
        source line and operands) if this is its inspection's first non-finite call, else None;
        computed on the first request by re-running the call (:mod:`inspector.origin`)."""
        from inspector.origin import origin_of

        return origin_of(self)

    @property
    def inputs(self) -> list[Leaf]:
        """The call's positional and keyword arguments, a :class:`Leaf` each (``args/0``, ``kwargs/train``) with
        statistics; arrays only with ``keep="arrays"``. Computed on the first request (:mod:`inspector.replay`)."""
        from inspector.replay import inputs_of

        return inputs_of(self)

    def replay(self, **changes: Any) -> Any:
        """Runs this call's method of its module alone, jitted, on its recorded inputs and variables;
        ``params=``, ``variables=``, ``inputs=``, ``kwargs=``, ``rngs=`` replace them
        (:func:`inspector.replay.replay`)."""
        from inspector.replay import replay

        return replay(self, **changes)

    @property
    def grad_nonfinite(self) -> int:
        """NaN and Inf elements in the gradients with respect to the outputs."""
        return sum(leaf.nonfinite for leaf in self.grads or ())

    def output_path(self, leaf: Leaf) -> Path:
        """Where ``leaf`` sits inside the returned value (``()`` for a returned array)."""
        return leaf.path[len(self.path) + 1:]


@dataclasses.dataclass
class BindingCall:
    """One wrapped method call during the trace, and what it touched.

    ``reads``/``writes`` map a collection to the variable names the call read or
    wrote (relative to the module, or ``other/path:name`` for another module's);
    ``rngs`` maps an RNG stream to how many keys were drawn (a missing stream falls
    back to ``params``, shown as ``dropout->params``). ``parent`` is the ``order`` of
    the enclosing call. ``traced`` is 2 for a call in the body of a lifted transform
    that flax traces twice (``nn.scan``: once for the structure of its outputs, then
    the loop that runs); only the second trace is listed.
    """

    order: int
    parent: int | None
    depth: int
    path: Path
    module_type: str
    method: str
    reads: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    writes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    rngs: dict[str, int] = dataclasses.field(default_factory=dict)
    traced: int = 1

    @property
    def key(self) -> str:
        return format_key(self.path, self.method)


@dataclasses.dataclass
class Timings:
    """Wall times of one inspected call, in milliseconds (trace/compile are 0 when cached)."""

    trace_ms: float = 0.0
    compile_ms: float = 0.0
    run_ms: float = 0.0
    cached: bool = False

    @property
    def total_ms(self) -> float:
        return self.trace_ms + self.compile_ms + self.run_ms


@dataclasses.dataclass(frozen=True)
class UpdateScale:
    """One parameter (or module) of a gradient inspection: the norms of its gradient and of its
    value, and their ratio, the scale of a gradient-descent update relative to the parameter
    (times the learning rate). Norms are over finite elements; ``nonfinite`` counts the others."""

    key: str
    grad_norm: float
    param_norm: float
    ratio: float
    nonfinite: int = 0


@dataclasses.dataclass(frozen=True)
class GradNorm:
    """One captured call of a gradient inspection: the norm of its output (``activation_norm``)
    and of the loss's gradient with respect to it (``grad_norm``); ``depth`` is its module path's
    length. Norms are over finite elements; ``nonfinite`` counts the gradient's others."""

    key: str
    order: int
    module_type: str
    depth: int
    activation_norm: float
    grad_norm: float
    nonfinite: int = 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Pending:
    """An inspection's attribute before it is first read: how to build it. Built once, under a lock;
    :meth:`built` runs then, before anyone reads it."""

    def __init__(self, name: str, build: Callable[[], Any]) -> None:
        self.name, self.build = name, build
        self.lock = threading.Lock()

    def materialize(self, insp: Inspection) -> Any:
        with self.lock:
            if self.name not in insp.__dict__:
                value = self.build()
                self.built(value)
                insp.__dict__[self.name] = value
                insp.__dict__.pop(f"_pending_{self.name}", None)
            return insp.__dict__[self.name]

    def built(self, value: Any) -> None:
        """What is done to the value once it is built."""


class _PendingCalls(_Pending):
    """An inspection's calls before they are first read: also whether one of them has a NaN or Inf (or
    how to find out, when statistics are computed as first read), and what
    :meth:`Inspection.annotate_calls` asked to set on each (applied once built)."""

    def __init__(self, build: Callable[[], list[MethodCall]], any_nonfinite: bool | Callable[[], bool]) -> None:
        super().__init__("calls", build)
        self.any_nonfinite = any_nonfinite
        self.annotations: dict[str, Any] = {}
        self.when_built: list[Callable[[list[MethodCall]], None]] = []

    def built(self, calls: list[MethodCall]) -> None:
        for call in calls:
            call.__dict__.update(self.annotations)
        for told in self.when_built:
            told(calls)


_DEFERRED = ("calls", "outputs", "state")  # the attributes an inspection may build when first read


@dataclasses.dataclass
class Inspection:
    """Everything one inspected flax call produced.

    ``output`` and ``state`` are exactly what flax returned (``state`` is None when
    flax returned no tuple), except that with ``keep="stats"`` ``state`` has no
    ``'intermediates'`` collection: its arrays are not kept (their statistics are in
    ``calls``). ``variables`` describes the variables passed in (for
    ``init``, the ones created); ``diffs`` the mutated collections; ``calls`` the
    intermediates in execution order.
    """

    kind: Kind
    module_type: str
    output: Any
    state: Any
    outputs: list[Leaf]
    variables: VariableTree
    diffs: list[CollectionDiff]
    calls: list[MethodCall]
    device: str = ""
    timings: Timings = dataclasses.field(default_factory=Timings)
    kept: bool = True
    notes: list[str] = dataclasses.field(default_factory=list)
    binding: list[BindingCall] = dataclasses.field(default_factory=list)
    subnormals_as_zero: bool = False  # the device reads subnormal floats as 0, and so do the statistics
    grads: VariableTree | None = None  # d loss / d params (fi.inspect_grad)
    loss: float | None = None  # the loss that ``grads`` differentiate (fi.inspect_grad)

    # -- calls built when first read --------------------------------------------------
    def defer_calls(self, build: Callable[[], list[MethodCall]], any_nonfinite: bool | Callable[[], bool]) -> None:
        """Makes :attr:`calls` those ``build()`` returns, built the first time they are read: an inspection
        whose calls are never looked at never builds them. ``any_nonfinite``: whether one of them has a NaN
        or Inf, or a function that tells (:meth:`first_nonfinite` answers None without building them where
        none has)."""
        self.__dict__.pop("calls", None)
        self.__dict__["_pending_calls"] = _PendingCalls(build, any_nonfinite)

    def defer_outputs(self, build: Callable[[], list[Leaf]]) -> None:
        """Makes :attr:`outputs` those ``build()`` returns, built the first time they are read (their
        statistics are computed then)."""
        self.__dict__.pop("outputs", None)
        self.__dict__["_pending_outputs"] = _Pending("outputs", build)

    def defer_state(self, build: Callable[[], Any]) -> None:
        """Makes :attr:`state` what ``build()`` returns, built the first time it is read."""
        self.__dict__.pop("state", None)
        self.__dict__["_pending_state"] = _Pending("state", build)

    def annotate_calls(self, name: str, value: Any) -> None:
        """Sets attribute ``name`` to ``value`` on every call (in its ``__dict__``): now if the calls are
        built, else as they are built."""
        pending: _PendingCalls | None = self.__dict__.get("_pending_calls")
        if pending is not None:
            with pending.lock:
                if "calls" not in self.__dict__:
                    pending.annotations[name] = value
                    return
        for call in self.calls:
            call.__dict__[name] = value

    def when_calls_built(self, told: Callable[[list[MethodCall]], None]) -> None:
        """Calls ``told(calls)`` once the calls are built, before anyone reads them (now, if they are)."""
        pending: _PendingCalls | None = self.__dict__.get("_pending_calls")
        if pending is not None:
            with pending.lock:
                if "calls" not in self.__dict__:
                    pending.when_built.append(told)
                    return
        told(self.calls)

    if not TYPE_CHECKING:  # mypy keeps checking attribute names: only those in _DEFERRED are ever missing
        def __getattr__(self, name):
            pending = self.__dict__.get(f"_pending_{name}") if name in _DEFERRED else None
            if pending is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return pending.materialize(self)

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle holds the calls, outputs and state themselves, built now if they were not."""
        built = {name: getattr(self, name) for name in _DEFERRED}  # first: building may add to the inspection
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_pending_")}
        state.update(built)
        return state

    # -- lookup -------------------------------------------------------------
    def __getitem__(self, key: str) -> Leaf:
        """A leaf by key (:mod:`inspector.names`): ``'params/Dense_0/kernel'``, ``'Dense_0:__call__'``,
        ``'Dense_0:__call__[1]'`` (call index), ``'output'`` or ``'output/<path>'``. A name holding
        ``/ : [ ] \\`` is written with a backslash before it (``'enc\\:dec:__call__'``)."""
        path, method, index = parse_lookup_key(key)
        if method is not None:
            call = self.call(key)
            if len(call.outputs) != 1:
                raise KeyError(safe(f"{call.key} returned {len(call.outputs)} arrays; see .outputs"))
            return call.outputs[0]
        if path == ("output",):
            if len(self.outputs) != 1:
                raise KeyError(f"the output has {len(self.outputs)} leaves; use 'output/<i>'")
            return self.outputs[0]
        if path[:1] == ("output",):
            for leaf in self.outputs:
                if leaf.path == path[1:]:
                    return leaf
        node = self.variables.root.find(path)
        if node is None or node.leaf is None:
            collections = ", ".join(map(format_path, ((c,) for c in self.variables.collections)))
            raise KeyError(f"no variable {key!r}; collections: {collections}")
        return node.leaf

    def call(self, key: str) -> MethodCall:
        """The :class:`MethodCall` keyed ``'path:method'`` or ``'path:method[i]'`` (:attr:`MethodCall.key`)."""
        path, method, index = parse_lookup_key(key)
        if method is None:
            raise KeyError(f"{key!r} is not of the form 'path:method[index]'")
        index = index or 0
        for call in self.calls:
            if call.path == path and call.method == method and call.index == index:
                return call
        raise KeyError(f"no captured call {key!r}; captured: {', '.join(c.key for c in self.calls[:8])}")

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per described leaf: ``section`` ('output', 'variables', 'intermediates',
        'gradients', 'activation gradients'), ``key`` and ``part`` (the leaf inside a returned
        value, ``''`` for an array), ``order`` (execution order of a call, else ``None``), ``shape``,
        ``dtype``, ``size``, ``nbytes``, ``device`` and every statistic (``None`` where there are none)."""
        rows: list[dict[str, Any]] = []

        def add(section: str, key: str, leaf: Leaf, part: Path = (), order: int | None = None) -> None:
            if leaf.opaque is not None:
                return
            s = leaf.stats
            stats = {name: getattr(s, name) if s is not None else None for name in RECORD_STATS}
            rows.append({"section": section, "key": key, "part": format_path(part), "order": order,
                         "shape": leaf.shape, "dtype": leaf.dtype, "size": leaf.size, "nbytes": leaf.nbytes,
                         "device": leaf.device, **stats,
                         "zero_frac": s.frac_zero if s is not None else None,
                         "nonfinite": s.nonfinite if s is not None else None})

        for leaf in self.outputs:
            add("output", format_path(("output",) + leaf.path) if leaf.path else "output", leaf)
        for leaf in self.variables.leaves():
            add("variables", format_path(leaf.path), leaf)
        for call in self.calls:
            for leaf in call.outputs:
                add("intermediates", call.key, leaf, call.output_path(leaf), call.order)
        if self.grads is not None:
            for leaf in self.grads.leaves():
                add("gradients", format_path(leaf.path), leaf)
            for call in self.calls:
                for leaf in call.grads or ():
                    add("activation gradients", call.key, leaf, call.output_path(leaf), call.order)
        return rows

    def to_pandas(self) -> Any:
        """:meth:`to_records` as a ``pandas.DataFrame``, one row per leaf. Needs pandas
        (``pip install pandas``, or the package's 'pandas' extra). ``min``, ``max`` and ``abs_max``
        are exact: a column holding an integer that float64 would round is of ``object`` dtype."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Inspection.to_pandas needs pandas: pip install pandas "
                              "(or the package's 'pandas' extra)") from e
        records = self.to_records()
        frame = pd.DataFrame(records)
        for name in ("min", "max", "abs_max"):
            values = [r[name] for r in records]
            if any(type(v) is int and float(v) != v for v in values):  # int64/uint64 beyond 2**53
                frame[name] = pd.Series(values, index=frame.index, dtype=object)
        return frame

    def first_nonfinite(self) -> MethodCall | None:
        """The earliest captured call (in execution order) whose output has a NaN or Inf."""
        pending: _PendingCalls | None = self.__dict__.get("_pending_calls")
        if pending is not None:
            found = pending.any_nonfinite
            if not (found() if callable(found) else found):
                return None
        return next((c for c in self.calls if c.nonfinite), None)

    def nonfinite_origin(self) -> Any:
        """The origin of the first NaN/Inf (``self.first_nonfinite().origin``): None if every value
        is finite (see :attr:`MethodCall.origin`)."""
        from inspector.origin import nonfinite_origin

        return nonfinite_origin(self)

    def costs(self, memory: bool = True) -> Any:
        """Per-module cost (:class:`inspector.costs.Costs`): FLOPs, transcendentals, bytes accessed, output
        bytes and parameters per call and per module subtree, and the compiled program's memory
        (``memory=False``: not compiled). Computed on the first request by re-tracing the flax call on its
        inputs' shapes, then cached here (see :mod:`inspector.costs` for the attribution rule)."""
        from inspector.costs import inspection_costs

        return inspection_costs(self, memory)

    def attention(self, names: Any = None, *, batch: int = 0, tokens: Any = None, axes: Any = None) -> Any:
        """The attention maps found here (:class:`inspector.attention.AttentionMaps`): what flax's
        ``MultiHeadDotProductAttention`` sows with ``sow_weights=True``, or the captured arrays ``names``
        (keys, globs or a predicate) with ``axes`` (letters of ``bhqk``); batch element ``batch``, positions
        labelled ``tokens`` (see :func:`inspector.attention.attention`). The notebook widget's Attention tab
        shows the last maps asked for here."""
        from inspector.attention import attention

        maps = attention(self, names, batch=batch, tokens=tokens, axes=axes)
        self.__dict__["_attention"] = maps
        return maps

    # -- gradients (fi.inspect_grad) ------------------------------------------
    def grad(self, key: str) -> Leaf:
        """A gradient by key: ``'params/Dense_0/kernel'`` (d loss / d that parameter) or
        ``'Dense_0:__call__[1]'`` (d loss / d that call's output)."""
        if self.grads is None:
            raise KeyError("no gradients: inspect with fi.inspect_grad")
        path, method, _ = parse_lookup_key(key)
        if method is not None:
            call = self.call(key)
            if not call.grads or len(call.grads) != 1:
                raise KeyError(safe(f"{call.key} has {len(call.grads or ())} gradients; see .grads"))
            return call.grads[0]
        node = self.grads.root.find(path)
        if node is None or node.leaf is None:
            raise KeyError(safe(f"no gradient {key!r}"))
        return node.leaf

    def first_nonfinite_grad(self) -> MethodCall | None:
        """In backward order (the reverse of execution), the first captured call whose incoming
        gradient (d loss / d its output) has a NaN or Inf. Every later call's is finite, so the NaN
        was born in the backward pass of what ran between this call and the next captured one."""
        return next((c for c in reversed(self.calls) if c.grad_nonfinite), None)

    def update_scales(self, by: Literal["leaf", "module"] = "leaf") -> list[UpdateScale]:
        """Per parameter (``by='module'``: per module path), ``|grad| / |param|``, largest first: those
        with a NaN or Inf in their gradient before all, and all-zero parameters (a ratio of inf) last."""
        if self.grads is None:
            return []
        groups: dict[Path, list[tuple[Leaf, Leaf | None]]] = {}
        for g in self.grads.leaves():
            node = self.variables.root.find(g.path)
            groups.setdefault(g.path if by == "leaf" else g.path[:-1], []).append((g, node.leaf if node else None))
        out = []
        for path, pairs in groups.items():
            gn = sum(g.stats.norm ** 2 for g, _ in pairs if g.stats) ** 0.5
            pn = sum(p.stats.norm ** 2 for _, p in pairs if p is not None and p.stats) ** 0.5
            ratio = gn / pn if pn else (float("inf") if gn else 0.0)
            out.append(UpdateScale(format_path(path), gn, pn, ratio, sum(g.nonfinite for g, _ in pairs)))
        return sorted(out, key=lambda u: (-u.nonfinite, math.isinf(u.ratio), -u.ratio if u.ratio == u.ratio else 0.0))

    def grad_norms(self) -> list[GradNorm]:
        """Each captured call with gradients, in execution order: the norms of its output and of the
        gradient with respect to it (vanishing or exploding gradients read down this list)."""
        out = []
        for c in self.calls:
            if not c.grads:
                continue
            at = {leaf.path for leaf in c.grads}
            act = sum(leaf.stats.norm ** 2 for leaf in c.outputs if leaf.path in at and leaf.stats) ** 0.5
            grad = sum(leaf.stats.norm ** 2 for leaf in c.grads if leaf.stats) ** 0.5
            out.append(GradNorm(c.key, c.order, c.module_type, len(c.path), act, grad, c.grad_nonfinite))
        return out

    # -- rendering ----------------------------------------------------------
    def to_text(self, **kwargs: Any) -> str:
        """Plain-text rendering (the golden oracle of every view)."""
        from inspector.views import display

        return display.text(self, **kwargs)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return safe(
            f"<Inspection {self.kind} {self.module_type}: {_plural(self.variables.count, 'variable')}, "
            f"{_plural(len(self.diffs), 'mutated collection')}, {_plural(len(self.calls), 'captured call')}>"
        )

    def to_html(self, path: Any = None, **options: Any) -> str:
        """Self-contained offline HTML; written to ``path`` when given. Returns the HTML. ``costs=True``
        computes and includes the Costs tab (None, the default: only if already computed; False: never),
        ``costs_order='flops'`` sorts it."""
        from inspector.views import display

        return display.export_html(self, path, **options)

    def widget(self) -> Any:
        """The interactive ipywidgets view of this inspection."""
        from inspector.views import display

        return display.widget(self, weak=False)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Widget view in a live kernel; bounded static HTML and text as fallbacks (a one-line note
        on a process other than 0 of a ``jax.distributed`` job)."""
        from inspector.views import display

        return display.mimebundle(self, include, exclude)

    def __rich__(self) -> Any:
        """The rich tree (``rich.print``); a one-line note on a process other than 0."""
        from inspector.views import display

        return display.rich(self)

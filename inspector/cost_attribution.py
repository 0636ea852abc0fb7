"""Charging each equation of a traced flax call to a module method call (the attribution rule of
:mod:`inspector.costs`): :class:`_Labeller` labels each call's named scope while tracing, and :class:`_Tally`
walks the jaxpr, reading the labels from each equation's name stack, and sums :func:`eqn_cost` per call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from inspector.cost_rules import _Count, _nbytes, eqn_cost
from inspector.names import Path


# -- walking the program ----------------------------------------------------------

_MARK = "\u27e8fi:"  # a label inspector gives each module method call while tracing: "⟨fi:17⟩"


def _marks(stack: str) -> tuple[int, ...]:
    """The call labels in a name stack, outermost first."""
    if _MARK not in stack:
        return ()
    return tuple(int(part[len(_MARK):-1]) for part in stack.split("/") if part.startswith(_MARK))


def _inner_jaxprs(eqn: Any) -> list[Any]:
    found = []
    for value in eqn.params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            jaxpr = getattr(v, "jaxpr", v)  # a ClosedJaxpr's jaxpr
            if hasattr(jaxpr, "eqns"):
                found.append(jaxpr)
    return found


class _Tally:
    """Costs charged per call label (inclusive along the label chain) and per innermost label (own)."""

    def __init__(self) -> None:
        self.inclusive: dict[int, _Count] = {}
        self.own: dict[int | None, _Count] = {}
        self.times: dict[int, float] = {}  # the largest repetition a call's equations ran under
        self.total = _Count()

    def charge(self, marks: tuple[int, ...], count: _Count, times: float) -> None:
        self.total.add(count, times)
        self.own.setdefault(marks[-1] if marks else None, _Count()).add(count, times)
        for m in marks:
            self.inclusive.setdefault(m, _Count()).add(count, times)
            self.times[m] = max(self.times.get(m, 0.0), times)

    def walk(self, jaxpr: Any, outer: str = "", times: float = 1.0) -> None:
        for eqn in jaxpr.eqns:
            here = str(eqn.source_info.name_stack)
            stack = f"{outer}/{here}" if outer and here else outer or here
            name = eqn.primitive.name
            if name == "scan":
                self.walk(eqn.params["jaxpr"].jaxpr, stack, times * eqn.params["length"])
                continue
            if name == "cond":
                self._cond(eqn, stack, times)
                continue
            inner = _inner_jaxprs(eqn)
            if inner:
                for sub in inner:  # while: body and condition once each; calls, remat, custom_*: their program
                    if name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr") \
                            and sub is not inner[0]:
                        continue  # the derivative rules do not run forward
                    self.walk(sub, stack, times)
                continue
            self.charge(_marks(stack), eqn_cost(eqn), times)

    def _cond(self, eqn: Any, stack: str, times: float) -> None:
        best: _Tally | None = None
        for branch in eqn.params["branches"]:
            t = _Tally()
            t.walk(branch.jaxpr, stack, times)
            if best is None or t.total.flops + t.total.transcendentals > best.total.flops + best.total.transcendentals:
                best = t
        if best is None:
            return
        self.total.add(best.total)
        for m, c in best.own.items():
            self.own.setdefault(m, _Count()).add(c)
        for m, c in best.inclusive.items():
            self.inclusive.setdefault(m, _Count()).add(c)
            self.times[m] = max(self.times.get(m, 0.0), best.times.get(m, 0.0))


# -- labelling each module method call while the flax call is traced -------------

@dataclasses.dataclass
class _Seen:
    mark: int
    path: Path
    module_type: str
    method: str
    index: int
    output_bytes: int = 0
    done: int = -1  # the order in which calls returned (that of :attr:`MethodCall.order`)


class _Labeller:
    """An ``nn.intercept_methods`` interceptor: each module method call runs under a named scope of its own
    (``⟨fi:n⟩``) and is recorded with its path, method, call index and output bytes. A lifted transform's
    wrapper call, ``setup``, unbound modules and the structure-only pass of ``nn.scan`` are not labelled
    (their equations are charged to the enclosing call)."""

    def __init__(self) -> None:
        self.seen: dict[int, _Seen] = {}
        self.counts: dict[tuple[Path, str], int] = {}
        self.returned = 0

    def __call__(self, next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        import jax

        from inspector.capture import recorded_call

        module, name = context.module, context.method_name
        if not recorded_call(module, name):
            return next_fun(*args, **kwargs)
        path = tuple(module.path)
        index = self.counts.get((path, name), 0)
        self.counts[(path, name)] = index + 1
        mark = len(self.seen)
        seen = self.seen[mark] = _Seen(mark, path, type(module).__name__, name, index)
        with jax.named_scope(f"{_MARK}{mark}\u27e9"):
            y = next_fun(*args, **kwargs)
        seen.done = self.returned
        self.returned += 1
        seen.output_bytes = sum(_nbytes(getattr(leaf, "aval", leaf)) for leaf in jax.tree.leaves(y)
                                if hasattr(leaf, "shape") and hasattr(leaf, "dtype"))
        return y

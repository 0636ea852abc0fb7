"""What ran before a failure: ``fi.last_failure()`` after an inspector entry point raised.

Nothing is recorded while calls succeed. When a call of ``fi.apply``/``init``/``init_with_output``, ``fi.inspect_*``,
``fi.inspect``, ``fi.inspect_grad`` or ``fi.Inspector`` raises, its exception handler (:func:`capture`) traces the
same flax call once more, abstractly (:func:`jax.eval_shape`, nothing compiled or run) under
:func:`flax.linen.intercept_methods`, recording every module method call: the calls that completed, with their
inputs' and outputs' shapes and dtypes in the order they started, and the calls the error passed through (the
failing call, innermost first, with its inputs' shapes). For a variables mismatch (flax's
``ScopeParamShapeError``, ``ScopeParamNotFoundError``, ``ScopeVariableNotFoundError``, ``ScopeCollectionNotFound``)
of an ``apply``, the variables ``init`` would create (``jax.eval_shape`` of flax's ``init`` on the same inputs) are
set beside the ones given. The exception itself is untouched (type, message, notes, traceback); the capture never
raises, and holds only shapes and names (no arrays). Your model's Python code runs once more in the re-trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from inspector.names import format_key, format_path, safe

_MISMATCH = ("ScopeParamShapeError", "ScopeParamNotFoundError", "ScopeVariableNotFoundError", "ScopeCollectionNotFound")


@dataclasses.dataclass(frozen=True)
class CallShape:
    """One module method call of the re-trace: ``inputs``/``outputs`` as ``float32[4,8]`` words
    (``outputs`` is None for a call that did not complete)."""

    order: int
    path: tuple[str, ...]
    module_type: str
    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """``'Block_0/Dense_0:__call__'``."""
        return format_key(self.path, self.method)

    def line(self, with_outputs: bool = True) -> str:
        text = f"{self.key} ({self.module_type})  in: {', '.join(self.inputs) or '-'}"
        if with_outputs and self.outputs is not None:
            text += f"  out: {', '.join(self.outputs) or '-'}"
        return text


@dataclasses.dataclass(frozen=True)
class VariableRow:
    """One variable, as ``init`` would create it (``expected``) and as it was given; ``status`` is ``'same'``,
    ``'differs'`` (shape or dtype), ``'missing'`` (not given) or ``'unexpected'`` (given, not created)."""

    path: str
    expected: str | None
    given: str | None

    @property
    def status(self) -> str:
        if self.given is None:
            return "missing"
        if self.expected is None:
            return "unexpected"
        return "same" if self.expected == self.given else "differs"


@dataclasses.dataclass
class Failure:
    """A partial inspection of a call that raised (``fi.last_failure()``); ``print`` it for the text form.

    ``completed``: the calls that completed, in the order they started; ``failing``: the calls the error
    passed through, innermost (where it was raised) first; ``variables``: expected vs given, for a variables
    mismatch of an ``apply`` (else None); ``notes``: what could not be found, and why."""

    kind: str
    module_type: str
    error_type: str
    message: str
    completed: list[CallShape] = dataclasses.field(default_factory=list)
    failing: list[CallShape] = dataclasses.field(default_factory=list)
    variables: list[VariableRow] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def failing_call(self) -> CallShape | None:
        """The innermost call the error was raised in (None if it was raised outside every module method)."""
        return self.failing[0] if self.failing else None

    def to_text(self) -> str:
        lines = [f"Failure: {self.kind} {self.module_type} raised {self.error_type}"]
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        if first:
            lines.append(f"  {first}")
        lines.append(f"Completed calls, in execution order ({len(self.completed)}):")
        lines += [f"  {i + 1}. {c.line()}" for i, c in enumerate(self.completed)] or ["  (none)"]
        if self.failing:
            lines.append("Failing call:")
            lines.append(f"  {self.failing[0].line(False)}")
            lines += [f"  inside {c.line(False)}" for c in self.failing[1:]]
        else:
            lines.append("Failing call: none (raised outside every module method)")
        if self.variables is not None:
            rows = [r for r in self.variables if r.status != "same"]
            lines.append(f"Variables, expected (as init creates them) vs given: {len(rows)} of "
                         f"{len(self.variables)} differ")
            width = max([len(r.path) for r in self.variables] + [4])
            ew = max([len(r.expected or "-") for r in self.variables] + [8])
            gw = max([len(r.given or "-") for r in self.variables] + [5])
            lines.append(f"  {'path':<{width}}  {'expected':<{ew}}  {'given':<{gw}}".rstrip())
            for r in self.variables:
                mark = "" if r.status == "same" else f"  {r.status}"
                lines.append(f"  {r.path:<{width}}  {r.expected or '-':<{ew}}  {r.given or '-':<{gw}}{mark}".rstrip())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(safe(line) for line in lines)

    def __str__(self) -> str:
        return self.to_text()

    def __rich__(self) -> Any:
        """``rich.print(failure)``: the completed calls as a table, the variables side by side
        (:mod:`inspector.views.failures`)."""
        from inspector.views.failures import render_rich

        return render_rich(self)

    def _repr_html_(self) -> str:
        """A notebook's display: the same as :meth:`__rich__`, as static HTML."""
        from inspector.views.failures import render_html

        return render_html(self)

    def __repr__(self) -> str:
        return safe(f"<Failure {self.kind} {self.module_type}: {self.error_type}, {len(self.completed)} calls "
                    f"completed, failing in {self.failing_call.key if self.failing_call else 'none'}>")


_last: Failure | None = None


def last_failure() -> Failure | None:
    """The partial inspection of the last inspector call that raised in this process (None if none has)."""
    return _last


def forget() -> None:
    """Forgets the last failure."""
    global _last
    _last = None


# -- recording ---------------------------------------------------------------------------
def _words(x: Any) -> tuple[str, ...]:
    """``('float32[4,8]', ...)`` for the array leaves of ``x``; other leaves by type (a value may be huge)."""
    out = []
    for leaf in jax.tree.leaves(x):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is not None and dtype is not None:
            out.append(f"{dtype}[{','.join(map(str, shape))}]")
        elif isinstance(leaf, (bool, int, float)):
            out.append(repr(leaf))
        else:
            out.append(type(leaf).__name__)
    return tuple(out[:16]) + ((f"... {len(out) - 16} more",) if len(out) > 16 else ())


class _FailureCalls:
    """The interceptor of the re-trace: every call of a bound module method (``setup`` and lifted wrappers
    left out), and the stack the first error passed through."""

    def __init__(self) -> None:
        self.started: list[CallShape] = []
        self.done: dict[int, CallShape] = {}
        self.stack: list[CallShape] = []
        self.failing: list[CallShape] | None = None

    def __call__(self, next_fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any) -> Any:
        from inspector._compat import shape_pass
        from inspector.capture import user_call

        module, name = context.module, context.method_name
        if not user_call(module, name):
            return next_fun(*args, **kwargs)
        structural = shape_pass()  # nn.scan tracing its body for its structure: a failing call, never a completed one
        call = CallShape(len(self.started), tuple(module.path), type(module).__name__, name, _words((args, kwargs)))
        if not structural:
            self.started.append(call)
        self.stack.append(call)
        try:
            y = next_fun(*args, **kwargs)
        except BaseException:
            if self.failing is None:
                self.failing = list(reversed(self.stack))
            raise
        finally:
            self.stack.pop()
        if not structural:
            self.done[call.order] = dataclasses.replace(call, outputs=_words(y))
        return y


def _abstract(x: Any) -> Any:
    from inspector.engine.signature import is_array

    if is_array(x) or isinstance(x, jax.core.Tracer):
        struct: Any = jax.ShapeDtypeStruct  # untyped in jax 0.10.2: called through Any for mypy --strict
        return struct(x.shape, x.dtype)
    return x


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], Any, list[int], list[Any]]:
    from inspector.engine.signature import is_array

    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    at = [i for i, leaf in enumerate(leaves) if is_array(leaf) or isinstance(leaf, jax.core.Tracer)]
    return leaves, treedef, at, [_abstract(leaves[i]) for i in at]


def _rebuild(leaves: list[Any], treedef: Any, at: list[int], dyn: tuple[Any, ...]) -> Any:
    """``(args, kwargs)`` with the arrays at ``at`` replaced by ``dyn``."""
    full = list(leaves)
    for i, a in zip(at, dyn):
        full[i] = a
    return jax.tree.unflatten(treedef, full)


def capture(runner: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: BaseException) -> None:
    """Called in the exception handler of an entry point whose call raised ``error``: records the partial
    inspection :func:`last_failure` returns. Never raises; ``error`` is left as it is."""
    global _last
    if type(error).__name__ == "InspectUnderTransformError":
        return
    try:
        module = getattr(runner, "module", None)
        failure = Failure(getattr(runner, "kind", "?"), type(module).__name__, type(error).__name__, str(error))
        try:
            _retrace(runner, args, kwargs, failure)
        except Exception as e:  # noqa: BLE001 - what could not be found is said, never raised
            failure.notes.append(f"the calls could not be traced again ({type(e).__name__}: {e})")
        if type(error).__name__ in _MISMATCH and failure.kind == "apply":
            try:
                failure.variables = _variables(runner, args, kwargs)
            except Exception as e:  # noqa: BLE001
                failure.notes.append(f"the expected variables could not be found ({type(e).__name__}: {e})")
        _last = failure
    except Exception:  # noqa: BLE001 - capturing a failure never hides or replaces the user's error
        return


def _retrace(runner: Any, args: tuple[Any, ...], kwargs: dict[str, Any], failure: Failure) -> None:
    import flax.linen as nn

    from inspector.inspection.grad import GradRunner
    from inspector.engine.recorder import Recorder
    from inspector.engine.runner import Runner, fresh_containers

    if not getattr(runner, "intercepts", False) or getattr(runner, "fn", None) is None:
        failure.notes.append("module calls are recorded for flax.linen runs only")
        return
    invoke = Runner.invoke if isinstance(runner, GradRunner) else type(runner).invoke  # the forward pass
    leaves, treedef, at, dyn = _split(*fresh_containers((args, kwargs)))
    calls = _FailureCalls()

    def run(*dyn: Any) -> Any:
        a, k = _rebuild(leaves, treedef, at, dyn)
        recorder = Recorder()
        recorder.patches = runner.patches
        with nn.intercept_methods(calls):
            return invoke(runner, a, k, runner.capture, recorder)

    raised = None
    try:
        jax.eval_shape(run, *dyn)
    except Exception as e:  # noqa: BLE001 - the error is expected: it is the one being described
        raised = e
    failure.completed = [calls.done[i] for i in sorted(calls.done)]
    failure.failing = calls.failing or []
    if raised is None:
        failure.notes.append("tracing the model again raised nothing: the error came after the model's calls "
                             "(compiling, running, or inspector's own checks)")
    elif type(raised).__name__ != failure.error_type:
        failure.notes.append(f"tracing the model again raised {type(raised).__name__}, not {failure.error_type}")


def _shape_word(x: Any) -> str | None:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return None if x is None else type(x).__name__
    return f"{dtype}[{','.join(map(str, shape))}]"


def _paths(tree: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        if parts[:1] == ("intermediates",):
            continue
        out[format_path(parts)] = _shape_word(leaf)
    return out


def _variables(runner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[VariableRow] | None:
    """Expected (``jax.eval_shape`` of flax's ``init`` of the same call) vs given variables."""
    from inspector.engine.runner import FLAX_ENTRIES, fresh_containers

    if not args or not isinstance(args[0], Mapping) or getattr(runner, "fn", None) is None:
        return None
    given, rest = args[0], args[1:]
    kwargs = {k: v for k, v in kwargs.items() if k != "rngs"}
    leaves, treedef, at, dyn = _split(*fresh_containers((rest, kwargs)))
    init = FLAX_ENTRIES["init"](runner.fn, runner.module)

    def create(*dyn: Any) -> Any:
        a, k = _rebuild(leaves, treedef, at, dyn)
        return init(jax.random.key(0), *a, **k)

    expected = _paths(jax.eval_shape(create, *dyn))
    got = _paths(given)
    rows = [VariableRow(p, e, got.get(p)) for p, e in expected.items()]
    rows += [VariableRow(p, None, g) for p, g in got.items() if p not in expected]
    return rows


__all__ = ["Failure", "CallShape", "VariableRow", "last_failure", "capture", "forget"]

"""What an inspection adds to one traced flax call: the one typed object a :class:`~inspector.engine.runner.Runner`
is given (``hooks=``), and the two small pieces the runner makes for each trace from it.

In the order the runner uses them, inside its own trace of flax:

1. :meth:`TraceHooks.at_capture` (only where :attr:`TraceHooks.ties_captures`): each value flax is about
   to capture, as the wrapped method returns it. :class:`CaptureAsker` asks the capture filter once per
   call for this, and hands flax the same answer.
2. :meth:`TraceHooks.after`: flax's result, once flax returned, with the :class:`~inspector.engine.recorder.Recorder`
   that saw the call; it returns ``(result to hand back, arrays computed alongside, what only the trace knew)``.

Both are given the trace's :class:`TiedSummaries`: what ``at_capture`` traced where a value was produced, for
``after`` to use instead of tracing it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from inspector._compat import _current_trace, capture_filter_in_effect

if TYPE_CHECKING:
    from inspector.engine.recorder import Recorder


class TiedSummaries:
    """Summary fields traced where a value was produced, looked up by the value itself (identity).

    One per trace: the runner makes it, :meth:`TraceHooks.at_capture` fills it, :meth:`TraceHooks.after`
    reads it. It holds the traced values it describes, so an id is never reused while it lives."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, Any]] = {}

    def get(self, value: Any) -> Any:
        """The fields traced for ``value`` (this very object), or None."""
        hit = self._by_id.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    def add(self, value: Any, fields: Any) -> None:
        self._by_id[id(value)] = (value, fields)


class TraceHooks(Protocol):
    """What an inspection adds to one traced flax call; the runner calls these, in this order."""

    ties_captures: bool
    """Whether :meth:`at_capture` is applied to captured values (False: summaries are traced after the call)."""

    def at_capture(self, value: Any, tied: TiedSummaries) -> Any:
        """Where flax is about to capture ``value`` in the runner's own trace: return it, tied to what was
        traced for it (noted in ``tied``), or as it is."""

    def after(self, inputs: tuple[tuple[Any, ...], dict[str, Any]], result: Any, recorder: Recorder,
              tied: TiedSummaries) -> tuple[Any, Any, Any]:
        """``(result to hand back, arrays computed alongside, what only the trace knew)`` for flax's ``result``
        of ``inputs``; the last is kept as :attr:`~inspector.engine.results.SignatureRecord.recorded`."""


class CaptureAsker:
    """The capture filter as flax is to be given it when :meth:`TraceHooks.at_capture` applies.

    flax asks the filter right after a wrapped method returns; :meth:`on_return` (called by the
    :class:`~inspector.engine.recorder.Recorder` as the method returns) asks it first, to apply ``at_capture``
    to a value about to be captured, and :meth:`ask` then hands flax that answer, so a user's filter is still
    asked once per call. Only values of the runner's own trace (``top``) are touched: those of an inner trace
    (``nn.scan``, ``nn.remat``) are left alone."""

    def __init__(self, filter_fn: Callable[[Any, str], bool], at_capture: Callable[[Any], Any], top: Any) -> None:
        self.filter_fn, self.at_capture, self.top = filter_fn, at_capture, top
        self._decided: tuple[Any, str, bool] | None = None  # the answer for the call returning now
        self.given: Callable[[Any, str], bool] = self.ask  # bound once: flax holds this very object

    def ask(self, module: Any, method_name: str) -> bool:
        """The filter flax is given (as :attr:`given`)."""
        decided = self._decided
        if decided is not None and decided[0] is module and decided[1] == method_name:
            self._decided = None
            return decided[2]
        return self.filter_fn(module, method_name)

    def on_return(self, module: Any, name: str, y: Any) -> Any:
        """``y``, or ``at_capture(y)`` if flax is about to capture it in the runner's own trace."""
        if _current_trace() is not self.top or capture_filter_in_effect() is not self.given:
            return y
        captured = self.filter_fn(module, name)
        self._decided = (module, name, captured)
        return self.at_capture(y) if captured else y

"""A transient status line for a slow first call (tracing and compiling a big model).

A call that traces starts a :class:`Status` at its first phase (``'tracing'``); a timer thread shows
it only if the call is still running :data:`SHOW_AFTER_S` seconds later, so a fast call shows
nothing (no flicker). Once shown, each later phase (``'compiling'``, ``'running'``) replaces the
line, and the end of the call removes it. Where it shows:

* in a notebook (an IPython kernel), as a display whose content is replaced in place
  (``display(..., display_id=True)``, then ``update``) and emptied at the end;
* in a terminal (``stderr`` is a TTY), as one line on ``stderr`` rewritten with ``\\r`` and
  erased at the end;
* elsewhere (a script whose output is redirected, a test run), nowhere: no timer is started.

Calls that hit a compiled program never trace, so they start nothing. A call given its own
``on_phase`` (``run.show``'s widget) reports its phases there instead.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from html import escape
from typing import Any, Literal

SHOW_AFTER_S = 1.0
"""How long a call runs before its status is shown."""

Target = Literal["notebook", "terminal"]
_STARTS = frozenset(("tracing", "compiling"))  # phases only a call that traces and compiles reaches


def _target() -> Target | None:
    """Where a status line can show: ``'notebook'`` in an IPython kernel, ``'terminal'`` if
    ``stderr`` is a TTY, else None."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return "notebook"
    try:
        return "terminal" if sys.stderr is not None and sys.stderr.isatty() else None
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return None


def label(phase: str, what: str) -> str:
    """The status text for ``phase`` of a call of ``what`` (a model's class name)."""
    if phase == "running":
        import jax

        return f"inspector: running {what} on {jax.devices()[0].platform}..."
    return f"inspector: {phase} {what}..."


class Status:
    """The status line of one call; :meth:`phase` as the call reaches each phase, :meth:`close` at its
    end (from any thread: the line is drawn by a timer thread, under a lock)."""

    def __init__(self, what: str, target: Target | None) -> None:
        self.what, self.target = what, target
        self.text = ""
        self.shown = self.closed = False
        self._timer: threading.Timer | None = None
        self._handle: Any = None  # the notebook display
        self._width = 0  # of the terminal line drawn
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        """The call reached phase ``name``: the first of ``'tracing'``/``'compiling'`` starts the timer;
        a shown line shows the new phase."""
        if self.target is None or name == "done":
            return
        with self._lock:
            if self.closed:
                return
            self.text = label(name, self.what)
            if self.shown:
                self._draw()
            elif self._timer is None and name in _STARTS:
                # in the caller's context: a kernel sends the display to the cell that made the call
                self._timer = threading.Timer(SHOW_AFTER_S, contextvars.copy_context().run, (self._show,))
                self._timer.daemon = True
                self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.shown = True
            self._draw()

    def _draw(self) -> None:
        try:
            if self.target == "notebook":
                from IPython.display import display

                data = {"text/plain": self.text, "text/html": f"<pre style='margin:0'>{escape(self.text)}</pre>"}
                if self._handle is None:
                    self._handle = display(data, raw=True, display_id=True)
                else:
                    self._handle.update(data, raw=True)
            else:
                line = self.text.ljust(self._width)
                self._width = len(self.text)
                sys.stderr.write("\r" + line)
                sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a status line must never break the call
            pass

    def close(self) -> None:
        """The call ended: the timer is cancelled, and a shown line removed (an emptied display in a
        notebook, an erased line in a terminal). Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
            if not self.shown:
                return
            try:
                if self.target == "notebook" and self._handle is not None:
                    self._handle.update({"text/plain": "", "text/html": ""}, raw=True)
                elif self.target == "terminal":
                    sys.stderr.write("\r" + " " * self._width + "\r")
                    sys.stderr.flush()
            except Exception:  # noqa: BLE001 - as in _draw
                pass


def start(what: str) -> Status:
    """A :class:`Status` for a call of ``what``; one that shows nothing where no line can show."""
    return Status(what, _target())

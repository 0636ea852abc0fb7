"""inspector's own frames hidden from the tracebacks of errors raised through its entry points.

An error raised by a user's model inside ``fi.apply(...)(...)`` passes through inspector's
runner (the jitted call, the interceptor around every module method); as jax does for its own
frames, the entry points remove the frames of files inside the ``inspector`` package from the
exception's traceback (and from those of the exceptions it chains) before it reaches the user.
The exception itself (type, message, notes) is unchanged. Entry points either wrap their body in
``try: ... except Exception as e: hide_frames(e); raise`` (zero cost when nothing is raised) or are
decorated with :func:`entry_point`. A bare ``raise`` adds no frame of its own, so no inspector frame
is left. ``INSPECTOR_TRACEBACK_FILTERING=off`` (read at each error) keeps every frame.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable
from typing import Any, TypeVar

ENV = "INSPECTOR_TRACEBACK_FILTERING"
"""The environment variable that turns the filtering off: ``off`` (or ``0``, ``false``, ``no``)."""

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_inside_cache: dict[str, bool] = {}
F = TypeVar("F", bound=Callable[..., Any])


def filtering() -> bool:
    """Whether inspector's frames are removed from tracebacks (``INSPECTOR_TRACEBACK_FILTERING``)."""
    return os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _inside(filename: str) -> bool:
    """True for a file of the ``inspector`` package."""
    got = _inside_cache.get(filename)
    if got is None:
        got = _inside_cache[filename] = (not filename.startswith("<")
                                         and os.path.abspath(filename).startswith(_PACKAGE))
    return got


def _filtered(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the entries of inspector's frames (``tb`` itself if it has none)."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    if not any(_inside(t.tb_frame.f_code.co_filename) for t in entries):
        return entries[0] if entries else None
    out = None
    for t in reversed(entries):
        if not _inside(t.tb_frame.f_code.co_filename):
            out = types.TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


def hide_frames(error: BaseException) -> None:
    """Removes inspector's frames from the traceback of ``error`` and of the exceptions it chains
    (``__cause__``, ``__context__``), unless ``INSPECTOR_TRACEBACK_FILTERING=off``. jax's own
    unfiltered copy (``UnfilteredStackTrace``, ``JAX_TRACEBACK_FILTERING=remove_frames``) is left as
    it is."""
    if not filtering():
        return
    todo: list[BaseException | None] = [error]
    seen: set[int] = set()
    while todo and len(seen) < 64:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ == "UnfilteredStackTrace":
            continue
        tb = e.__traceback__
        new = _filtered(tb)
        if new is not tb:
            e.__traceback__ = new
        todo += [e.__cause__, e.__context__]


def entry_point(fn: F) -> F:
    """``fn``, hiding inspector's frames from the traceback of an exception it raises
    (:func:`hide_frames`); the exception is raised unchanged otherwise."""

    @functools.wraps(fn)
    def entry(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            hide_frames(e)
            raise

    return entry  # type: ignore[return-value]

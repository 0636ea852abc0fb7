"""The public entry points: drop-in flax wrappers and their ``inspect_*`` forms."""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
from flax.core.scope import CollectionFilter

from inspector._tracebacks import entry_point
from inspector.capture import CaptureFilter
from inspector.compare import compare
from inspector.engine.runner import DEFAULT_CACHE_SIZE, Runner, method_fn
from inspector.engine.signature import Unkeyable, static_key
from inspector.inspection.pipeline import InspectRun, InspectUnderTransformError, default_capture
from inspector.inspection.plan import Keep
from inspector.model import Comparison, Inspection, Kind

__all__ = [
    "apply", "init", "init_with_output", "inspect_apply", "inspect_init", "inspect_init_with_output", "intervene",
    "Inspector", "inspect", "InspectRun", "InspectUnderTransformError", "shared_run", "forget_shared_runs",
]

_INIT_MUTABLE = nn.DenyList("intermediates")


_RECENT_RUNS = 16
_runs: weakref.WeakValueDictionary[Any, Any] = weakref.WeakValueDictionary()
_recent_runs: OrderedDict[Any, Any] = OrderedDict()  # also kept for a run nobody holds: ``fi.inspect_apply(...)(v, x)``


def config_key(*config: Any) -> Any:
    """A key equal for equal configurations of a run: modules by class and value (flax modules are
    frozen dataclasses), functions and classes by identity, containers by value. None if some part
    cannot be keyed by value (a module holding a list or an array)."""
    try:
        return static_key(config)
    except Unkeyable:
        return None


def flax_flags() -> tuple[tuple[str, Any], ...]:
    """flax's config flags, ``((name, value), ...)``, read through ``flax.config``'s public attributes (one
    property per flag, which ``flax.configurations`` defines on ``Config`` for each flag it declares)."""
    config = flax.config
    return tuple((name, getattr(config, name)) for name, attr in vars(type(config)).items()
                 if isinstance(attr, property))


def shared_run(make: Callable[[], Any], *config: Any) -> Any:
    """The run ``make()`` builds, or the live one an equal configuration built earlier, with its
    compiled programs: re-running a notebook cell that builds ``Net()`` anew compiles nothing."""
    key = config_key(*config, flax_flags())  # a flag read while tracing (adopted names)
    if key is None:
        return make()
    try:
        run = _runs.get(key)
    except Exception:  # noqa: BLE001 - a user's __eq__ that refuses: nothing is shared
        return make()
    if run is None:
        run = _runs[key] = make()
    _recent_runs[key] = run
    _recent_runs.move_to_end(key)
    if len(_recent_runs) > _RECENT_RUNS:
        _recent_runs.popitem(last=False)
    return run


def forget_shared_runs() -> None:
    """Forgets every run :func:`shared_run` and :func:`inspect` would reuse: later calls build anew."""
    _runs.clear()
    _recent_runs.clear()
    _inspectors.clear()


def _wrap(kind: Kind, fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter, capture: CaptureFilter,
          cache_size: int) -> Runner:
    def make() -> Runner:
        runner = Runner(kind, fn, module, mutable, capture, cache_size=cache_size)
        functools.update_wrapper(runner, fn, updated=())
        return runner

    return shared_run(make, Runner, kind, fn, module, mutable, capture, cache_size)


def apply(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = False,
          capture_intermediates: CaptureFilter = False, *,
          cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.apply``, jitted: ``apply(fn, module, ...)(variables, *args, rngs=None, **kw)``
    returns exactly what flax returns. The returned runner counts ``traces`` and keeps at most
    ``cache_size`` compiled signatures (least recently used dropped first).

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections the call may change, as in flax (``False``, a name, a list, a filter).
      capture_intermediates: which method outputs flax captures into ``intermediates``, as in flax
        (``True``, a function of ``(module, method_name)``, or a :mod:`inspector.capture` filter).
      cache_size: how many compiled input signatures the runner keeps (at least 1).

    Returns:
      A :class:`~inspector.engine.runner.Runner`, called as flax's returned function is; an equal
      configuration made earlier returns the same runner, with its compiled programs.
    """
    return _wrap("apply", fn, module, mutable, capture_intermediates, cache_size)


def init(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
         capture_intermediates: CaptureFilter = False, *,
         cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.init``, jitted: ``init(fn, module)(rngs, *args, **kw)`` returns the variables.

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections to create, as in flax (all but ``intermediates`` by default).
      capture_intermediates: which method outputs flax captures, as in flax.
      cache_size: how many compiled input signatures the runner keeps.

    Returns:
      A :class:`~inspector.engine.runner.Runner` returning exactly what ``flax.linen.init`` returns.
    """
    return _wrap("init", fn, module, mutable, capture_intermediates, cache_size)


def init_with_output(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                     capture_intermediates: CaptureFilter = False, *,
                     cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.init_with_output``, jitted: calls return ``(y, variables)``.

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections to create, as in flax (all but ``intermediates`` by default).
      capture_intermediates: which method outputs flax captures, as in flax.
      cache_size: how many compiled input signatures the runner keeps.

    Returns:
      A :class:`~inspector.engine.runner.Runner` returning exactly what ``flax.linen.init_with_output`` returns.
    """
    return _wrap("init_with_output", fn, module, mutable, capture_intermediates, cache_size)


def inspect_apply(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = False,
                  capture_intermediates: CaptureFilter | None = None, keep: Keep = "arrays",
                  patches: dict[str, Any] | None = None) -> InspectRun:
    """Like :func:`apply`, but calls return an :class:`Inspection`.

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections the call may change, as in flax; their changes are the inspection's diffs.
      capture_intermediates: which method outputs to capture; None is :data:`capture.calls` (every
        ``__call__``).
      keep: ``'arrays'`` keeps every captured array on its device (fetched when read); ``'stats'``
        returns only their statistics.
      patches: ``'path:method'`` (or ``'path:method[i]'``, the i-th call) to a function of the method's
        output, or a value to put in its place (see :func:`intervene`).

    Returns:
      An :class:`InspectRun`, called as flax's returned function is; each call returns an
      :class:`Inspection`.
    """
    capture = default_capture(capture_intermediates)
    return shared_run(lambda: InspectRun("apply", fn, module, mutable, capture, keep, patches),
                      InspectRun, "apply", fn, module, mutable, capture, keep, patches)


def intervene(fn: Callable[..., Any], module: nn.Module, patches: dict[str, Any], mutable: CollectionFilter = False,
              capture_intermediates: CaptureFilter | None = None, keep: Keep = "arrays") -> Callable[..., Comparison]:
    """Activation patching: ``intervene(fn, module, {'blocks_3/mlp:__call__': fi.patches.zero})(variables, x)``
    runs clean and patched and returns their :class:`Comparison` (output first).

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      patches: as :func:`inspect_apply` takes them.
      mutable: the collections the call may change, as in flax.
      capture_intermediates: which method outputs to capture (None: every ``__call__``).
      keep: as :func:`inspect_apply` takes it.

    Returns:
      A function of flax's call arguments returning the :class:`Comparison` of the clean and the
      patched run; its ``clean`` and ``patched`` attributes are the two :class:`InspectRun` objects.
    """
    clean = inspect_apply(fn, module, mutable, capture_intermediates, keep)
    patched = inspect_apply(fn, module, mutable, capture_intermediates, keep, patches)

    @entry_point
    def run(*args: Any, **kwargs: Any) -> Comparison:
        return compare(clean(*args, **kwargs), patched(*args, **kwargs), labels=("clean", "patched"))

    run.clean, run.patched = clean, patched  # type: ignore[attr-defined]
    return run


def inspect_init(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                 capture_intermediates: CaptureFilter = False, keep: Keep = "arrays") -> InspectRun:
    """Like :func:`init`, but calls return an :class:`Inspection` of the created variables.

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections to create, as in flax.
      capture_intermediates: which method outputs to capture (none by default).
      keep: as :func:`inspect_apply` takes it.

    Returns:
      An :class:`InspectRun` called as ``init``'s function is (``run(rngs, *args, **kw)``).
    """
    return shared_run(lambda: InspectRun("init", fn, module, mutable, capture_intermediates, keep),
                      InspectRun, "init", fn, module, mutable, capture_intermediates, keep)


def inspect_init_with_output(fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                             capture_intermediates: CaptureFilter | None = None,
                             keep: Keep = "arrays") -> InspectRun:
    """Like :func:`init_with_output`, but calls return an :class:`Inspection`.

    Args:
      fn: the function flax applies, ``fn(bound_module, *args, **kwargs)`` (``lambda m, x: m(x)``).
      module: the linen module to bind.
      mutable: the collections to create, as in flax.
      capture_intermediates: which method outputs to capture (None: every ``__call__``).
      keep: as :func:`inspect_apply` takes it.

    Returns:
      An :class:`InspectRun` called as ``init_with_output``'s function is.
    """
    capture = default_capture(capture_intermediates)
    return shared_run(lambda: InspectRun("init_with_output", fn, module, mutable, capture, keep),
                      InspectRun, "init_with_output", fn, module, mutable, capture, keep)


def _key(x: Any) -> Any:
    if isinstance(x, list):
        return ("list", tuple(x))
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


class Inspector:
    """``Module.apply``/``init``/``init_with_output`` for one module, jitted and cached
    per ``(method, mutable, capture)``; ``inspect`` returns an :class:`Inspection`.

    Args:
      module: the linen module.
      max_cached: how many runs (one per method, mutable, capture and keep) it keeps.
    """

    def __init__(self, module: nn.Module, max_cached: int = 32):
        self.module = module
        self._runs: OrderedDict[Any, Any] = OrderedDict()
        self._max = max_cached

    def _get(self, factory, kind, method, mutable, capture, keep=None):
        key = (kind, _key(method), _key(mutable), _key(capture), keep)
        run = self._runs.get(key)
        if run is None:
            fn = method_fn(self.module, method)
            args = (fn, self.module, mutable, capture) + ((keep,) if keep else ())
            run = self._runs[key] = factory(*args)
            if len(self._runs) > self._max:
                self._runs.popitem(last=False)
        self._runs.move_to_end(key)
        return run

    @entry_point
    def apply(self, variables: Any, *args: Any, rngs: Any = None, method: str | Callable[..., Any] | None = None,
              mutable: CollectionFilter = False, capture_intermediates: CaptureFilter = False,
              **kwargs: Any) -> Any:
        run = self._get(apply, "apply", method, mutable, capture_intermediates)
        return run(variables, *args, rngs=rngs, **kwargs)

    @entry_point
    def init(self, rngs: Any, *args: Any, method: str | Callable[..., Any] | None = None,
             mutable: CollectionFilter = _INIT_MUTABLE, capture_intermediates: CaptureFilter = False,
             **kwargs: Any) -> Any:
        return self._get(init, "init", method, mutable, capture_intermediates)(rngs, *args, **kwargs)

    @entry_point
    def init_with_output(self, rngs: Any, *args: Any, method: str | Callable[..., Any] | None = None,
                         mutable: CollectionFilter = _INIT_MUTABLE, capture_intermediates: CaptureFilter = False,
                         **kwargs: Any) -> Any:
        run = self._get(init_with_output, "init_with_output", method, mutable, capture_intermediates)
        return run(rngs, *args, **kwargs)

    @entry_point
    def inspect(self, variables: Any, *args: Any, rngs: Any = None, method: str | Callable[..., Any] | None = None,
                mutable: CollectionFilter = False, capture_intermediates: CaptureFilter | None = None,
                keep: Keep = "arrays", **kwargs: Any) -> Inspection:
        """``module.apply(variables, *args, **kwargs)`` (of ``method``) as an :class:`Inspection`.

        Args:
          variables: the module's variables.
          *args: the method's positional arguments.
          rngs: as ``Module.apply`` takes them.
          method: the method to inspect (a name or a function; None: ``__call__``).
          mutable: the collections the call may change, as in flax.
          capture_intermediates: which method outputs to capture (None: every ``__call__``).
          keep: as :func:`inspect_apply` takes it.
          **kwargs: the method's keyword arguments.

        Returns:
          The :class:`Inspection` of the call.
        """
        run = self._get(inspect_apply, "inspect", method, mutable,
                        default_capture(capture_intermediates), keep)
        return run(variables, *args, rngs=rngs, **kwargs)


_inspectors: OrderedDict[Any, Inspector] = OrderedDict()


@entry_point
def inspect(module: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> Inspection:
    """One-shot ``module.apply(variables, *args, **kwargs)`` as an :class:`Inspection`.
    Repeated calls on the same module, or on an equal one (same class and fields), reuse its
    compiled runs.

    Args:
      module: the linen module.
      variables: its variables (``{'params': ...}``), as ``Module.apply`` takes them.
      *args: the method's positional arguments.
      **kwargs: the method's keyword arguments, and ``rngs``, ``method``, ``mutable``,
        ``capture_intermediates`` and ``keep`` as :meth:`Inspector.inspect` takes them.

    Returns:
      The :class:`Inspection` of the call.
    """
    key = config_key(module)
    if key is None:
        key = ("id", id(module))
    ins = _inspectors.get(key)
    if ins is None or (key[0] == "id" and ins.module is not module):
        ins = _inspectors[key] = Inspector(module)
        if len(_inspectors) > 16:
            _inspectors.popitem(last=False)
    _inspectors.move_to_end(key)
    return ins.inspect(variables, *args, **kwargs)

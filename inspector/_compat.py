"""Every place inspector relies on how jax or flax work inside: one door, one test each.

Each shim names the versions it was written against (jax 0.10.2, flax 0.12.8, the minimums
in ``pyproject.toml``) and the public alternative where one exists. A shim whose internal has
moved does not fail silently and does not break the user's call: it warns once
(:class:`CompatWarning`, naming what is lost) and degrades to what inspector can still do.
``tests/test_compat.py`` holds each shim against the installed versions.

Nothing here imports jax or flax at import time: flax's modules are imported by the shims that
read them (``import inspector`` must not load ``flax.nnx``; filters stay importable without flax).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import flax.linen as nn


class CompatWarning(RuntimeWarning):
    """A jax/flax internal that inspector reads has changed; the warning says what is lost."""


_warned: set[str] = set()


def warn_once(shim: str, message: str) -> None:
    """Warns ``message`` the first time ``shim`` degrades in this process."""
    if shim in _warned:
        return
    _warned.add(shim)
    warnings.warn(f"inspector ({shim}): {message}", CompatWarning, stacklevel=3)


# -- jax: the structure-only pass of a lifted transform -----------------------------------
def _current_trace() -> Any:
    """The innermost active jax trace. ``jax.extend.core.find_top_trace`` (jax 0.10.2) returns it;
    ``jax._src.core.trace_ctx.trace`` is the same object, read only if the former is gone."""
    try:
        from jax.extend.core import find_top_trace
    except ImportError:
        from jax._src import core  # internal: the innermost active trace

        return core.trace_ctx.trace
    return find_top_trace(())


_OUTSIDE = type(_current_trace())  # the trace active when nothing is being traced (jax 0.10.2: EvalTrace)


def inside_transform() -> bool:
    """True while the caller's ``jax.jit``/``grad``/``vmap``/``eval_shape`` traces (even with closed-over
    concrete arrays, which an inner ``jax.jit`` would be staged into that trace with). If the trace
    cannot be read, warns once and answers False: a runner then finds out from its staged result."""
    try:
        trace = _current_trace()
    except Exception as e:  # noqa: BLE001 - reported once; the runner's staged-result check still applies
        warn_once("inside_transform", f"cannot read the current jax trace ({type(e).__name__}: {e}); a call inside "
                                      "your own transform is found out after it was staged")
        return False
    return type(trace) is not _OUTSIDE


def current_trace() -> Any:
    """The innermost active jax trace (an object to compare with :func:`staged_in`)."""
    return _current_trace()


def staged_in(x: Any, trace: Any) -> bool:
    """True if ``x`` is a tracer of ``trace`` itself (not of a transform nested inside it: a scan body,
    ``vmap``, ``shard_map``), so it may be returned from the function ``trace`` stages. Reads
    ``Tracer._trace`` (jax 0.10.2); answers False if it is gone, which callers treat as "nested"."""
    from jax.core import Tracer

    return isinstance(x, Tracer) and getattr(x, "_trace", None) is trace


def shape_pass() -> bool:
    """True while a lifted transform traces a body only to learn the structure of its outputs.

    flax's ``nn.scan`` (flax 0.12.8) does so with a partial-evaluation trace (jax 0.10.2's
    ``JaxprTrace``) before tracing the loop that runs; there is no public way to ask which
    kind of trace is active, so the class is recognised by name. If the trace cannot be read,
    warns once and answers False: a scan body is then recorded twice (binding rows doubled,
    patch call indices shifted).
    """
    try:
        trace = _current_trace()
    except Exception as e:  # noqa: BLE001 - reported once, then every pass is recorded
        warn_once("shape_pass", f"cannot read the current jax trace ({type(e).__name__}: {e}); "
                                "bodies of nn.scan are recorded twice in the binding trace")
        return False
    return type(trace).__name__ == "JaxprTrace"


def traced_effects() -> bool:
    """True if what the current ``jax.jit`` trace has recorded so far has side effects (a
    ``jax.debug.print``, a callback), or if that cannot be told.

    jax 0.10.2 keeps the equations of a trace in ``trace.frame.tracing_eqns``, holding every
    equation with effects strongly (an effect-free one may be a weak reference); an equation of
    a nested jaxpr (``scan``, ``cond``, an inner ``jit``) carries its body's effects. If these
    cannot be read, warns once and answers True, so nothing is ever run twice."""
    try:
        eqns = list(_current_trace().frame.tracing_eqns)
    except Exception as e:  # noqa: BLE001 - reported once; then every program is taken to have effects
        warn_once("traced_effects", f"cannot read the equations of the current trace ({type(e).__name__}: {e}); "
                                    "keep='stats' returns the captured arrays to the device, as with effects")
        return True
    return any(getattr(e, "effects", None) for e in eqns if not isinstance(e, weakref.ref))


# -- jax: one compiled executable, called straight from the caller's arguments ---------------
class StaleCall(Exception):
    """A :func:`direct_call` refused a call its executable was not compiled for."""


class _OnceThenRefuse:
    """An executable that runs one call (the one that primes jax's C++ dispatch cache) and refuses
    every later call that reaches Python, which only a signature the cache does not hold does."""

    def __init__(self, executable: Any, context: Callable[[], Any]):
        self._executable = executable
        self._context = context  # jax's trace context (its config) when the executable was compiled
        self._compiled_in = context()
        self._primed = False

    def call(self, *args: Any) -> Any:
        if self._primed or self._context() != self._compiled_in or inside_transform():
            raise StaleCall("not the signature this executable was compiled for")
        out = self._executable.call(*args)
        self._primed = True
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executable, name)


def direct_call(jitted: Any, inputs: tuple[tuple, dict],
                leaves_as: Any = None) -> tuple[Callable[..., Any], Any] | None:
    """``(call, out_tree)`` for the executable ``jitted(inputs)`` runs, ``inputs`` being ``(args, kwargs)``.

    ``call(*args, **kwargs)`` runs it through jax's C++ dispatch (no Python in front) and returns the
    output's leaves as a list, or unflattened into the treedef ``leaves_as`` (of as many leaves) if
    given; ``out_tree`` is the output's own structure. Every call that jax's own
    dispatch would not take as this one signature (another structure, shape, dtype, weak type,
    sharding, a Python scalar for an array, a changed jax config, an enclosing trace) raises
    instead of running: such calls belong to ``jitted``. Dict key *order* is not part of the
    signature (jax sorts keys): the caller checks it.

    Built on ``Compiled._params`` and ``MeshExecutable.create_cpp_call`` (jax 0.10.2), the C++
    fast path of ahead-of-time compiled calls, with the executable swapped for one that refuses
    whatever reaches Python after the first call. No public API calls an executable with other
    output leaves than its own. None (after one warning) if those internals have moved: the caller
    then keeps calling ``jitted``.
    """
    try:
        compiled = jitted.lower(inputs).compile()
        params = compiled._params  # jax-internal: CompiledCallParams
        if params.no_kwargs and inputs[1] or params.is_high:
            return None
        in_tree = params.in_tree.children()[0].children()[0]  # ((inputs,), {}) -> inputs
        out_tree = params.out_tree
        from jax._src.config import trace_context  # jax-internal: the config a trace depends on
        from jax.tree_util import tree_structure

        once = _OnceThenRefuse(params.executable, trace_context)
        if leaves_as is None:
            leaves_as = tree_structure([0] * out_tree.num_leaves)
        elif leaves_as.num_leaves != out_tree.num_leaves:
            return None
        flat = params._replace(executable=once, in_tree=in_tree, out_tree=leaves_as)
        call = compiled._executable.create_cpp_call(flat)  # jax-internal: None where no C++ path exists
    except Exception as e:  # noqa: BLE001 - reported once; calls keep going through jax.jit
        warn_once("direct_call", f"cannot call a compiled executable directly ({type(e).__name__}: {e}); "
                                 "each fi.apply call keeps its Python dispatch (a few microseconds)")
        return None
    return (None if call is None else (call, out_tree))


# -- jax: the user's source lines of a jaxpr equation ------------------------------------------
def user_frames(source_info: Any) -> list[tuple[str, int, str]]:
    """``[(file, line, function)]`` of the user's frames (outside jax; flax's own files are left out by flax's
    registration) where a jaxpr equation was traced, innermost first: jax's ``source_info_util.user_frames``
    of ``eqn.source_info.traceback`` (jax 0.10.2; jax has no public form, ``source_info_util.summarize`` gives
    only text). If it is gone, warns once and answers ``[]`` (an origin then names no ``file:line``)."""
    try:
        from jax._src import source_info_util  # internal: the frames jax keeps for each equation

        tb = getattr(source_info, "traceback", None)
        return [(f.file_name, int(f.start_line), f.function_name) for f in source_info_util.user_frames(tb)]
    except Exception as e:  # noqa: BLE001 - reported once; the origin is named without its line
        warn_once("user_frames", f"cannot read jax's source information ({type(e).__name__}: {e}); the "
                                 "operation behind a NaN is named without its file:line")
        return []


# -- flax linen: names of lifted transforms ----------------------------------------------
LIFTED_WRAPPER_METHOD = "<lambda>"
"""The method name flax's lifted transforms (``nn.scan``, ``nn.vmap``, flax 0.12.8) use when they
call their generated wrapper class for a throw-away shape check: ``_get_fn_name`` of a lambda.
Such calls are not the user's calls: never captured, never recorded."""


def is_lifted_wrapper_call(method_name: str) -> bool:
    """True for a lifted transform's call of its wrapper class (see :data:`LIFTED_WRAPPER_METHOD`)."""
    return method_name == LIFTED_WRAPPER_METHOD


def lifted_target(wrapper: type) -> str | None:
    """The name of the module class a lifted transform's wrapper class runs: ``ScanBlock`` -> ``'Block'``.

    For ``nn.scan(Block)``, flax (0.12.8) generates a subclass of ``Block`` named by prefixing the
    transform's name (``ScanBlock``, ``VmapDense``, ``CheckpointDense``, ``Map_variablesDense``);
    there is no public attribute for the class it wraps. A lifted *function* (``nn.scan(fn)``,
    ``nn.remat_scan``...) runs its wrapper on the user's own class (``LSTMCell``): None, and notes
    about intermediates the transform dropped do not name it. ``tests/test_compat.py`` checks the
    naming against the installed flax, so a change there fails a test rather than warning here (flax's
    own CI turns every warning into an error).
    """
    base = wrapper.__bases__[0] if wrapper.__bases__ else object
    if base is object or wrapper.__name__ == base.__name__ or not wrapper.__name__.endswith(base.__name__):
        return None
    return base.__name__


def capture_calls(module: Any, method_name: str) -> bool:
    """What ``capture_intermediates=True`` records in flax (0.12.8): every ``__call__``.

    flax's own rule is ``flax.linen.module.capture_call_intermediates``, a lambda that
    ``flax.linen`` does not export; this is the same rule, written out."""
    return method_name == "__call__"


def capture_filter_in_effect() -> Any:
    """The capture filter flax asks after a wrapped method returns: the top of flax 0.12.8's
    private ``flax.linen.module._context.capture_stack`` (None when empty). An inner
    ``apply``/``init`` run by a module pushes its own. If the stack cannot be read, warns once and
    answers None: captured values are then summarized after the call rather than where produced."""
    try:
        from flax.linen import module as linen_module

        stack = linen_module._context.capture_stack
    except Exception as e:  # noqa: BLE001 - reported once; statistics are then computed after the call
        warn_once("capture_filter_in_effect", f"cannot read flax's capture stack ({type(e).__name__}: {e}); "
                                              "captured values are summarized after the call")
        return None
    return stack[-1] if stack else None


def unbound_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` as a function of the module, as ``Module.apply(method=...)`` takes it.

    The same rule as flax's private ``flax.linen.module._get_unbound_fn`` (flax 0.12.8): a method
    bound to a module becomes its function; anything else must be a callable taking the module
    first, else flax's :class:`~flax.errors.ApplyModuleInvalidMethodError` is raised."""
    import flax.linen as nn
    from flax.errors import ApplyModuleInvalidMethodError

    if inspect.ismethod(method) and isinstance(method.__self__, nn.Module):
        method = method.__func__
    if not callable(method) or len(inspect.signature(method).parameters) < 1:
        raise ApplyModuleInvalidMethodError(method)
    return method


# -- flax linen: what a scope holds --------------------------------------------------------
def own_intermediates(scope: Any) -> Mapping[str, Any]:
    """A scope's own ``intermediates`` collection as flax holds it during the call (read only).

    Reads ``Scope._collection`` (flax 0.12.8): a reference, no copy. The public
    ``Scope.variables()`` copies every collection of the scope when ``flax_return_frozendict`` is
    set, so it is only the fallback, used (after one warning) if the private method is gone.
    """
    try:
        return scope._collection("intermediates")  # flax-internal, read only
    except Exception as e:  # noqa: BLE001 - reported once, then the public, copying read
        warn_once("own_intermediates", f"Scope._collection failed ({type(e).__name__}: {e}); "
                                       "reading intermediates through Scope.variables() instead")
    try:
        return scope.variables().get("intermediates", {})
    except Exception as e:  # noqa: BLE001 - reported once: sown values lose their module type
        warn_once("own_intermediates (public)", f"Scope.variables() failed ({type(e).__name__}: {e}); "
                                                "sown values are listed without their module type")
        return {}


# -- flax linen: variable reads, writes and RNG draws ----------------------------------------
TouchKind = Literal["read", "write", "rng"]
Listener = Callable[[TouchKind, tuple[str, ...], str, str], None]
"""``listener(kind, scope_path, collection, name)``: ``kind`` is ``'read'``, ``'write'`` or ``'rng'``
(``collection`` is ``''`` and ``name`` the stream: ``'dropout'``, or ``'dropout->params'`` when flax
fell back to the ``params`` stream)."""

_probes = threading.local()


def scope_listener() -> Listener | None:
    """The listener told of scope accesses on this thread (None outside :func:`listening`)."""
    return getattr(_probes, "listener", None)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """``with listening(fn):`` tells ``fn`` of every variable read/write and RNG draw flax makes on
    this thread, then restores the listener before it (probes are installed on first use)."""
    install_scope_probes()
    previous = scope_listener()
    _probes.listener = listener
    try:
        yield
    finally:
        _probes.listener = previous


def _col_and_name(args: tuple, kwargs: dict) -> tuple[str, str] | None:
    """``(col, name)`` of a ``get_variable``/``put_variable`` call, positional or by keyword."""
    try:
        col = args[0] if len(args) > 0 else kwargs["col"]
        name = args[1] if len(args) > 1 else kwargs["name"]
    except KeyError:
        return None
    return col, name


def _rng_counts(scope: Any) -> dict[str, int] | None:
    """How many keys each stream of ``scope`` has drawn (None if flax no longer counts them there)."""
    try:
        return {k: v for k, v in scope.rng_counters.items() if isinstance(v, int)}
    except Exception:  # noqa: BLE001 - reported by the caller, once
        return None


def install_scope_probes() -> None:
    """Wraps ``Scope.get_variable``, ``Scope.put_variable`` and ``Scope.make_rng`` (flax 0.12.8) once.

    flax has no hook for variable access; :func:`flax.linen.intercept_methods` sees method calls
    only. The wrappers are process-wide but inert outside :class:`listening`: they pass every
    argument through (``*args, **kwargs``), so a new parameter in flax reaches flax unchanged. The
    stream an RNG draw used is read from what flax did (which of ``Scope.rng_counters`` moved), not
    from a copy of its fallback rule. If the arguments or the counters are not what this expects,
    the call still goes through and a warning (once) says that the binding trace misses it.
    """
    from flax.core.scope import Scope

    with _install_lock:
        if getattr(Scope, _INSTALLED_MARK, False):
            return
        for name, probe in (("get_variable", _read_probe), ("put_variable", _write_probe), ("make_rng", _rng_probe)):
            original = _originals[name] = getattr(Scope, name)
            wrapper = functools.wraps(original)(probe)
            setattr(Scope, name, wrapper)
        setattr(Scope, _INSTALLED_MARK, True)


_install_lock = threading.Lock()
_INSTALLED_MARK = "_inspector_probes"  # set on Scope itself: its methods are wrapped once per process
_originals: dict[str, Callable[..., Any]] = {}  # flax's own Scope methods, by name


def _variable_access(kind: TouchKind, original: str, self: Any, args: tuple, kwargs: dict) -> Any:
    listener = scope_listener()
    call = _originals[original]
    if listener is None:
        return call(self, *args, **kwargs)
    col_name = _col_and_name(args, kwargs)
    if col_name is None:
        out = call(self, *args, **kwargs)  # a call flax accepts without them: its signature changed
        warn_once("scope probes", f"Scope.{original} was called without 'col' and 'name'; "
                                  "the binding trace misses these variable accesses")
        return out
    listener(kind, tuple(self.path), *col_name)
    return call(self, *args, **kwargs)


def _read_probe(self: Any, *args: Any, **kwargs: Any) -> Any:
    return _variable_access("read", "get_variable", self, args, kwargs)


def _write_probe(self: Any, *args: Any, **kwargs: Any) -> Any:
    return _variable_access("write", "put_variable", self, args, kwargs)


def _rng_probe(self: Any, *args: Any, **kwargs: Any) -> Any:
    listener = scope_listener()
    make_rng = _originals["make_rng"]
    if listener is None:
        return make_rng(self, *args, **kwargs)
    before = _rng_counts(self)
    key = make_rng(self, *args, **kwargs)
    after = _rng_counts(self)
    moved = [] if before is None or after is None else [k for k, n in after.items() if n != before.get(k, 0)]
    asked = args[0] if args else kwargs.get("name", moved[0] if len(moved) == 1 else "params")
    if len(moved) == 1:
        stream = asked if moved[0] == asked else f"{asked}->{moved[0]}"
    else:
        warn_once("make_rng", f"Scope.make_rng moved {len(moved)} rng counters, not 1; "
                              "the binding trace names the stream asked for, not the one used")
        stream = asked
    listener("rng", tuple(self.path), "", stream)
    return key


# -- flax nnx (imported when called: ``import inspector`` must not load flax.nnx) ------------
def collection_name(var_type: type) -> str:
    """``Param`` -> ``'params'``, ``BatchStat`` -> ``'batch_stats'``: flax's public
    ``nnx.variable_name_from_type`` (flax 0.12.8); a type it has not registered (``RngKey``, a
    user's type) by its class name."""
    from flax import nnx

    try:
        return nnx.variable_name_from_type(var_type)
    except ValueError:  # not registered: flax's own error for it
        return var_type.__name__


def bridged_module(model: Any) -> nn.Module:
    """The linen module inside an ``nnx.bridge.ToNNX`` wrapper.

    flax 0.12.8 holds it as ``to_nnx__module``; the public ``ToNNX.module`` is deprecated (it
    warns). If the attribute is gone, warns once and reads ``module``."""
    linen = getattr(model, "to_nnx__module", None)
    if linen is None:
        warn_once("bridged_module", "nnx.bridge.ToNNX has no 'to_nnx__module'; reading its deprecated 'module'")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            linen = model.module
    return linen

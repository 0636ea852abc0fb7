"""The engine: run flax under ``jax.jit`` and record what it did, in the order a call travels.

- :mod:`~inspector.engine.runner`: :class:`~inspector.engine.runner.Runner`, the jit cache per
  input signature and the trace of flax under the recorder;
- :mod:`~inspector.engine.direct`: the direct-dispatch fast path of a cached plain call;
- :mod:`~inspector.engine.call_state`: what a program's trace reads of the call that started it;
- :mod:`~inspector.engine.signature`: which inputs are arrays, static values keyed by value, the
  generated layout guards that pick a compiled program;
- :mod:`~inspector.engine.recorder`: the method interceptor that records calls, sows, patches and
  the binding trace while flax runs in the trace;
- :mod:`~inspector.engine.hooks`: :class:`~inspector.engine.hooks.TraceHooks`, the one typed object an
  inspection hands the runner (what it adds to a traced call), and its per-trace pieces;
- :mod:`~inspector.engine.results`: a program's results back to the caller, flax's key order put
  back, arrays held by non-pytree objects.

Nothing here imports the inspection wing, the views or the entry points.
"""

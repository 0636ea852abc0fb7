"""The inspection wing: one call's :class:`~inspector.model.Inspection`, in the order a call travels.

- :mod:`~inspector.inspection.pipeline`: :class:`~inspector.inspection.pipeline.InspectRun` and the
  first-call policy;
- :mod:`~inspector.inspection.backend`: where the work happens, by backend (the one place that decides
  CPU vs accelerator);
- :mod:`~inspector.inspection.variables`: statistics of the caller's variables (worker pool, memo);
- :mod:`~inspector.inspection.plan`: what the trace records (slots, calls, in-call summaries);
- :mod:`~inspector.inspection.assemble`: the host side, from the plan to the model;
- :mod:`~inspector.inspection.grad` and :mod:`~inspector.inspection.nnx`: variants of the pipeline
  (gradients beside activations; Flax NNX, loaded on first use).
"""

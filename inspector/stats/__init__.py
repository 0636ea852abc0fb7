"""Statistics of arrays: one engine serving inspect, grad, watch and compare.

Every described array becomes one row of 32-bit words (:mod:`~inspector.stats.rows`: the
layout, encoding and decoding into :class:`~inspector.model.Stats`). The rooms, in the order a
call uses them:

* :mod:`~inspector.stats.summary`: in-call summaries, five reductions per array fused with its
  producer; a row says whether it can be trusted, else it is redone exactly.
* :mod:`~inspector.stats.exact`: exact device programs (masked, overflow-safe, centred on a
  sample's median), for one array or many of one layout at once.
* :mod:`~inspector.stats.host`: the same definitions by numpy in float64, where the device is
  the host (the CPU backend: arrays are read in place, nothing compiles).
* :mod:`~inspector.stats.programs`: exact device programs keyed by a bucketed size and dtype,
  not by the model, reused across calls, models and (saved in a user cache directory) sessions;
  called directly (inspected calls on the CPU backend describe with numpy, quicker there).
* :mod:`~inspector.stats.differences`: what changed between two arrays.
* :mod:`~inspector.stats.scalars`: the training watch's per-step scalars.
* :mod:`~inspector.stats.device`: the choosers (:func:`summarize`, :func:`describe_many`,
  :func:`histogram`, ...).

Definitions (the README states them with their tolerances): ``mean``/``std`` (population) and
``min``/``max``/``abs_max`` are over finite elements; ``nan``, ``posinf``, ``neginf`` and
``zeros`` are exact counts; the histogram has ``BINS`` equal bins whose edges are computed from
``min``/``max``, over every finite element or, above ``SAMPLE`` elements, over ``SAMPLE``
elements at fixed positions. Complex arrays are described by ``|z|``. Half-precision floats are
read as stored (an optimization barrier stops XLA from describing a fused, unrounded producer);
subnormals as the device reads them.

The rest of the package uses the names exported here (``from inspector import stats``;
``stats.describe_many(...)``); the rooms' other names are theirs.
"""

from inspector.stats.differences import delta_exact, deltas, host_delta, nonfinite_delta, unpack_deltas
from inspector.stats.device import describe_many, histogram, host_stats_many, summaries_after_the_call, summarize
from inspector.stats.host import on_host, to_host
from inspector.stats.rows import (RowGroups, decode_rows, flushes_subnormals, layout, row_groups, supported,
                                  supported_dtype, unpack)
from inspector.stats.scalars import N_STATS, array_stats, as_float32, int_abs_max, scalar_rows, with_log_histograms
from inspector.stats.summary import summary_fields

__all__ = [
    "N_STATS", "RowGroups", "array_stats", "as_float32", "decode_rows", "delta_exact", "deltas", "describe_many",
    "flushes_subnormals", "histogram", "host_delta", "host_stats_many", "int_abs_max", "layout", "nonfinite_delta",
    "on_host", "row_groups", "scalar_rows", "summaries_after_the_call", "summarize", "summary_fields", "supported",
    "supported_dtype", "to_host", "unpack", "unpack_deltas", "with_log_histograms",
]

"""What an inspection found: plain dataclasses, readable without jax or widgets.

An :class:`Inspection` holds the output of one flax call, the variables it read
(:class:`VariableTree`), what ``mutable=`` changed (:class:`CollectionDiff`) and the
captured intermediates (:class:`MethodCall`), each leaf described by a :class:`Leaf`
with device-computed :class:`Stats`.

The data model in four rooms, each imported from here (``from inspector.model import X``):

- :mod:`~inspector.model.vocabulary`: the literal kinds, statuses, sections and orders;
- :mod:`~inspector.model.leaves`: :class:`Stats`, :class:`Leaf`, :class:`Node`, :class:`VariableTree`;
- :mod:`~inspector.model.deltas`: :class:`LeafDiff`, :class:`CollectionDiff`, :class:`LeafDelta`,
  :class:`Comparison`;
- :mod:`~inspector.model.inspection`: :class:`MethodCall`, :class:`BindingCall`, :class:`Timings`,
  :class:`UpdateScale`, :class:`GradNorm`, :class:`Inspection`.

The model opens one door into the views, :mod:`inspector.views.display`, for its display hooks.
"""

from inspector.model.deltas import CollectionDiff, Comparison, LeafDelta, LeafDiff, NonfiniteChanges
from inspector.model.inspection import BindingCall, GradNorm, Inspection, MethodCall, Timings, UpdateScale
from inspector.model.leaves import RECORD_STATS, Leaf, Node, SpansProcessesError, Stats, VariableTree, tree_from_leaves
from inspector.model.vocabulary import (
    MUTATION_STATUSES, ORDERS, SECTIONS, STRUCTURAL, ComparedSection, ComparisonStatus, Kind, MutationStatus, Order,
    path_str,
)
from inspector.names import Path, format_key, format_path, parse_key, path_matches, safe

__all__ = [
    "MUTATION_STATUSES", "ORDERS", "RECORD_STATS", "SECTIONS", "STRUCTURAL", "BindingCall", "CollectionDiff",
    "ComparedSection", "Comparison", "ComparisonStatus", "GradNorm", "Inspection", "Kind", "Leaf", "LeafDelta",
    "LeafDiff", "MethodCall", "MutationStatus", "Node", "NonfiniteChanges", "Order", "Path", "SpansProcessesError",
    "Stats", "Timings", "UpdateScale", "VariableTree", "format_key", "format_path", "parse_key", "path_matches",
    "path_str", "safe", "tree_from_leaves",
]

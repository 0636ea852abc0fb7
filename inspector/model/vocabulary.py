"""The words of the data model: kinds of flax call, statuses of a mutated or compared leaf, the
sections of a comparison and the orders a view lists them in."""

from __future__ import annotations

from typing import Literal

from inspector.names import Path, format_path, parse_key


path_str = format_path
"""``('Encoder_0', 'Dense_1')`` -> ``'Encoder_0/Dense_1'`` (the root is ``'/'``); see :mod:`inspector.names`."""

Kind = Literal["apply", "init", "init_with_output"]
"""Which flax call was inspected."""
MutationStatus = Literal["changed", "added", "unchanged", "removed"]
"""How a call changed one leaf of a mutable collection (:class:`LeafDiff`)."""
MUTATION_STATUSES: tuple[MutationStatus, ...] = ("changed", "added", "unchanged", "removed")
ComparisonStatus = Literal["only in a", "only in b", "shape differs", "statistics only", "differs", "equal"]
"""How two aligned leaves of a :class:`Comparison` differ (:class:`LeafDelta`)."""
STRUCTURAL: frozenset[str] = frozenset(("only in a", "only in b", "shape differs", "added", "removed"))
"""Statuses of a leaf that is missing on one side or changed shape: nothing to measure element-wise."""
ComparedSection = Literal["output", "variables", "intermediates", "gradients"]
"""Where a compared leaf comes from (one of a comparison's sections)."""
SECTIONS: tuple[ComparedSection, ...] = ("output", "variables", "intermediates", "gradients")
Order = Literal["execution", "size"]
"""How a comparison lists its leaves: in execution order (the first divergence first), or largest first."""
ORDERS: tuple[Order, ...] = ("execution", "size")


def parse_lookup_key(key: str) -> tuple[Path, str | None, int | None]:
    """``key`` by the key grammar of :mod:`inspector.names`, raising KeyError (a lookup) for a bad one."""
    try:
        return parse_key(key)
    except ValueError as e:
        raise KeyError(str(e)) from None

"""A call's inputs, flattened once when it returns, for what is kept of the call afterwards (its replay,
its costs, the origin of a NaN): one snapshot that the caller's later changes to its dicts and lists do
not reach."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class CallInputs:
    """The leaves and structure of a call's ``(args, kwargs)`` (jax's flatten order: dict keys sorted)."""

    leaves: list[Any]
    treedef: Any

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallInputs:
        leaves, treedef = jax.tree.flatten((args, kwargs))
        return cls(leaves, treedef)

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` rebuilt in fresh containers."""
        args, kwargs = jax.tree.unflatten(self.treedef, self.leaves)
        return args, kwargs

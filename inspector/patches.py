"""Patches for :func:`inspector.intervene` and ``inspect_apply(..., patches=...)``.

A patch maps a method's output ``y`` to what the call returns instead. Besides these helpers,
any function of ``y`` works, and so does a value (broadcast to every array of ``y``)::

    fi.intervene(fn, model, {"blocks_3/mlp:__call__": fi.patches.zero})(variables, x)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def zero(y: Any) -> Any:
    """Every array of the output replaced by zeros."""
    return jax.tree.map(lambda a: a * 0, y)


def scale(factor: float) -> Callable[[Any], Any]:
    """Every array of the output multiplied by ``factor``."""
    return lambda y: jax.tree.map(lambda a: a * factor, y)

"""Each function inspector generates as code (for speed: one expression instead of a walk) agrees with
its plain twin, on random trees: the runner's input guard (``signature.layout_guard`` vs
``signature.same_layout``), its result builder (``results.result_builder`` vs jax's unflatten and
``results.restore_order``), and the plan's getter (``plan.keypath_getter`` vs ``plan.lookup``)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.engine import results, signature
from inspector.inspection import plan

ARR = jnp.zeros(2)
KEY = jax.random.key(0)
Pair = collections.namedtuple("Pair", "a b")

keys = st.sampled_from(["a", "b", "c", "params", "x/y", "z"])
leaves = st.one_of(st.integers(0, 9).map(lambda i: jnp.full((2,), i)), st.just(KEY), st.none(),
                   st.just(jnp.ones((1,), jnp.int32)))  # fresh arrays mostly, one shared key and array
odd_leaves = st.sampled_from([ARR, None, np.zeros(2), 3, "s", 1.5])


def trees(leaf, depth=3, pytrees=False):
    def extend(children):
        kinds = [st.dictionaries(keys, children, max_size=4), st.lists(children, max_size=3),
                 st.lists(children, max_size=3).map(tuple),
                 st.dictionaries(keys, children, max_size=3).map(FrozenDict)]
        if pytrees:
            kinds.append(st.tuples(children, children).map(lambda t: Pair(*t)))
        return st.one_of(*kinds)
    return st.recursive(leaf, extend, max_leaves=12)


def shuffled(tree, data):
    """``tree`` with some dicts' keys reordered, containers swapped or leaves changed: a near miss."""
    t = type(tree)
    if t is dict or t is FrozenDict:
        items = list(tree.items())
        if data.draw(st.booleans()):
            items = data.draw(st.permutations(items))
        out = {k: shuffled(v, data) for k, v in items}
        return FrozenDict(out) if t is FrozenDict and data.draw(st.booleans()) else out
    if t in (list, tuple):
        out = [shuffled(v, data) for v in tree]
        if out and data.draw(st.booleans()):
            out = out[:-1]
        return tuple(out) if data.draw(st.booleans()) else out
    return data.draw(odd_leaves) if data.draw(st.integers(0, 4)) == 0 else tree


@settings(max_examples=150, deadline=None)
@given(trees(leaves), st.booleans(), st.data())
def test_guard_agrees_with_its_plain_twin(x, frozen, data):
    guard = signature.layout_guard(x, frozen)
    assert guard is not None
    assert guard(x, frozen) and not guard(x, not frozen)
    y = shuffled(x, data)
    assert guard(y, frozen) == signature.same_layout(x, y), (x, y)


@settings(max_examples=150, deadline=None)
@given(trees(leaves, pytrees=True), st.data())
def test_builder_agrees_with_unflatten_and_reorder(result, data):
    flat, treedef = jax.tree.flatten(result)
    build = results.result_builder(result, flat)
    if build is None:  # a bare leaf: nothing to build
        return
    fresh = [jnp.full((1,), i) for i in range(len(flat))]
    plain = results.restore_order(jax.tree.unflatten(treedef, fresh), results.order_skeleton(result))
    got = build(fresh)
    assert jax.tree.structure(got) == jax.tree.structure(plain)
    # the same values in the same places (a leaf object that occurs twice in ``result`` is one output
    # of the program, so either of its positions may be read: their values are equal)
    shared = {id(v) for v in flat if sum(w is v for w in flat) > 1}
    for a, b, v in zip(jax.tree.leaves(got), jax.tree.leaves(plain), flat):
        assert a is b or id(v) in shared
    assert repr(jax.tree.map(lambda v: 0, got)) == repr(jax.tree.map(lambda v: 0, plain))  # key order too


@settings(max_examples=150, deadline=None)
@given(trees(leaves, pytrees=True))
def test_getter_agrees_with_lookup(tree):
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    got, plain = plan.keypath_getter(paths)(tree), [plan.lookup(tree, p) for p in paths]
    assert len(got) == len(plain) and all(a is b for a, b in zip(got, plain))

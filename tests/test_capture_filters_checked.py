"""Capture filters never fail silently: a path, type or method filter that captures nothing warns
with the closest names that ran, and filters built from wrong arguments say so when built."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import capture as C


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="proj")(x)


class Net(nn.Module):
    def setup(self):
        self.encoder = Encoder()
        self.decoder = nn.Dense(2)

    def encode(self, x):
        return self.encoder(x)

    def __call__(self, x):
        return self.decoder(self.encode(x))


class MyDense(nn.Dense):
    pass


class Sub(nn.Module):
    @nn.compact
    def __call__(self, x):
        return MyDense(2, name="mine")(nn.Dense(3, name="plain")(x))


FN = lambda m, x: m(x)


@pytest.fixture
def setup():
    C.forget_warnings()
    m, x = Net(), jnp.ones((1, 4))
    yield m, m.init(jax.random.key(0), x), x
    C.forget_warnings()


def _warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, fi.CaptureFilterWarning)]


@pytest.mark.parametrize("filter_, closest", [
    (C.paths("encodr/**"), "'encoder/**'"),
    (C.methods("encod"), "'encode'"),
    (C.types("Dens"), "'Dense'"),
    (C.paths("encodr/**") & C.depth(max=3), "'encoder/**'"),
])
def test_a_filter_that_matches_nothing_warns_with_the_closest_names(setup, filter_, closest):
    m, v, x = setup
    run = fi.apply(FN, m, capture_intermediates=filter_)
    (y, state), caught = _warnings_of(lambda: run(v, x))
    assert state == {}  # flax's result is unchanged: nothing captured
    assert len(caught) == 1, caught
    message = str(caught[0].message)
    assert repr(filter_) in message and closest in message and "Net" in message
    assert caught[0].filename == __file__  # points at the caller's line, not inside inspector
    assert issubclass(fi.CaptureFilterWarning, UserWarning)


def test_the_warning_is_given_once_per_filter_and_model(setup):
    m, v, x = setup
    _, first = _warnings_of(lambda: fi.apply(FN, m, capture_intermediates=C.paths("encodr/**"))(v, x))
    # a new signature (traced again) and a new, equal run: no second warning
    _, again = _warnings_of(lambda: fi.apply(FN, m, capture_intermediates=C.paths("encodr/**"))(
        v, jnp.ones((2, 4))))
    _, other = _warnings_of(lambda: fi.apply(FN, m, capture_intermediates=C.paths("decodr"))(v, x))
    assert len(first) == 1 and again == [] and len(other) == 1


def test_inspect_forms_warn_too(setup):
    m, v, x = setup
    insp, caught = _warnings_of(lambda: fi.inspect_apply(FN, m, capture_intermediates=C.methods("encod"))(v, x))
    assert insp.calls == [] and len(caught) == 1 and "'encode'" in str(caught[0].message)
    loss = lambda m, x: m(x).sum()
    _, caught = _warnings_of(lambda: fi.inspect_grad(loss, m, capture_intermediates=C.types(nn.Conv))(v, x))
    assert len(caught) == 1 and "module types that ran: 'Dense', 'Encoder', 'Net'" in str(caught[0].message)


@pytest.mark.parametrize("filter_", [
    False, True, C.calls, C.nothing, C.everything, C.depth(min=9), C.where(lambda m, n: False),
    lambda m, n: False, C.paths("encoder/**"), C.types(nn.Dense), C.types("Dense"), C.methods("encode"),
    C.paths("encoder/**") | C.paths("encodr/**"),  # captures something: no warning
    C.paths("encoder/**") & C.methods("encode"),  # each part matches some call, the two none
])
def test_no_warning_for_filters_that_capture_or_are_not_misspelled(setup, filter_):
    m, v, x = setup
    got, caught = _warnings_of(lambda: fi.apply(FN, m, capture_intermediates=filter_)(v, x))
    assert caught == []
    want = nn.apply(FN, m, capture_intermediates=filter_)(v, x)
    assert jax.tree.structure(got) == jax.tree.structure(want)


def test_types_by_class_name():
    m, x = Sub(), jnp.ones((1, 2))
    v = m.init(jax.random.key(0), x)

    def captured(f):
        _, state = nn.apply(FN, m, capture_intermediates=f)(v, x)
        return sorted(state["intermediates"])

    assert captured(C.types("Dense")) == captured(C.types(nn.Dense)) == ["mine", "plain"]  # subclasses too
    assert captured(C.types("MyDense")) == ["mine"]
    assert captured(C.types("flax.linen.linear.Dense")) == ["mine", "plain"]
    assert captured(C.types(f"{__name__}.MyDense")) == ["mine"]
    assert captured(C.types(["MyDense", Sub])) == ["__call__", "mine"]  # a list is unpacked
    assert repr(C.types("Dense", nn.Dense)) == "types('Dense', Dense)"
    assert C.types("Dense") == C.types("Dense") and C.types("Dense") != C.types(nn.Dense)
    assert hash(C.types("Dense")) == hash(C.types("Dense"))


@pytest.mark.parametrize("make, says", [
    (lambda: C.types(3), "not int 3"),
    (lambda: C.types(None), "not NoneType None"),
    (lambda: C.types(), "at least one"),
    (lambda: C.types(""), "not str ''"),
    (lambda: C.types(nn.Dense(3)), "pass the class (Dense), not an instance"),
    (lambda: C.paths(None), "not NoneType None"),
    (lambda: C.paths(3), "not int 3"),
    (lambda: C.paths(), "at least one"),
    (lambda: C.paths(["a", 1]), "not int 1"),
    (lambda: C.methods(nn.Dense), "not type"),
    (lambda: C.methods(), "at least one"),
    (lambda: C.depth("1"), "min=...) takes a non-negative int, not str '1'"),
    (lambda: C.depth(-1), "not int -1"),
    (lambda: C.depth(True), "not bool True"),
    (lambda: C.depth(max=1.5), "or None, not float 1.5"),
    (lambda: C.depth(min=3, max=1), "max is below min"),
    (lambda: C.where("encode"), "takes a function"),
    (lambda: C.paths("a") | "b", "not str 'b'"),
    (lambda: 3 & C.paths("a"), "not int 3"),
])
def test_wrong_arguments_give_a_clear_error_when_the_filter_is_built(make, says):
    with pytest.raises(fi.CaptureFilterError, match=None) as info:
        make()
    assert says in str(info.value), str(info.value)


def test_sensible_acceptance():
    assert C.paths(["a", "b"]) == C.paths("a", "b")
    assert C.methods(("encode", "decode")) == C.methods("encode", "decode")
    assert C.paths("a") | True == C.paths("a") | C.calls
    assert repr(C.paths("a") & False) == "(paths('a') & nothing)"


def test_repr_never_fails():
    class Odd:
        def __init__(self):
            self.__qualname__ = 3  # not a str

        def __call__(self, m, n):
            return True

        def __repr__(self):
            raise RuntimeError("no repr")

    assert repr(C.where(Odd())) == "where(<Odd object>)"
    assert "types(" in repr(C.types("Dense") | C.types(nn.Dense))

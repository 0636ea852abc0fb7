"""Filter combinators: what they select, safety defaults, composition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import capture as C
from models import MLP, ae_setup


def captured(filter_, model=None, variables=None, x=None, f=None):
    """Sorted 'path:method' keys that flax records with ``filter_`` (unjitted flax)."""
    if model is None:
        model, variables, x = ae_setup()
    f = f or (lambda m, x: m(x))
    _, state = nn.apply(f, model, mutable=["batch_stats"], capture_intermediates=filter_)(variables, x)
    out = []

    def walk(node, path):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, path + (k,))
            elif k != "h":  # the model's own sow
                out.append("/".join(path) + ":" + k)

    walk(state["intermediates"], ())
    return sorted(out)


def test_everything_is_safe():
    keys = captured(C.everything)
    assert ":setup" not in " ".join(keys)
    assert not any(k.endswith(":_private") for k in keys)
    assert keys == sorted([":__call__", ":decode", ":encode", "bn:__call__", "dec:__call__",
                           "enc:__call__", "shared:__call__"])
    # flax's own capture-all records setup (as None) and private methods
    raw = captured(lambda m, n: True)
    assert ":setup" in raw and ":_private" in raw


def test_nothing_and_calls():
    assert captured(C.nothing) == []
    assert captured(C.calls) == captured(True)


def test_types_paths_methods_depth():
    assert captured(C.types(nn.Dense)) == ["dec:__call__", "enc:__call__", "shared:__call__"]
    assert captured(C.types(nn.BatchNorm)) == ["bn:__call__"]
    assert captured(C.methods("encode", "decode")) == [":decode", ":encode"]
    assert captured(C.methods("*code")) == [":decode", ":encode"]
    assert captured(C.paths("e*")) == ["enc:__call__"]
    assert captured(C.paths("")) == [":__call__", ":decode", ":encode"]
    assert captured(C.depth(max=0)) == [":__call__", ":decode", ":encode"]
    assert captured(C.depth(min=1)) == ["bn:__call__", "dec:__call__", "enc:__call__", "shared:__call__"]


def test_path_globs_segmentwise():
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="Dense_0")(nn.Dense(2, name="proj")(x))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Block(name="Encoder")(x)
            return Block(name="Decoder")(x)

    model, x = Net(), jnp.ones((1, 2))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    keys = captured(C.paths("Encoder/Dense_*"), model, variables, x)
    assert keys == ["Encoder/Dense_0:__call__"]
    assert captured(C.paths("*/Dense_*"), model, variables, x) == ["Decoder/Dense_0:__call__",
                                                                   "Encoder/Dense_0:__call__"]
    assert captured(C.paths("Encoder/**"), model, variables, x) == ["Encoder/Dense_0:__call__",
                                                                    "Encoder/proj:__call__"]
    assert captured(C.paths("Enc*"), model, variables, x) == ["Encoder:__call__"]


def test_composition():
    both = C.methods("encode", "decode") | C.types(nn.Dense)
    assert captured(both) == [":decode", ":encode", "dec:__call__", "enc:__call__", "shared:__call__"]
    assert captured(C.types(nn.Dense) & ~C.paths("shared")) == ["dec:__call__", "enc:__call__"]
    assert captured(C.types(nn.Dense) & C.where(lambda m, n: m.name == "dec")) == ["dec:__call__"]
    # user lambdas compose on either side and stay safe
    assert captured((lambda m, n: True) & C.depth(max=0)) == [":__call__", ":decode", ":encode"]
    assert captured(~C.nothing) == captured(C.everything)
    assert repr(both) == "(methods('encode', 'decode') | types(Dense))"
    assert C.types(nn.Dense) == C.types(nn.Dense) and hash(C.paths("a")) == hash(C.paths("a"))


def test_shared_module_called_twice_gives_two_calls():
    model, variables, x = ae_setup()
    _, state = nn.apply(lambda m, x: m(x), model, mutable=["batch_stats"],
                        capture_intermediates=C.paths("shared"))(variables, x)
    assert len(state["intermediates"]["shared"]["__call__"]) == 2


def test_filter_sees_lifted_transform_wrappers_safely():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.remat(nn.Dense)(3, name="rd")(x)

    model, x = Net(), jnp.ones((1, 2))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    seen = []
    spy = C.where(lambda m, n: seen.append((type(m).__name__, n)) or True)
    keys = captured(spy, model, variables, x)
    assert "rd:__call__" in keys
    assert all(n != "<lambda>" for _, n in seen)  # wrapper calls are filtered before the user lambda


def test_mlp_dropout_dense_selection():
    model = MLP()
    x = jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=C.types(nn.Dense, nn.Dropout))(variables, x)
    assert [c.key for c in insp.calls] == ["Dense_0:__call__[0]", "Dropout_0:__call__[0]", "Dense_1:__call__[0]"]


@pytest.mark.parametrize("bad", [C.methods("encode") | (lambda m, n: 1 / 0)])
def test_raising_filter_names_path_and_method(bad):
    model, variables, x = ae_setup()
    with pytest.raises(fi.CaptureFilterError, match=r"module 'enc' \(Dense\), method '__call__'"):
        fi.apply(lambda m, x: m(x), model, mutable=["batch_stats"], capture_intermediates=bad)(variables, x)

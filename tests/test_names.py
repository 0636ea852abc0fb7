"""Names from user data: one key grammar that round-trips any name, linear-time globs,
and views that never print control or bidi characters raw."""

import io
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import inspector as fi
from inspector import capture as C
from inspector.names import Glob, format_key, format_path, parse_key, parse_path, path_matches, quote, safe
from inspector.views.inspection_sources import DiffSource, NodeSource

# OSC 52 clipboard write, clear screen, conceal, an OSC 8 link, right-to-left override,
# a bare carriage return, a C1 CSI and a line separator.
EVIL = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b[8m\x1b]8;;http://x\x1b\\ln\x1b]8;;\x1b\\\u202e\r\x9b\u2028"

names = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included


# -- the key grammar -------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.lists(names, max_size=5), st.one_of(st.none(), names), st.one_of(st.none(), st.integers(0, 10**6)))
def test_format_key_round_trips_any_names(path, method, index):
    if method is None:
        index = None
    key = format_key(path, method, index)
    assert parse_key(key) == (tuple(path), method, index)
    assert safe(key) == key  # a key prints as it is: nothing in it needs escaping


@settings(max_examples=200, deadline=None)
@given(st.lists(names, max_size=5))
def test_format_path_round_trips(path):
    assert parse_path(format_path(path)) == tuple(path)


def test_key_grammar_examples():
    assert format_key(("enc:dec", "Dense_0"), "__call__", 1) == "enc\\:dec/Dense_0:__call__[1]"
    assert format_path(("a/b",)) == "a\\/b" and format_path(()) == "/" and quote("") == "\\."
    assert format_key(("x\x1b",), "y[0]") == "x\\x1b:y\\[0\\]"
    assert parse_key("/params//Dense_0/kernel") == (("params", "Dense_0", "kernel"), None, None)
    assert parse_key("/:__call__") == ((), "__call__", None)
    with pytest.raises(ValueError, match="enc\\\\\\\\:dec"):
        parse_key("enc:dec:__call__")  # says how to write the ':' of a name


# -- globs ----------------------------------------------------------------------
def _reference(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            while pattern.startswith("*", i):
                i += 1
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out), re.S)


@settings(max_examples=500, deadline=None)
@given(st.text("ab/*?", max_size=8), st.text("ab/", max_size=10))
def test_glob_agrees_with_a_regex_translation(pattern, text):
    assert Glob(pattern).match(text) == bool(_reference(pattern).fullmatch(text))


def test_glob_is_linear_on_pathological_patterns(monkeypatch):
    steps = []  # one automaton step per character read (a backtracking regex takes tens of seconds here)
    close = Glob._close
    monkeypatch.setattr(Glob, "_close", lambda self, state: (steps.append(1), close(self, state))[1])
    assert not Glob("**a**a**a**b").match("a" * 1000)
    assert not path_matches("a" * 1000, "**a**a**a**a**a**a**b")
    assert not C.paths("**a**a**a**b")._globs[0].match("a/" * 500)
    assert len(steps) <= 3 * (1000 + 1)


def test_glob_star_stays_in_a_segment_and_escaped_slash_is_a_name():
    assert Glob("Encoder/*").match("Encoder/Dense_0") and not Glob("Encoder/*").match("Encoder/a/b")
    assert Glob("Encoder/**").match("Encoder/a/b") and not Glob("Encoder/**").match("Encoder")
    assert Glob("*").match("a\\/b")  # one name holding a '/'
    assert Glob("enc\\:dec/*").match("enc\\:dec/Dense_0")


# -- names with '/' or ':' ------------------------------------------------------
def _ignore(m, x):
    return x


def test_slash_in_a_variable_name_is_not_a_path():
    variables = {"params": {"a/b": jnp.ones(2), "a": {"b": jnp.ones(3)}}}
    insp = fi.inspect_apply(_ignore, nn.Dense(1))(variables, jnp.ones(1))
    assert insp["params/a\\/b"].shape == (2,) and insp["params/a/b"].shape == (3,)
    source = NodeSource(insp.variables.root)
    params = source.children("params")[0]
    leaf = next(r for r in params if r["name"] == "a/b")
    assert source.leaf(leaf["id"]).shape == (2,)
    inner = next(r for r in params if r["name"] == "a")
    assert [source.leaf(r["id"]).shape for r in source.children(inner["id"])[0]] == [(3,)]
    keys = [d.key for d in fi.compare(insp, insp).ranked("variables")]
    assert sorted(keys) == ["params/a/b", "params/a\\/b"]
    assert [r["name"] for r in source.search("params/a\\/b")[0]] == ["params/a\\/b"]


class _Pair(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.variable("batch_stats", "n:1", jnp.zeros, ()).value += 1
        return nn.Dense(2, name="enc:dec")(x) + nn.Dense(2, name="enc")(x)


def test_module_named_with_a_colon_is_looked_up_patched_and_selected():
    model, x = _Pair(), jnp.ones((1, 3))
    variables = model.init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])(variables, x)
    call = insp.call("enc\\:dec:__call__")
    assert call.path == ("enc:dec",) and insp["enc\\:dec:__call__[0]"] is call.outputs[0]
    assert insp["params/enc\\:dec/kernel"].shape == (3, 2)
    assert DiffSource(insp).leaf("batch_stats/n\\:1").after.shape == ()
    keys = [c.key for c in fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"],
                                            capture_intermediates=C.paths("enc\\:dec"))(variables, x).calls]
    assert keys == ["enc\\:dec:__call__[0]"]
    patched = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"],
                               patches={"enc\\:dec:__call__": fi.zero})(variables, x)
    assert float(abs(patched["enc\\:dec:__call__"].value).max()) == 0.0
    assert float(abs(patched["enc:__call__"].value).max()) > 0.0


# -- terminal safety ------------------------------------------------------------
class _Inner(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "act" + EVIL, x)
        v = self.variable("batch_stats", "v" + EVIL, jnp.zeros, (2,))
        v.value = v.value + 1
        return nn.Dense(2, name="dense" + EVIL)(x), "text" + EVIL


_Inner.__name__ = _Inner.__qualname__ = "Inner" + EVIL


class _Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return _Inner(name="enc" + EVIL)(x)


_Outer.__name__ = _Outer.__qualname__ = "Outer" + EVIL


def _hostile_inspection():
    model, x = _Outer(), jnp.ones((1, 3))
    variables = dict(model.init(jax.random.key(0), x))
    variables["ckpt" + EVIL] = {"k" + EVIL: jnp.ones(2)}
    return fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])(variables, x)


def _assert_clean(text: str) -> None:
    bad = sorted({c for c in text if c != "\n" and safe(c) != c})
    assert not bad, f"raw control characters {bad!r} in {text[:200]!r}"


def test_text_repr_and_rich_views_escape_control_and_bidi_characters():
    insp = _hostile_inspection()
    text = str(insp)
    _assert_clean(text)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in text and "\\u202e" in text  # shown, escaped
    _assert_clean(repr(insp))
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor", width=300).print(insp)
    rendered = buf.getvalue()
    assert "\x1b[" in rendered  # rich's own styling is there...
    unstyled = re.sub(r"\x1b\[[0-9;]*m", "", rendered)
    _assert_clean(unstyled)  # ...and it is the only escape sequence
    assert "\\x1b[2J" in unstyled and "Inner\\x1b" in unstyled
    comparison = fi.compare(insp, insp, labels=("a" + EVIL, "b"))
    _assert_clean(str(comparison))
    _assert_clean(repr(comparison))


def test_error_messages_and_filter_reprs_escape_names():
    insp = _hostile_inspection()
    with pytest.raises(KeyError) as e:
        insp["nothing" + EVIL]
    _assert_clean(str(e.value))

    def boom(module, method):
        raise ValueError("bad" + EVIL)

    model, x = _Outer(), jnp.ones((1, 3))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(fi.CaptureFilterError) as e:
        fi.apply(lambda m, x: m(x), model, mutable=True, capture_intermediates=C.where(boom))(variables, x)
    _assert_clean(str(e.value))
    assert "bad\\x1b]52" in str(e.value)
    _assert_clean(repr(C.types(_Inner)))

"""An error raised by the user's model through inspector's entry points keeps flax's type, message
and frames, and shows none of inspector's own frames (``INSPECTOR_TRACEBACK_FILTERING=off`` keeps
them)."""

import json
import os
import subprocess
import sys
import textwrap
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi

PACKAGE = os.path.dirname(os.path.abspath(fi.__file__)) + os.sep

SCRIPT = textwrap.dedent("""
    import json, sys
    import flax.linen as nn, jax, jax.numpy as jnp
    import inspector as fi

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)  # USER FRAME

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Block()(x)

    model = Net()
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    x = jnp.ones((1, 5))  # the wrong shape
    try:
        model.apply(variables, x)
    except Exception as e:
        print(json.dumps([type(e).__module__ + "." + type(e).__qualname__, str(e)]), flush=True)
    fi.apply(lambda m, x: m(x), model)(variables, x)
""")


def _inspector_frames(lines):
    return [ln for ln in lines if ln.lstrip().startswith('File "')
            and os.path.abspath(ln.split('"')[1]).startswith(PACKAGE)]


def _run_script(tmp_path, **env):
    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 1, proc.stderr
    return path, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_an_error_in_the_model_shows_the_users_frames_and_flax_message_not_inspectors(tmp_path):
    path, (flax_type, flax_message), printed = _run_script(tmp_path, INSPECTOR_TRACEBACK_FILTERING="")
    lines = printed.splitlines()
    assert _inspector_frames(lines) == [], printed
    assert any(f'File "{path}"' in ln and "in __call__" in ln for ln in lines)  # the user's frames
    assert "# USER FRAME" in printed
    assert f"{flax_type}: {flax_message}" in lines, printed  # flax's own type and message
    assert "inspector: raised in module 'Block_0/Dense_0' (Dense), method '__call__'" in lines  # the note stays
    assert len(lines) < 30, printed  # flax's own is about 15 lines; it was 46


def test_in_ipython_too(tmp_path):
    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT)
    ipython = os.path.join(os.path.dirname(sys.executable), "ipython")
    if not os.path.exists(ipython):
        pytest.skip("no ipython")
    proc = subprocess.run([ipython, "--colors=NoColor", "--no-banner", "-c", f"%run {path}"], capture_output=True,
                          text=True, env={**os.environ, "INSPECTOR_TRACEBACK_FILTERING": ""}, timeout=300)
    printed = proc.stdout + proc.stderr
    assert "ScopeParamShapeError" in printed and f"File {path}:" in printed, printed
    assert PACKAGE not in printed, printed  # IPython hides flax's and jax's frames; inspector's are gone


def test_filtering_can_be_turned_off(tmp_path):
    _, (flax_type, flax_message), printed = _run_script(tmp_path, INSPECTOR_TRACEBACK_FILTERING="off")
    assert _inspector_frames(printed.splitlines()), printed
    assert f"{flax_type}: {flax_message}" in printed.splitlines()


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, (4, 3))
        return x @ w  # a TypeError from jax for the wrong shape


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(Block()(x))


def _frames(error):
    return [f.filename for f in traceback.extract_tb(error.__traceback__)]


@pytest.mark.parametrize("entry", ["apply", "init", "init_with_output", "inspect_apply", "inspect_init",
                                   "inspect_grad", "inspect", "Inspector.apply"])
def test_every_entry_point_hides_its_frames(entry):
    model = Net()
    v = model.init(jax.random.key(0), jnp.ones((1, 4)))
    x = jnp.ones((1, 5))
    fn = lambda m, x: m(x)
    call = {
        "apply": lambda: fi.apply(fn, model)(v, x),
        "init": lambda: fi.init(fn, model)(jax.random.key(0), x),
        "init_with_output": lambda: fi.init_with_output(fn, model)(jax.random.key(0), x),
        "inspect_apply": lambda: fi.inspect_apply(fn, model)(v, x),
        "inspect_init": lambda: fi.inspect_init(fn, model)(jax.random.key(0), x),
        "inspect_grad": lambda: fi.inspect_grad(lambda m, x: m(x).sum(), model)(v, x),
        "inspect": lambda: fi.inspect(model, v, x),
        "Inspector.apply": lambda: fi.Inspector(model).apply(v, x),
    }[entry]
    flax_call = (lambda: nn.init(fn, model)(jax.random.key(0), x)) if "init" in entry else (
        lambda: nn.apply(fn, model)(v, x))
    with pytest.raises(Exception) as theirs:
        flax_call()
    with pytest.raises(Exception) as ours:
        call()
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
    frames = _frames(ours.value)
    assert not [f for f in frames if f.startswith(PACKAGE)], frames
    assert frames[-1] == _frames(theirs.value)[-1]  # raised where flax raises it
    assert sum(f == __file__ for f in frames) >= 2  # the call here, and Block's line
    assert any("inspector: raised in module 'Block_0'" in n for n in ours.value.__notes__)


def test_a_raising_filter_and_its_cause_show_no_inspector_frame():
    model = Net()
    v = model.init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(fi.CaptureFilterError) as info:
        fi.apply(lambda m, x: m(x), model, capture_intermediates=fi.capture.where(lambda m, n: 1 / 0))(
            v, jnp.ones((1, 4)))
    cause = info.value.__cause__
    assert isinstance(cause, ZeroDivisionError)
    for e in (info.value, cause):
        assert not [f for f in _frames(e) if f.startswith(PACKAGE)], _frames(e)
    assert _frames(cause) == [__file__]  # the user's filter


def test_no_filtering_when_turned_off(monkeypatch):
    monkeypatch.setenv("INSPECTOR_TRACEBACK_FILTERING", "off")
    model = Net()
    v = model.init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(TypeError) as info:
        fi.apply(lambda m, x: m(x), model)(v, jnp.ones((1, 5)))
    assert [f for f in _frames(info.value) if f.startswith(PACKAGE)]

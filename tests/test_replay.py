"""``call.inputs`` and ``call.replay()``: oracles are flax itself (the recorded outputs, the submodule called
through flax directly) and numpy float64 statistics of the real inputs."""

from __future__ import annotations

import copy
import pickle
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import capture as C
from inspector.replay import ReplayError, arguments, computed_inputs
from models import ScanNet


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        h = nn.Dropout(0.5, deterministic=not train)(h)
        return nn.relu(h)


class Net(nn.Module):
    """A shared block called twice (call index 0 and 1 see different inputs and batch_stats), a conv, and
    a method other than ``__call__``."""

    def setup(self):
        self.conv = nn.Conv(8, (3,))
        self.block = Block()
        self.out = nn.Dense(3)

    def encode(self, x, train=False):
        h = self.conv(x[..., None]).mean(-1)
        return self.block(self.block(h, train), train)

    def __call__(self, x, train=False):
        return self.out(self.encode(x, train))


def _net():
    model = Net()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    variables = model.init(jax.random.key(0), x)
    return model, variables, x


def _inspect_train():
    model, v, x = _net()
    insp = fi.inspect(model, v, x, True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)},
                      capture_intermediates=C.calls | C.methods("encode"))
    return model, v, x, insp


def _y(result):
    return result[0] if isinstance(result, tuple) else result


def test_replay_of_every_call_equals_the_recorded_output():
    _, _, _, insp = _inspect_train()
    keys = [c.key for c in insp.calls]
    assert "block:__call__[1]" in keys and "/:encode[0]" in keys and "block/Dropout_0:__call__[1]" in keys
    for call in insp.calls:
        got = _y(call.replay())
        # the same operations on the same values: bitwise on the CPU (dropout draws the same mask); an
        # accelerator may fuse the layer differently alone than inside the model
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(np.asarray(got), np.asarray(call.outputs[0].value), err_msg=call.key)
        else:
            np.testing.assert_allclose(np.asarray(got), np.asarray(call.outputs[0].value), rtol=1e-5, atol=1e-5,
                                       err_msg=call.key)


def test_shared_block_calls_differ_and_batch_stats_follow_flax():
    model, v, x, insp = _inspect_train()
    first, second = insp.call("block:__call__[0]"), insp.call("block:__call__[1]")
    a0, a1 = first.inputs[0], second.inputs[0]
    assert not np.array_equal(a0.value, a1.value)
    y1, state1 = second.replay()
    # oracle: flax runs the model and we read its mutated batch_stats (two BN updates, the second from call 1)
    _, flax_state = model.apply(v, x, True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(state1["batch_stats"]["BatchNorm_0"]["mean"],
                               flax_state["batch_stats"]["block"]["BatchNorm_0"]["mean"], rtol=1e-6, atol=1e-7)
    # call 0's replay returns the state after one update only: different
    _, state0 = first.replay()
    assert not np.allclose(state0["batch_stats"]["BatchNorm_0"]["mean"], state1["batch_stats"]["BatchNorm_0"]["mean"])
    assert np.asarray(y1).shape == (4, 8)


def test_replay_equals_the_submodule_called_through_flax():
    model, v, x = _net()
    insp = fi.inspect(model, v, x, capture_intermediates=C.calls | C.methods("encode"))  # eval: no rngs
    call = insp.call("block:__call__[1]")
    (h, train), _ = arguments(call)
    assert train is False
    flax_y = model.bind(v).block(h, False)  # oracle: flax's own bound submodule
    np.testing.assert_allclose(call.replay(), flax_y, rtol=1e-6, atol=1e-6)
    enc = insp.call("/:encode[0]")
    np.testing.assert_allclose(enc.replay(), model.apply(v, x, method=Net.encode), rtol=1e-6, atol=1e-6)


def test_patched_params_and_inputs_change_only_that_layer():
    model, v, x = _net()
    insp = fi.inspect(model, v, x)
    call = insp.call("out:__call__[0]")
    (h,), _ = arguments(call)
    kernel = v["params"]["out"]["kernel"]
    new = {"kernel": kernel * 2.0, "bias": v["params"]["out"]["bias"]}
    expect = nn.Dense(3).apply({"params": new}, h)  # oracle: flax's Dense on the recorded input
    np.testing.assert_allclose(call.replay(params=new), expect, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(call.replay(inputs=h + 1.0), nn.Dense(3).apply({"params": v["params"]["out"]}, h + 1.0),
                               rtol=1e-6, atol=1e-6)


def test_replay_compiles_once_per_shape():
    model, v, x = _net()
    insp = fi.inspect(model, v, x)
    call = insp.call("out:__call__[0]")
    traces = []
    original = nn.Dense.__call__

    here = threading.get_ident()  # the inspection may still compile its run on a background thread

    def counting(self, *a, **k):
        if threading.get_ident() == here:
            traces.append(1)
        return original(self, *a, **k)

    (h,), _ = arguments(call)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nn.Dense, "__call__", counting)
        for scale in (1.0, 2.0, 3.0):
            call.replay(inputs=h * scale)
        assert len(traces) == 1
        call.replay(inputs=jnp.ones((2, 8)))
        assert len(traces) == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int32", "bool", "float64", "int64"])
def test_input_statistics_equal_numpy_float64(dtype):
    with jax.enable_x64(dtype.endswith("64")):  # 64-bit arrays under x64, beside a float32 one
        _check_input_statistics(dtype)


def _check_input_statistics(dtype):
    class Cast(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            return nn.Dense(2)(x.astype(jnp.float32) * mask)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(5, 4)) * 3, dtype=dtype) if dtype != "bool" else jnp.asarray(
        rng.normal(size=(5, 4)) > 0)
    mask = jnp.asarray([1.0, 0.0, 1.0, 1.0])
    model = Cast()
    v = model.init(jax.random.key(0), x, mask)
    insp = fi.inspect(model, v, x, mask=mask)
    (arg,) = [leaf for leaf in insp.call("/:__call__").inputs if leaf.path == ("args", "0")]
    (kw,) = [leaf for leaf in insp.call("/:__call__").inputs if leaf.path == ("kwargs", "mask")]
    assert arg.shape == (5, 4) and arg.dtype == dtype and kw.shape == (4,)
    a = np.asarray(x).astype(np.float64)
    s = arg.stats
    assert s.count == a.size and s.zeros == int((a == 0).sum())
    assert float(s.min) == a.min() and float(s.max) == a.max()
    assert s.mean == pytest.approx(a.mean(), rel=1e-6, abs=1e-9) and s.std == pytest.approx(a.std(), rel=1e-5, abs=1e-9)
    dense_in = insp.call("Dense_0:__call__").inputs[0]
    np.testing.assert_array_equal(dense_in.value, np.asarray(x).astype(np.float32) * np.asarray(mask))


def test_inputs_with_keep_stats_hold_no_arrays_and_replay_still_works():
    model, v, x = _net()
    insp = fi.inspect(model, v, x, keep="stats")
    call = insp.call("out:__call__[0]")
    leaf = call.inputs[0]
    assert leaf.stats is not None and leaf.handle is None and not leaf.kept
    np.testing.assert_allclose(call.replay(), model.apply(v, x), rtol=1e-6, atol=1e-6)


def test_static_arguments_are_listed_as_values():
    _, _, _, insp = _inspect_train()
    leaves = insp.call("block:__call__[0]").inputs
    assert [leaf.path for leaf in leaves] == [("args", "0"), ("args", "1")]
    assert leaves[1].opaque == "True"


def test_inputs_are_computed_once_for_every_call():
    model, v, x = _net()
    insp = fi.inspect(model, v, x)
    assert all(computed_inputs(c) is None for c in insp.calls)
    assert insp.calls[0].inputs
    assert all(computed_inputs(c) is not None for c in insp.calls)


def test_inside_scan_says_it_is_not_defined_and_the_scan_itself_replays():
    model, x = ScanNet(axes=("params", "intermediates")), jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    inner = insp.call("layers/Dense_0:__call__")  # stacked over the scan's steps
    with pytest.raises(ReplayError, match=r"layers/Dense_0:__call__\[0\].*inside a lifted transform"):
        inner.replay()
    with pytest.raises(ReplayError, match="lifted transform"):
        _ = inner.inputs
    root = insp.call("/:__call__")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), root.replay(),
                 model.apply(v, x))


def test_pickled_or_copied_inspection_says_nothing_was_kept():
    model, v, x = _net()
    insp = fi.inspect(model, v, x)
    call = pickle.loads(pickle.dumps(insp.call("out:__call__[0]")))  # no arrays or functions travel
    for ask in (call.replay, lambda: call.inputs):
        with pytest.raises(ReplayError, match=r"out:__call__\[0\] \(Dense, method '__call__'\).*not kept"):
            ask()
    copied = copy.deepcopy(insp).call("out:__call__[0]")  # a deep copy in this process keeps what re-running needs
    np.testing.assert_allclose(copied.replay(), model.apply(v, x), rtol=1e-6)
    assert copied.inputs[0].shape == (4, 8)


class TakesAFunction(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Applies()(x, jnp.tanh)


class Applies(nn.Module):
    @nn.compact
    def __call__(self, x, fn):
        return fn(nn.Dense(2)(x))


def test_a_call_whose_inputs_are_not_arrays():
    model, x = TakesAFunction(), jnp.ones((2, 3))
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    call = insp.call("Applies_0:__call__")
    assert call.inputs[1].opaque is not None and "tanh" in call.inputs[1].opaque
    with pytest.raises(ReplayError, match=r"Applies_0:__call__\[0\].*not arrays"):
        call.replay()


def test_sown_values_have_no_inputs():
    class Sows(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "h", x * 2)
            return x

    model, x = Sows(), jnp.ones(3)
    insp = fi.inspect(model, {}, x, capture_intermediates=True)
    sown = next(c for c in insp.calls if c.sown)
    with pytest.raises(ReplayError, match="sown"):
        sown.replay()


def test_init_inspection_records_inputs_but_does_not_replay():
    model, _, x = _net()
    insp = fi.inspect_init(lambda m, x: m(x), model, capture_intermediates=C.calls)(jax.random.key(0), x)
    call = insp.call("out:__call__[0]")
    assert call.inputs[0].shape == (4, 8)
    with pytest.raises(ReplayError, match="init"):
        call.replay()


# -- views: the inputs beside the outputs, once computed ------------------------------------
def _inputs_asked():
    from test_views import nan_inspection

    insp = nan_inspection()
    assert insp.calls[0].inputs  # computes every call's
    return insp


def test_inputs_text_golden():
    from test_views import check_golden, nan_inspection

    assert " in args/0: " not in nan_inspection().to_text(timings=False)  # a view never re-runs the model for them
    insp = _inputs_asked()
    text = insp.to_text(timings=False).replace(insp.device, "<device>")
    check_golden("lognet_inputs.txt", text)
    assert "    in args/0: float32[2,3] mean 1 std 0 [1, 1]" in text  # the model's input: ones((2, 3))


def test_every_line_with_inputs_is_in_rich_the_static_html_and_the_widget():
    from test_views import html_lines, rich_lines, text_blocks, widget_lines

    from inspector.views import html

    insp = _inputs_asked()
    text = [line.strip() for line in str(insp).splitlines()]
    assert sum(line.startswith("in args/0: ") for line in text) == len(insp.calls)
    assert [line for line in text if line not in rich_lines(insp)] == []
    assert [line for line in text if line not in html_lines(html.export(insp))] == []
    blocks, shown = text_blocks(insp), widget_lines(insp)
    assert [line for line in blocks["intermediates"] if line not in shown["intermediates"]] == []


def test_widget_shows_an_input_leaf_on_request():
    from inspector.views.inspection_sources import CallSource

    insp = _inputs_asked()
    source = CallSource(insp)
    rows, n = source.children("#2")
    assert n == 1 and rows[0]["name"] == "in args/0" and rows[0]["id"] == "#2/<in>/args/0"
    leaf = source.leaf("#2/<in>/args/0")
    assert leaf is insp.calls[2].inputs[0]
    assert source.label("#2/<in>/args/0") == "d3:__call__[0] input args/0"


def test_the_readme_section_runs_and_prints_what_it_says():
    import contextlib
    import io
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Replaying one call", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = out.getvalue().splitlines()
    said = [line.split("# ", 1)[1].split(":")[0] for line in block.splitlines()
            if line.startswith("print(") and "# " in line and "to_text" not in line]
    assert printed[:len(said)] == said
    assert all(line in printed for line in shown), [line for line in shown if line not in printed]


def test_inputs_of_a_patched_run_are_what_the_patch_passed_on():
    model, v, x = _net()
    insp = fi.inspect_apply(lambda m, x: m(x), model, patches={"block:__call__[1]": lambda y: y * 0})(v, x)
    out_in = insp.call("out:__call__[0]").inputs[0]
    assert out_in.stats.zeros == out_in.size == 32  # oracle: the patch zeroed block's second output
    np.testing.assert_array_equal(insp.call("out:__call__[0]").replay(), insp.call("out:__call__[0]").outputs[0].value)


def test_a_gradient_inspection_replays_its_forward_calls():
    from models import grad_inspection

    insp = grad_inspection()
    for call in insp.calls:  # root returns a tuple: a leaf per array
        got = jax.tree.leaves(call.replay())
        assert len(got) == len(call.outputs)
        for y, leaf in zip(got, call.outputs):
            np.testing.assert_allclose(np.asarray(y), leaf.value, rtol=1e-6, atol=1e-6, err_msg=call.key)
    assert insp.call("d2:__call__").inputs[0].shape == (2, 4)

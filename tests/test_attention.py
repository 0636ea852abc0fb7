"""``insp.attention()``: maps found where flax sows them (or named, with axes), checked against jax's own
``nn.dot_product_attention_weights``; per-head summaries against numpy float64; every view; the widget's tab."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from rich.console import Console
from scipy.special import xlogy
from synthetic import attention_inspection

import inspector as fi
from inspector.attention import AttentionMaps, row_sum_tolerance
from inspector.views import attention_html, attention_widget
from inspector.views.format import num
from inspector.views.widgets import InspectionWidget

GOLDEN = Path(__file__).parent / "golden"
TOKENS = ["<bos>", "the", "cat", "sat"]


class Block(nn.Module):
    heads: int = 2
    dtype: jnp.dtype = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2])) if self.causal else None
        attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=8, dtype=self.dtype, name="attn")
        return x + attn(x, mask=mask, sow_weights=True)


class Tiny(nn.Module):
    layers: int = 2
    dtype: jnp.dtype = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x):
        for i in range(self.layers):
            x = Block(dtype=self.dtype, causal=self.causal, name=f"block_{i}")(x)
        return x


def inspect_tiny(dtype=jnp.float32, causal=False, batch=2, seq=5, **kwargs):
    model = Tiny(dtype=dtype, causal=causal)
    x = jax.random.normal(jax.random.key(1), (batch, seq, 8))
    variables = model.init(jax.random.key(0), x)
    return fi.inspect(model, variables, x, **kwargs)


def entropy64(p):
    return float(np.mean(-xlogy(p, p).sum(-1)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_weights_equal_jax_attention_weights(dtype, causal):
    insp = inspect_tiny(dtype, causal)
    maps = insp.attention(batch=1)
    assert [layer.name for layer in maps.layers] == ["block_0/attn", "block_1/attn"]
    assert [layer.key for layer in maps.layers] == [f"block_{i}/attn:attention_weights[0]" for i in range(2)]
    assert maps.batch == 1 and maps.batch_size == 2 and (maps.queries, maps.keys) == (5, 5)
    for i, layer in enumerate(maps.layers):
        q = insp.call(f"block_{i}/attn/query:__call__").outputs[0].value  # what the module projected
        k = insp.call(f"block_{i}/attn/key:__call__").outputs[0].value
        mask = nn.make_causal_mask(jnp.ones((2, 5))) if causal else None
        expected = np.asarray(nn.dot_product_attention_weights(q, k, mask=mask, dtype=dtype))[1]
        assert layer.dtype == jnp.dtype(dtype).name and layer.weights.dtype == jnp.dtype(dtype)
        tol = {jnp.float32: 1e-6, jnp.bfloat16: 2 ** -7, jnp.float16: 2 ** -10}[dtype]
        np.testing.assert_allclose(layer.weights.astype(np.float64), expected.astype(np.float64), atol=tol)
        if causal:  # masked keys (after the query) hold zeros, and each row still sums to 1
            assert np.all(np.triu(layer.weights.astype(np.float64), 1) == 0)
        for h, s in enumerate(layer.heads):
            p = layer.weights[h].astype(np.float64)  # the stored values, in float64
            assert s.entropy == pytest.approx(entropy64(p), rel=1e-12, abs=1e-12)
            assert s.max_weight == float(p.max())
            assert s.first_token == pytest.approx(float(p[:, 0].mean()), rel=1e-12)
            assert s.row_sum_error == pytest.approx(float(np.abs(p.sum(-1) - 1).max()), abs=1e-15)
            assert s.rows_ok and s.flag == "" and s.nonfinite == 0


def test_minus_inf_before_softmax_gives_zeros_and_named_array_with_custom_axes():
    class Causal(nn.Module):
        @nn.compact
        def __call__(self, x):  # x: [batch, seq, 4]
            logits = jnp.einsum("bqd,bkd->bqk", x, x)[..., None] * jnp.arange(1.0, 4.0)  # [b, q, k, heads]
            causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, :, :, None]
            probs = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=2)
            self.sow("intermediates", "probs", probs)
            return probs.sum()

    x = jax.random.normal(jax.random.key(0), (2, 4, 4))
    insp = fi.inspect(Causal(), {}, x)
    with pytest.raises(fi.AttentionNotFoundError, match="sow_weights=True"):
        insp.attention()  # not flax's name: the default search does not find it
    with pytest.raises(ValueError, match="one letter per axis"):
        insp.attention(names=["probs"], axes="bqk")  # a 4-axis array: a letter for each axis
    maps = insp.attention(names=["probs"], axes=("batch", "query", "key", "head"), batch=1)
    (layer,) = maps.layers
    assert layer.weights.shape == (3, 4, 4)
    stored = np.asarray(insp.call("/:probs").outputs[0].value)
    np.testing.assert_array_equal(layer.weights, np.transpose(stored[1], (2, 0, 1)))
    assert np.all(np.triu(layer.weights, 1) == 0) and all(s.rows_ok for s in layer.heads)
    same = insp.attention(names=lambda call, leaf: call.method == "probs", axes="bqkh", batch=1)
    np.testing.assert_array_equal(same.layers[0].weights, layer.weights)


def test_planted_nan_and_bad_rows_are_flagged():
    insp = attention_inspection(layers=2, heads=3, seq=6)
    w = insp.calls[1].outputs[0].handle
    w[0, 2, 3, 1] = np.nan  # layer 1, head 2
    w[0, 0, 4, :] = 0.0  # layer 1, head 0: a row of zeros
    maps = insp.attention()
    heads = maps.layers[1].heads
    assert heads[2].nonfinite == 1 and not heads[2].rows_ok and "NaN" in heads[2].flag
    assert np.isnan(heads[2].entropy) and np.isnan(heads[2].max_weight)
    assert not heads[0].rows_ok and heads[0].row_sum_error == pytest.approx(1.0) and "rows sum" in heads[0].flag
    assert heads[1].rows_ok and all(s.rows_ok for s in maps.layers[0].heads)
    assert maps.flagged() == [("Block_1/attn", 0, heads[0].flag), ("Block_1/attn", 2, heads[2].flag)]
    text = maps.to_text()
    assert "!! 1 NaN/Inf" in text and "!! rows sum off by 1" in text
    thumb = attention_html.thumbnail(maps.layers[1].weights[2])
    assert thumb[3, 1] == attention_html.NAN_CODE and (thumb != attention_html.NAN_CODE).sum() == 35


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_summaries_equal_numpy_float64_per_dtype(dtype):
    insp = attention_inspection(layers=1, heads=4, seq=32, dtype=dtype, seed=3)
    maps = insp.attention()
    stored = insp.calls[0].outputs[0].handle[0]
    for h, s in enumerate(maps.layers[0].heads):
        p = stored[h].astype(np.float64)
        assert s.entropy == pytest.approx(entropy64(p), rel=1e-12)
        assert (s.max_weight, s.first_token) == (float(p.max()), pytest.approx(float(p[:, 0].mean()), rel=1e-12))
        assert s.rows_ok == (float(np.abs(p.sum(-1) - 1).max()) <= row_sum_tolerance(dtype))
        assert s.rows_ok  # rounding to bf16/f16 moves a row's sum less than the tolerance


def test_thumbnail_is_the_blockwise_max_in_8_bits():
    rng = np.random.default_rng(0)
    p = rng.random((128, 96)).astype(np.float32)
    thumb = attention_html.thumbnail(p)
    blocks = p.astype(np.float64).reshape(16, 8, 16, 6).max(axis=(1, 3))
    np.testing.assert_array_equal(thumb, np.rint(blocks * 254 / blocks.max()).astype(np.uint8))
    small = attention_html.thumbnail(p[:5, :7])  # under 16 a side: every cell kept
    assert small.shape == (5, 7)


def test_stats_only_and_nothing_found_errors():
    stats = inspect_tiny(keep="stats")
    with pytest.raises(fi.AttentionNotKeptError, match=r"keep='stats'.*keep='arrays'"):
        stats.attention()
    plain = fi.inspect(nn.Dense(3), nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2))), jnp.ones((1, 2)))
    with pytest.raises(fi.AttentionNotFoundError, match=r"searched sown 'attention_weights'.*sow_weights=True"):
        plain.attention()
    with pytest.raises(fi.AttentionNotFoundError, match=r"searched captured arrays named 'nope/\*'"):
        inspect_tiny().attention(names=["nope/*"])
    with pytest.raises(IndexError, match="batch=2"):
        inspect_tiny().attention(batch=2)
    with pytest.raises(ValueError, match="3 tokens"):
        inspect_tiny().attention(tokens=["a", "b", "c"])


def golden_maps() -> AttentionMaps:
    insp = attention_inspection(layers=2, heads=3, seq=4, batch=2, seed=0)
    insp.calls[1].outputs[0].handle[1, 2, 0, 3] = np.nan  # flagged: layer 1, head 2
    return insp.attention(batch=1, tokens=TOKENS)


def test_text_golden():
    text = golden_maps().to_text()
    path = GOLDEN / "attention.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), "attention.txt differs; rerun with UPDATE_GOLDEN=1 if intended"


def test_rich_and_html_show_every_text_line():
    maps = golden_maps()
    console = Console(width=200, record=True, color_system=None)
    console.print(maps)
    rich_text = console.export_text()
    page = maps.to_html()
    grid = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1))["grid"]
    for line in maps.to_text().splitlines():
        words = line.split()
        assert all(w in rich_text for w in words), line
    assert grid["header"] == maps.to_text().splitlines()[0]
    for layer, g in zip(maps.layers, grid["layers"]):
        for h, (s, cells) in enumerate(zip(layer.heads, g["heads"])):
            assert f"  {h}     {cells['entropy']}" in maps.to_text() or cells["entropy"] in maps.to_text()
            assert cells["max"] == num(s.max_weight)


def test_hostile_tokens_are_escaped():
    tokens = ["<script>alert(1)</script>", "\"q\"", "'s'", "&amp;"]
    maps = attention_inspection(layers=1, heads=2, seq=4).attention(tokens=tokens)
    text = maps.to_text()
    assert all(t in text for t in tokens)
    page = maps.to_html()
    assert "<script>alert" not in page and "</script>\"" not in page
    data = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["grid"]["tokens"] == tokens  # the page's data holds them intact, as JSON
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the <noscript> text view
    assert page.count("<script") == 2  # the data and the front end, nothing from a token


def test_widget_tab_first_paint_is_thumbnails_only_and_maps_on_request(monkeypatch):
    insp = attention_inspection()  # 12 layers x 12 heads x 128 x 128
    w = InspectionWidget(insp)
    assert w.attention_label == "Attention (12 layers)"
    state = {k: v for k, v in w.get_state().items() if k not in ("_esm", "_css")}  # the code, not data
    assert len(json.dumps(state, default=str)) < 20_000  # nothing of the maps is in the synced state
    sent = []
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append((content, buffers or [])))
    w._on_msg({"kind": "attention", "what": "grid", "view": "v"})
    (grid, buffers), = sent
    size = len(json.dumps(grid)) + sum(len(b) for b in buffers)
    assert size <= 150_000, size
    assert len(buffers[0]) == 12 * 12 * 16 * 16  # 8-bit thumbnails, no full map
    assert grid["grid"]["layers"][0]["th"] == 16
    assert all(c["what"] != "map" for c, _ in sent)
    w._on_msg({"kind": "attention", "what": "map", "view": "v", "layer": 7, "head": 5})
    content, (raw,) = sent[-1]
    assert (content["what"], content["layer"], content["head"], content["q"], content["k"]) == ("map", 7, 5, 128, 128)
    got = np.frombuffer(raw, "<f4").reshape(128, 128)
    np.testing.assert_array_equal(got, insp.calls[7].outputs[0].handle[0, 5])
    w.selected_tab = "attention"
    assert w.tab == "attention"


def test_widget_uses_the_last_asked_maps_and_no_tab_without_maps():
    insp = attention_inspection(layers=2, heads=2, seq=4)
    insp.attention(tokens=TOKENS)
    sent = []
    attention_widget.answer(insp, {"kind": "attention", "what": "grid", "view": "v"},
                            lambda content, buffers: sent.append(content))
    assert sent[0]["grid"]["tokens"] == TOKENS
    assert attention_widget.tab_label(inspect_tiny(keep="stats")) == ""
    plain = fi.inspect(nn.Dense(3), nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2))), jnp.ones((1, 2)))
    w = InspectionWidget(plain)
    assert w.attention_label == ""
    with pytest.raises(KeyError):
        w.selected_tab = "attention"


def test_bfloat16_map_bytes_are_float32_of_the_stored_values():
    insp = attention_inspection(layers=1, heads=2, seq=8, dtype="bfloat16")
    layer = insp.attention().layers[0]
    got = np.frombuffer(attention_html.map_bytes(layer, 1), "<f4").reshape(8, 8)
    np.testing.assert_array_equal(got, insp.calls[0].outputs[0].handle[0, 1].astype(np.float32))
    assert insp.calls[0].outputs[0].handle.dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("dtype", ["bool", "int32"])
def test_integer_and_bool_arrays_named_as_maps_are_summarised_and_flagged(dtype):
    insp = attention_inspection(layers=1, heads=2, seq=4)
    leaf = insp.calls[0].outputs[0]
    causal = np.broadcast_to(np.tril(np.ones((4, 4))), (1, 2, 4, 4)).astype(dtype)  # 0/1, rows sum to 1..4
    leaf.fetch, leaf.dtype = (lambda idx=None: causal if idx is None else causal[idx]), dtype
    layer = insp.attention(names=["Block_0/attn/attention_weights"]).layers[0]
    p = np.tril(np.ones((4, 4)))
    for s in layer.heads:
        assert (s.max_weight, s.first_token, s.entropy) == (1.0, 1.0, 0.0)  # 1 log 1 = 0 log 0 = 0
        assert s.row_sum_error == 3.0 and not s.rows_ok and "rows sum off by 3" in s.flag
    np.testing.assert_array_equal(layer.map(0), p.astype(np.float32))

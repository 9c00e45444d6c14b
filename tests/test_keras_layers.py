"""The Keras layer family, checked numerically with Keras and TF as the oracle: each layer's
weights (``layer.get_weights()`` under the weights' readable names) go through the ready rules
of :mod:`tf2pt.keras_rules`, :func:`tf2pt.plan.plan` and the writer's :func:`as_tensor` into a
torch module, whose output on random input must equal the Keras layer's (float32; 1e-5 of the
output's range). Keras 3 is TF 2.21's own; Keras 2 is ``tf_keras``."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from tf2pt import nn as tfnn
from tf2pt.errors import MappingError
from tf2pt.keras_rules import (Rules, keras_activation, keras_layer_rules, recurrent_module, tf1_cell_rules,
                               torch_kwargs)
from tf2pt.mapping import Fill, Mapping, Rename, Source, Target
from tf2pt.plan import plan
from tf2pt.read.base import Checkpoint, VariableInfo
from tf2pt.transforms import TRANSFORMS, dense_after_flatten, get_transform, tf1_lstm_bias
from tf2pt.write.tensors import Scratch, array_bytes, as_array, as_tensor, tensor_bytes

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="TensorFlow and Keras are the oracle")
keras = pytest.importorskip("keras", reason="Keras 3 is the oracle")
tf_keras = pytest.importorskip("tf_keras", reason="Keras 2 (tf_keras) is the oracle for Keras 2 layers")
tf.get_logger().setLevel("ERROR")

RNG = np.random.default_rng(2026)
pytestmark = [pytest.mark.tf,
              pytest.mark.filterwarnings("ignore:`tf.nn.rnn_cell.*is deprecated"),  # the TF1 cells are the point
              pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")]


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def assert_close(got, expected, tol=1e-5):
    """Within ``tol`` of the output's range: a wrong layout or gate order is off by O(range)."""
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    span = max(float(expected.max() - expected.min()), 1e-6)
    err = float(np.abs(got - expected).max())
    assert err <= tol * span, f"max error {err:.3g} > {tol} x range {span:.3g}"


class Arrays(Checkpoint):
    """An in-memory checkpoint of named arrays (what a Keras file reader lists)."""

    kind = "arrays"

    def __init__(self, arrays):
        super().__init__("<keras weights>")
        self.arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        self.variables = {k: VariableInfo(k, v.dtype.name, tuple(v.shape), v.nbytes, "inference", "test weight")
                          for k, v in self.arrays.items()}

    def read(self, name, check_crc=True):
        return self.arrays[name]


def keras_weights(*layers):
    """``{readable name: value}`` of Keras layers: Keras 3 names weights by ``path``
    (``dense/kernel``), Keras 2 by ``name`` (``dense/kernel:0``)."""
    out = {}
    for layer in layers:
        for w in layer.weights:
            name = getattr(w, "path", None) or w.name
            out[name] = np.array(w.numpy())
    assert out, "no weights"
    return out


def load(module, weights, rules: Rules):
    """Plan ``weights`` onto ``module`` with ``rules``, make every tensor as the writer does
    (torch and numpy bytes must agree), load them strictly; returns the plan's report."""
    ckpt = Arrays(weights)
    target = Target("t", "test module", lambda: module, list(rules.rename), list(rules.fill))
    mapping = Mapping("keras-test", "test", Source("test"), [target], ignore=())
    entries, report = plan(ckpt, mapping, target)
    assert report.ok, "\n".join(report.problems)
    state = {}
    for e in entries:
        state[e.key] = as_tensor(e, ckpt)
        made = as_array(e, ckpt, Scratch())
        if made is not None:
            assert bytes(array_bytes(made)) == bytes(tensor_bytes(state[e.key])), e.key
    module.load_state_dict(state, strict=True)
    module.eval()
    return report


def nhwc(x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def to_nhwc(y):
    return np.moveaxis(y.detach().numpy(), 1, -1)


def randomise(layer, scale=0.5):
    """Random, non-trivial weights (moving variance positive and != 1)."""
    values = []
    for w in layer.weights:
        v = rand(*w.shape, scale=scale)
        if "variance" in (getattr(w, "path", None) or w.name):
            v = np.abs(v) + 0.3
        values.append(v)
    layer.set_weights(values)


# -- dense, convolutions ------------------------------------------------------------------------

def test_dense():
    layer = keras.layers.Dense(5, name="dense_1")
    x = rand(4, 7)
    layer(x)
    randomise(layer)
    torch_layer = nn.Linear(7, 5)
    load(torch_layer, keras_weights(layer), keras_layer_rules("dense_1", "Dense", ""))
    assert_close(torch_layer(torch.from_numpy(x)), layer(x).numpy())


CONV = [(nd, k, s, p) for nd in (1, 2, 3) for k, s, p in [(3, 1, "same"), (3, 2, "same"), (2, 2, "valid"), (3, 1, "valid")]]


def _conv_module(cls_same, cls_plain, cin, cout, k, s, padding, **kw):
    if padding == "same":
        return cls_same(cin, cout, k, stride=s, **kw)
    return cls_plain(cin, cout, k, stride=s, **kw)


@pytest.mark.parametrize("nd,k,s,padding", CONV)
def test_conv(nd, k, s, padding):
    layer = getattr(keras.layers, f"Conv{nd}D")(4, k, strides=s, padding=padding, name="conv")
    x = rand(2, *([8] * nd), 3)
    layer(x)
    randomise(layer)
    m = _conv_module(getattr(tfnn, f"Conv{nd}dSame"), getattr(nn, f"Conv{nd}d"), 3, 4, k, s, padding)
    load(m, keras_weights(layer), keras_layer_rules("conv", f"Conv{nd}D", ""))
    assert_close(to_nhwc(m(nhwc(x))), layer(x).numpy())


@pytest.mark.parametrize("nd,k,s,padding", CONV)
def test_conv_transpose(nd, k, s, padding):
    layer = getattr(keras.layers, f"Conv{nd}DTranspose")(2, k, strides=s, padding=padding, name="deconv")
    x = rand(1, *([5] * nd), 3)
    layer(x)
    randomise(layer)
    m = _conv_module(getattr(tfnn, f"ConvTranspose{nd}dSame"), getattr(nn, f"ConvTranspose{nd}d"), 3, 2, k, s, padding)
    load(m, keras_weights(layer), keras_layer_rules("deconv", f"Conv{nd}DTranspose", ""))
    assert_close(to_nhwc(m(nhwc(x))), layer(x).numpy())


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("mult,s", [(1, 1), (2, 2), (3, 1)])
def test_depthwise_conv2d(keras_mod, mult, s):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    layer = K.layers.DepthwiseConv2D(3, strides=s, depth_multiplier=mult, padding="same", name="dw")
    x = rand(2, 8, 8, 4)
    layer(x)
    randomise(layer)
    m = tfnn.Conv2dSame(4, 4 * mult, 3, stride=s, groups=4)
    load(m, keras_weights(layer), keras_layer_rules("dw", "DepthwiseConv2D", ""))
    assert_close(to_nhwc(m(nhwc(x))), layer(x).numpy())


def test_depthwise_conv1d():
    layer = keras.layers.DepthwiseConv1D(3, depth_multiplier=2, padding="valid", name="dw1")
    x = rand(2, 9, 3)
    layer(x)
    randomise(layer)
    m = nn.Conv1d(3, 6, 3, groups=3)
    load(m, keras_weights(layer), keras_layer_rules("dw1", "DepthwiseConv1D", ""))
    assert_close(to_nhwc(m(nhwc(x))), layer(x).numpy())


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("nd,mult,padding,s", [(1, 2, "same", 1), (1, 1, "valid", 2), (2, 1, "same", 2), (2, 3, "valid", 1)])
def test_separable_conv(keras_mod, nd, mult, padding, s):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    layer = getattr(K.layers, f"SeparableConv{nd}D")(5, 3, strides=s, depth_multiplier=mult, padding=padding, name="sep")
    x = rand(2, *([8] * nd), 4)
    layer(x)
    randomise(layer)
    m = getattr(tfnn, f"SeparableConv{nd}d")(4, 5, 3, stride=s, padding=padding, depth_multiplier=mult)
    load(m, keras_weights(layer), keras_layer_rules("sep", f"SeparableConv{nd}D", ""))
    assert_close(to_nhwc(m(nhwc(x))), layer(x).numpy())


# -- normalisation, embedding -------------------------------------------------------------------

@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("epsilon,center,scale", [(None, True, True), (0.05, True, True), (1e-3, False, True),
                                                  (1e-3, True, False)])
def test_batch_normalization(keras_mod, epsilon, center, scale):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    kw = {} if epsilon is None else {"epsilon": epsilon}
    layer = K.layers.BatchNormalization(center=center, scale=scale, name="bn", **kw)
    x = rand(2, 5, 5, 6)
    layer(x)
    randomise(layer)
    config = layer.get_config()
    kwargs = torch_kwargs("BatchNormalization", config)
    assert kwargs["eps"] == (1e-3 if epsilon is None else epsilon)  # Keras' default, not torch's 1e-5
    m = nn.BatchNorm2d(6, **kwargs)
    report = load(m, keras_weights(layer), keras_layer_rules("bn", "BatchNormalization", "", config))
    assert {row["key"] for row in report.filled} == {"num_batches_tracked"} | ({"bias"} if not center else set()) | (
        {"weight"} if not scale else set())
    assert_close(to_nhwc(m(nhwc(x))), layer(x, training=False).numpy())


def test_batch_normalization_eps_matters():
    """torch's default eps (1e-5) against Keras' 1e-3 is visible with a small moving variance."""
    layer = keras.layers.BatchNormalization(name="bn")
    x = rand(2, 3, 3, 4)
    layer(x)
    g, b, mean, _ = (rand(4) for _ in range(4))
    layer.set_weights([g, b, mean, np.full(4, 1e-3, np.float32)])
    wrong = nn.BatchNorm2d(4)
    load(wrong, keras_weights(layer), keras_layer_rules("bn", "BatchNormalization", ""))
    with pytest.raises(AssertionError):
        assert_close(to_nhwc(wrong(nhwc(x))), layer(x, training=False).numpy())


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("epsilon", [None, 1e-2])
def test_layer_normalization(keras_mod, epsilon):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    layer = K.layers.LayerNormalization(name="ln", **({} if epsilon is None else {"epsilon": epsilon}))
    x = rand(3, 4, 6, scale=0.1) + rand(3, 4, 1)
    layer(x)
    randomise(layer)
    kwargs = torch_kwargs("LayerNormalization", layer.get_config(), input_rank=3)
    with pytest.raises(MappingError, match="normalises other axes"):
        torch_kwargs("LayerNormalization", {"axis": [1, 2]})
    m = nn.LayerNorm(6, **kwargs)
    load(m, keras_weights(layer), keras_layer_rules("ln", "LayerNormalization", "", layer.get_config()))
    assert_close(m(torch.from_numpy(x)), layer(x).numpy())


def test_embedding():
    layer = keras.layers.Embedding(11, 4, name="emb")
    ids = RNG.integers(0, 11, (3, 5)).astype(np.int32)
    layer(ids)
    randomise(layer)
    m = nn.Embedding(11, 4)
    load(m, keras_weights(layer), keras_layer_rules("emb", "Embedding", ""))
    assert_close(m(torch.from_numpy(ids.astype(np.int64))), layer(ids).numpy())


# -- Flatten -> Dense ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 5, 3), (6, 2), (2, 3, 4, 2)])
def test_dense_after_flatten_transform(shape):
    """The row permutation alone: Dense(flatten_NHWC(x)) == Linear(flatten_NCHW(x))."""
    x = rand(2, *shape)
    w = rand(int(np.prod(shape)), 3)
    expected = tf.linalg.matmul(tf.reshape(x, [2, -1]), w).numpy()
    t = get_transform("dense_after_flatten:" + "x".join(map(str, shape)))
    assert t is dense_after_flatten(*shape)
    assert t.out_shape(w.shape) == (3, w.shape[0])
    got = nn.Flatten()(nhwc(x)) @ torch.from_numpy(t(w)).T
    assert_close(got, expected)
    plain = nn.Flatten()(nhwc(x)) @ torch.from_numpy(w)  # without it, the order is wrong
    with pytest.raises(AssertionError):
        assert_close(plain, expected)


def test_dense_after_flatten_names_are_checked():
    with pytest.raises(MappingError, match="feature-map shape"):
        get_transform("dense_after_flatten:7by7")
    with pytest.raises(MappingError, match="feature-map shape"):
        get_transform("dense_after_flatten:0x3x2")
    with pytest.raises(ValueError, match="98 rows"):
        get_transform("dense_after_flatten:7x7x2").out_shape((97, 3))
    with pytest.raises(MappingError, match="parametrised: .*dense_after_flatten:ARG"):
        get_transform("dense_after_flattening:7x7x2")


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
def test_cnn_conv_bn_flatten_dense(keras_mod):
    """Conv2D(stride 2, padding='same') -> BN -> Flatten -> Dense in Keras, against a torch
    Sequential(Conv2dSame, BatchNorm2d, Flatten, Linear) loaded through the rules."""
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    L = K.layers
    inp = K.Input((8, 8, 3))
    conv = L.Conv2D(6, 3, strides=2, padding="same", name="conv2d")
    bn = L.BatchNormalization(epsilon=1e-2, name="batch_normalization")
    dense = L.Dense(5, name="dense_1")
    model = K.Model(inp, dense(L.Flatten()(bn(conv(inp)))))
    for layer in (conv, bn, dense):
        randomise(layer)
    torch_model = nn.Sequential(tfnn.Conv2dSame(3, 6, 3, stride=2), nn.BatchNorm2d(6, **torch_kwargs("BatchNormalization",
                                bn.get_config())), nn.Flatten(), nn.Linear(4 * 4 * 6, 5))
    rules = (keras_layer_rules("conv2d", "Conv2D", "0", conv.get_config())
             + keras_layer_rules("batch_normalization", "BatchNormalization", "1", bn.get_config())
             + keras_layer_rules("dense_1", "Dense", "3", dense.get_config(), feature_map=(4, 4, 6)))
    report = load(torch_model, keras_weights(conv, bn, dense), rules)
    assert any(row["transform"] == "dense_after_flatten:4x4x6" for row in report.mapped)
    x = rand(3, 8, 8, 3)
    assert_close(torch_model(nhwc(x)), model(x, training=False).numpy())


# -- recurrent layers ---------------------------------------------------------------------------

def _run_recurrent(layer, x, torch_module, rules):
    load(torch_module, keras_weights(layer), rules)
    out = torch_module(torch.from_numpy(x))[0]
    return out


def _keras_rnn(K, cls, units, x, **kw):
    layer = getattr(K.layers, cls)(units, return_sequences=True, name=cls.lower(), **kw)
    layer(x)
    randomise(layer)
    return layer


RNN_CASES = [
    ("LSTM", {}), ("LSTM", {"use_bias": False}), ("LSTM", {"activation": "relu"}),
    ("GRU", {}), ("GRU", {"reset_after": False}), ("GRU", {"use_bias": False}),
    ("GRU", {"recurrent_activation": "hard_sigmoid"}),
    ("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("SimpleRNN", {"activation": "sigmoid"}),
    ("LSTM", {"recurrent_activation": "hard_sigmoid"}),
]


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("cls,kw", RNN_CASES)
def test_recurrent(keras_mod, cls, kw):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    version = 3 if K is keras else 2
    x = rand(2, 6, 5)
    layer = _keras_rnn(K, cls, 4, x, **kw)
    config = layer.get_config()
    m = recurrent_module(cls, config, 5, keras_version=version)
    exact_in_torch = not kw or kw == {"use_bias": False} or (cls == "SimpleRNN" and kw.get("activation") == "relu")
    assert type(m).__module__.startswith("torch") == exact_in_torch, type(m)
    got = _run_recurrent(layer, x, m, keras_layer_rules(cls.lower(), cls, "", config))
    assert_close(got, layer(x).numpy())


@pytest.mark.parametrize("keras_mod", ["keras", "tf_keras"])
@pytest.mark.parametrize("inner,kw", [("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False}), ("SimpleRNN", {})])
def test_bidirectional(keras_mod, inner, kw):
    K = {"keras": keras, "tf_keras": tf_keras}[keras_mod]
    x = rand(2, 5, 3)
    layer = K.layers.Bidirectional(getattr(K.layers, inner)(4, return_sequences=True, **kw), name="bidirectional")
    layer(x)
    randomise(layer)
    config = layer.get_config()
    m = recurrent_module(inner, config["layer"], 3, bidirectional=True, keras_version=3 if K is keras else 2)
    got = _run_recurrent(layer, x, m, keras_layer_rules("bidirectional", "Bidirectional", "", config))
    assert_close(got, layer(x).numpy())


def test_hard_sigmoid_keras2_is_not_torchs():
    x = np.linspace(-4, 4, 81).astype(np.float32)
    keras2 = tf_keras.activations.hard_sigmoid(tf.constant(x)).numpy()
    keras3 = keras.activations.hard_sigmoid(x)
    keras3 = np.asarray(keras3)
    np.testing.assert_allclose(tfnn.KerasHardSigmoid()(torch.from_numpy(x)).numpy(), keras2, atol=1e-7, rtol=0)
    np.testing.assert_allclose(nn.Hardsigmoid()(torch.from_numpy(x)).numpy(), keras3, atol=1e-7, rtol=0)
    assert np.abs(keras2 - keras3).max() > 0.05
    assert keras_activation("hard_sigmoid", 2) == "keras2_hard_sigmoid"
    with pytest.raises(MappingError, match="Keras 2 and Keras 3 define differently"):
        keras_activation("hard_sigmoid")
    with pytest.raises(ValueError, match="ambiguous"):
        tfnn.LSTM(3, 4, recurrent_activation="hard_sigmoid")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_tf2pt_recurrent_modules_equal_torchs_with_torchs_activations(cls, bidirectional):
    """Same parameter names, same outputs (states given, unbatched input too) as nn.LSTM/GRU/RNN."""
    ours = getattr(tfnn, cls)(3, 4, bidirectional=bidirectional)
    theirs = getattr(nn, {"SimpleRNN": "RNN"}.get(cls, cls))(3, 4, bidirectional=bidirectional)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.from_numpy(rand(5, 2, 3))
    dirs = 2 if bidirectional else 1
    h0 = torch.from_numpy(rand(dirs, 2, 4))
    hx = (h0, torch.from_numpy(rand(dirs, 2, 4))) if cls == "LSTM" else h0
    for args in [(x,), (x, hx), (x[:, 0],)]:
        got, want = ours(*args), theirs(*args)
        assert_close(got[0], want[0].detach().numpy())
        for g, w in zip(*(s if isinstance(s, tuple) else (s,) for s in (got[1], want[1]))):
            assert_close(g, w.detach().numpy())


def test_torch_gru_cannot_do_reset_before():
    """Why tf2pt.nn.GRU exists: the same weights in nn.GRU differ from Keras' reset_after=False."""
    x = rand(2, 6, 5)
    layer = _keras_rnn(keras, "GRU", 4, x, reset_after=False)
    rules = keras_layer_rules("gru", "GRU", "", layer.get_config())
    wrong = nn.GRU(5, 4, batch_first=True)
    with pytest.raises(AssertionError):
        assert_close(_run_recurrent(layer, x, wrong, rules), layer(x).numpy())


def test_text_model_embedding_bilstm_gru_dense():
    """Embedding -> Bidirectional(LSTM) -> GRU -> Dense against nn.Embedding / nn.LSTM
    (bidirectional) / nn.GRU / nn.Linear."""
    L = keras.layers
    inp = keras.Input((7,), dtype="int32")
    emb = L.Embedding(20, 6, name="embedding")
    bi = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bidirectional")
    gru = L.GRU(4, name="gru")
    dense = L.Dense(3, name="dense")
    model = keras.Model(inp, dense(gru(bi(emb(inp)))))
    for layer in (emb, bi, gru, dense):
        randomise(layer)

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 6)
            self.lstm = recurrent_module("LSTM", bi.get_config()["layer"], 6, bidirectional=True)
            self.gru = recurrent_module("GRU", gru.get_config(), 10)
            self.dense = nn.Linear(4, 3)

        def forward(self, ids):
            y, _ = self.lstm(self.embedding(ids))
            _, h = self.gru(y)
            return self.dense(h[-1])

    m = Text()
    assert type(m.lstm) is nn.LSTM and type(m.gru) is nn.GRU
    rules = (keras_layer_rules("embedding", "Embedding", "embedding")
             + keras_layer_rules("bidirectional", "Bidirectional", "lstm", bi.get_config())
             + keras_layer_rules("gru", "GRU", "gru", gru.get_config())
             + keras_layer_rules("dense", "Dense", "dense"))
    load(m, keras_weights(emb, bi, gru, dense), rules)
    ids = RNG.integers(0, 20, (4, 7)).astype(np.int32)
    assert_close(m(torch.from_numpy(ids.astype(np.int64))), model(ids).numpy())


# -- TF1 cells ----------------------------------------------------------------------------------

def _tf1_run(make_cell, x, seed=0):
    """Run a TF1 cell over ``x`` with dynamic_rnn (graph mode) on random variable values;
    returns (outputs, {variable name: value})."""
    from tf_keras.src.layers.rnn import legacy_cells

    rng = np.random.default_rng(seed)
    g = tf.Graph()
    with g.as_default():
        xp = tf.compat.v1.placeholder(tf.float32, x.shape)
        out, _ = tf.compat.v1.nn.dynamic_rnn(make_cell(legacy_cells), xp, dtype=tf.float32)
        variables = tf.compat.v1.global_variables()
        values = {v.name[:-2]: (rng.standard_normal(v.shape) * 0.5).astype(np.float32) for v in variables}
        with tf.compat.v1.Session(graph=g) as sess:
            for v in variables:
                v.load(values[v.name[:-2]], sess)
            return sess.run(out, {xp: x}), values


@pytest.mark.parametrize("cell,forget_bias,num_proj", [("LSTMCell", 1.0, None), ("LSTMCell", 0.5, None),
                                                       ("LSTMCell", 1.0, 3), ("BasicLSTMCell", 1.0, None),
                                                       ("BasicLSTMCell", 2.5, None), ("BasicLSTMCell", 0.0, None)])
def test_tf1_lstm_cell_with_forget_bias_folded(cell, forget_bias, num_proj):
    x = rand(2, 6, 5)
    kw = {"forget_bias": forget_bias} | ({"num_proj": num_proj} if num_proj else {})
    expected, values = _tf1_run(lambda lc: getattr(lc, cell)(4, **kw), x)
    scope = "rnn/lstm_cell" if cell == "LSTMCell" else "rnn/basic_lstm_cell"
    m = nn.LSTM(5, 4, batch_first=True, proj_size=num_proj or 0)
    report = load(m, values, tf1_cell_rules(scope, cell, "", forget_bias=forget_bias, num_proj=num_proj))
    kernel_rows = [row for row in report.mapped if row["tf"] == f"{scope}/kernel"]
    assert sorted(row["key"] for row in kernel_rows) == ["weight_hh_l0", "weight_ih_l0"]  # one variable, two keys
    assert_close(m(torch.from_numpy(x))[0], expected)
    if forget_bias:  # without the fold (the stored bias as is) the output is wrong
        unfolded = nn.LSTM(5, 4, batch_first=True, proj_size=num_proj or 0)
        load(unfolded, values, tf1_cell_rules(scope, cell, "", forget_bias=0.0, num_proj=num_proj))
        with pytest.raises(AssertionError):
            assert_close(unfolded(torch.from_numpy(x))[0], expected)


def test_tf1_lstm_peepholes_are_left_unmapped_not_dropped():
    """torch's LSTM has no peepholes: their variables are problems of the plan, by name."""
    _, values = _tf1_run(lambda lc: lc.LSTMCell(4, use_peepholes=True), rand(2, 3, 5))
    rules = tf1_cell_rules("rnn/lstm_cell", "LSTMCell", "")
    _, report = _plan(values, list(rules.rename), rules.fill, module=nn.LSTM(5, 4))
    unmapped = sorted(re.search(r"'(.*?)'", p).group(1) for p in report.problems)
    assert unmapped == ["rnn/lstm_cell/w_f_diag", "rnn/lstm_cell/w_i_diag", "rnn/lstm_cell/w_o_diag"], report.problems


def test_tf1_lstm_bias_fold_is_exact():
    b = rand(8)
    t = tf1_lstm_bias(0.5)
    assert t is get_transform("tf1_lstm_bias:0.5") and get_transform("tf1_lstm_bias:1") is TRANSFORMS["tf1_lstm_bias"]
    i, j, f, o = np.split(b, 4)
    np.testing.assert_array_equal(t(b), np.concatenate([i, f + np.float32(0.5), j, o]))


def test_tf1_gru_cell():
    x = rand(2, 6, 5)
    expected, values = _tf1_run(lambda lc: lc.GRUCell(4), x)
    m = tfnn.TF1GRU(5, 4, batch_first=True)
    load(m, values, tf1_cell_rules("rnn/gru_cell", "GRUCell", ""))
    assert_close(m(torch.from_numpy(x))[0], expected)


def test_parts_go_through_the_safetensors_writer(tmp_path):
    """One variable feeding two keys (a TF1 kernel split, a GRU bias split) streams to
    safetensors as the two halves, equal to what the torch path makes."""
    from safetensors.numpy import load_file

    from tf2pt.write import write_entries

    x = rand(2, 4, 3)
    _, values = _tf1_run(lambda lc: lc.LSTMCell(2, forget_bias=0.5), x, seed=3)
    values["gru/gru_cell/kernel"], values["gru/gru_cell/recurrent_kernel"] = rand(2, 9), rand(3, 9)
    values["gru/gru_cell/bias"] = rand(2, 9)

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.gru = nn.LSTM(3, 2), nn.GRU(2, 3)

    module = Both()
    rules = tf1_cell_rules("rnn/lstm_cell", "LSTMCell", "lstm", forget_bias=0.5) + keras_layer_rules("gru", "GRU", "gru")
    ckpt = Arrays(values)
    target = Target("t", "test", lambda: module, list(rules.rename), list(rules.fill))
    entries, report = plan(ckpt, Mapping("m", "m", Source("t"), [target], ignore=()), target)
    assert report.ok, report.problems
    assert sum(e.source == "rnn/lstm_cell/kernel" for e in entries) == 2
    assert sum(e.source == "gru/gru_cell/bias" for e in entries) == 2
    assert "mapped:   5 TF variables -> 7 PyTorch keys" in report.summary()
    out = tmp_path / "x.safetensors"
    write_entries(ckpt, entries, out)
    written = load_file(str(out))
    assert set(written) == set(module.state_dict())
    for e in entries:
        np.testing.assert_array_equal(written[e.key], as_tensor(e, ckpt).numpy())
    kernel = values["rnn/lstm_cell/kernel"]  # [3 + 2, 8], i,j,f,o
    i, j, f, o = np.split(kernel[:3], 4, axis=1)
    np.testing.assert_array_equal(written["lstm.weight_ih_l0"], np.concatenate([i, f, j, o], axis=1).T)


# -- plan: one variable, several parts ----------------------------------------------------------

def _plan(weights, rename, fill=(), module=None):
    module = module or nn.GRU(3, 2)
    ckpt = Arrays(weights)
    target = Target("t", "test", lambda: module, rename, list(fill))
    return plan(ckpt, Mapping("m", "m", Source("t"), [target], ignore=()), target)


def test_a_part_left_untaken_is_a_problem():
    weights = {"gru/kernel": rand(3, 6), "gru/recurrent_kernel": rand(2, 6), "gru/bias": rand(2, 6)}
    base = [Rename("gru/kernel", "weight_ih_l0", "gru_kernel"), Rename("gru/recurrent_kernel", "weight_hh_l0", "gru_kernel")]
    _, report = _plan(weights, base + [Rename("gru/bias", "bias_ih_l0", "gru_bias_ih")], [Fill("bias_hh_l0", 0.0, "x")])
    assert any("take only part(s) ih" in p and "hh" in p for p in report.problems), report.problems
    _, report = _plan(weights, base + [Rename("gru/bias", "bias_ih_l0", "gru_bias_ih"),
                                       Rename("gru/bias", "bias_hh_l0", "gru_bias_ih")])
    assert any("overlapping" in p for p in report.problems), report.problems
    _, report = _plan(weights, base + [Rename("gru/bias", "bias_ih_l0", "gru_bias_ih"),
                                       Rename("gru/b.*", "bias_hh_l0", "identity")])
    assert any("matches 2 rename rules" in p for p in report.problems), report.problems
    _, report = _plan(weights, base + [Rename("gru/bias", "bias_ih_l0", "gru_bias_ih"),
                                       Rename("gru/bias", "bias_hh_l0", "gru_bias_hh")])
    assert report.ok, report.problems
    assert [row["key"] for row in report.mapped if row["tf"] == "gru/bias"] == ["bias_ih_l0", "bias_hh_l0"]


def test_a_reset_before_gru_bias_is_refused_by_reset_after_rules():
    weights = {"gru/gru_cell/kernel": rand(3, 6), "gru/gru_cell/recurrent_kernel": rand(2, 6), "gru/gru_cell/bias": rand(6)}
    rules = keras_layer_rules("gru", "GRU", "", {"reset_after": True})
    _, report = _plan(weights, list(rules.rename), rules.fill)
    assert any("reset_after GRU bias is [2, 3 * units]" in p for p in report.problems), report.problems


def test_keras_rules_refuse_what_torch_cannot_compute():
    with pytest.raises(MappingError, match="go_backwards"):
        keras_layer_rules("lstm", "LSTM", "", {"go_backwards": True})
    with pytest.raises(MappingError, match="merge_mode"):
        keras_layer_rules("bi", "Bidirectional", "", {"merge_mode": "sum", "layer": {"class_name": "LSTM", "config": {}}})
    with pytest.raises(MappingError, match="wrapped class"):
        keras_layer_rules("bi", "Bidirectional", "")
    with pytest.raises(MappingError, match="no ready rules"):
        keras_layer_rules("x", "Lambda", "")
    with pytest.raises(MappingError, match="rms_scaling"):
        keras_layer_rules("ln", "LayerNormalization", "", {"rms_scaling": True})


def test_rules_match_keras2_and_keras3_names_only():
    rules = keras_layer_rules("lstm", "LSTM", "rnn")
    names = {"lstm/lstm_cell/kernel": "rnn.weight_ih_l0", "lstm/lstm_cell/kernel:0": "rnn.weight_ih_l0",
             "lstm/kernel:0": "rnn.weight_ih_l0", "lstm/lstm_cell/recurrent_kernel": "rnn.weight_hh_l0",
             "lstm/cell/recurrent_kernel": "rnn.weight_hh_l0"}
    for name, key in names.items():
        hits = [r.key_for(m) for r in rules.rename for m in [r.match(name)] if m]
        assert hits == [key], name
    for name in ["lstm_1/lstm_cell/kernel", "lstm/lstm_cell/kernel_1", "x/lstm/lstm_cell/kernel", "lstm/other/kernel"]:
        assert not any(r.match(name) for r in rules.rename), name
    bi = keras_layer_rules("bidirectional", "Bidirectional", "", inner="GRU")
    for name, keys in {"bidirectional/forward_gru/gru_cell/bias": ["bias_ih_l0", "bias_hh_l0"],
                       "bidirectional/backward_layer/cell/bias:0": ["bias_ih_l0_reverse", "bias_hh_l0_reverse"],
                       "bidirectional/backward_gru/gru_cell/kernel": ["weight_ih_l0_reverse"]}.items():
        assert [r.key_for(m) for r in bi.rename for m in [r.match(name)] if m] == keys, name

"""tf2pt map on Keras files: the Keras fixtures (tf2pt.testing.keras_fixtures, written by real
Keras 3 and Keras 2 after one training step) mapped into plain PyTorch models written by "a
user" (tests/data/automap_keras_models.py) with no hand-written mapping. Each generated file
passes the checks every built-in mapping passes, and the model it fills computes what Keras'
``model.predict`` computes, within 1e-5 of the output's range.

The CNN's Dense after a Flatten is the case shape cannot settle: TF flattens the map
channels-last, ``nn.Flatten`` channels-first, and the kernel has the same shape either way. The
matcher finds the order by running the torch model (see tf2pt.automap.torchmodules.flatten_orders).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from conftest import DATA  # noqa: E402
from test_automap import assert_conforms  # noqa: E402
import tf2pt  # noqa: E402
from tf2pt.registry import load_file  # noqa: E402
from tf2pt.testing import keras_fixtures as kf  # noqa: E402

pytestmark = pytest.mark.tf

MODELS = DATA / "automap_keras_models.py"
FACTORY = {"cnn": "ConvNet", "sep": "SeparableNet", "rnn": "TextNet"}
#: every model as a Keras 3 .keras; the CNN and the separable model as Keras 2 full-model .h5;
#: the text model as a Keras 2 weights-only .h5 (no classes, no configs: shapes decide)
CASES = [("3", "cnn", "keras"), ("3", "sep", "keras"), ("3", "rnn", "keras"),
         ("2", "cnn", "h5"), ("2", "sep", "h5"), ("2", "rnn", "weights_h5")]


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """``get(case)`` -> (path, Keras' prediction on random inputs, the inputs): the file real
    Keras wrote after one training step, loaded back by that Keras, which predicts."""
    pytest.importorskip("tensorflow", reason="Keras writes the test files")
    base = tmp_path_factory.mktemp("automap_keras")
    cache = {}

    def get(case):
        if case not in cache:
            version, kind, fmt = case
            pytest.importorskip("tf_keras" if version == "2" else "keras", reason=f"Keras {version} is not installed")
            d = base / kf.case_id(case)
            d.mkdir()
            path = kf.write(d, kind, fmt, version)
            keras = kf.keras_module(version)
            if fmt == "weights_h5":
                model = kf.build(keras, kind, seed=99)
                model.load_weights(path)
            else:
                model = keras.models.load_model(path, compile=False)
            rng = np.random.default_rng(4321)
            x = (rng.integers(0, 11, (6, 5)).astype(np.int32) if kind == "rnn"
                 else rng.standard_normal((6, 8, 8, 2 if kind == "cnn" else 3)).astype(np.float32))
            cache[case] = (path, np.asarray(model.predict(x, batch_size=6, verbose=0)), x)
        return cache[case]

    return get


def torch_input(x):
    if x.dtype.kind == "i":
        return torch.from_numpy(x.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # NHWC -> NCHW


def assert_close(got, expected, tol=1e-5):
    got = got.detach().numpy()
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert span > 1e-3, "a degenerate output range proves nothing"
    err = float(np.abs(got - expected).max())
    assert err <= tol * span, f"max error {err:.3g} > {tol} x range {span:.3g}"


def forward(mapping_file, state):
    model = load_file(str(mapping_file)).default_target.build()
    model.load_state_dict(state, strict=True)
    return model.eval()


PLAIN = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Tanh, nn.ZeroPad2d, nn.Embedding, nn.LSTM, nn.GRU)


@pytest.mark.parametrize("case", CASES, ids=kf.case_id)
def test_keras_file_maps_into_a_plain_torch_model_that_equals_keras(case, keras_file, cli_run, tmp_path):
    from safetensors.torch import load_file as load_st

    version, kind, fmt = case
    path, expected, x = keras_file(case)
    out = tmp_path / f"{kind}_map.py"
    r = cli_run("map", path, "--model", f"{MODELS}:{FACTORY[kind]}", "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the model's order" in r.stderr and "execution order" in r.stderr
    text = out.read_text()
    assert "# ambiguous" not in text and "framework='Keras'" in text
    # the optimizer's state (one training step) is dropped as training-only; a weights-only file has none
    assert ("IGNORE = [TRAINING_ONLY]" in text) == (fmt != "weights_h5")
    assert_conforms(out, path)
    rows = {rule.key: (rule.pattern, rule.transform) for rule in load_file(str(out)).default_target.rename}
    if kind == "cnn":  # the Dense after Flatten: found by running the torch model
        assert rows["classifier.0.weight"][1] == "dense_after_flatten:4x4x4"
        assert rows["classifier.2.weight"][1] == "dense" and rows["conv.weight"][1] == "conv2d"
        assert "flatten: classifier.0 reads module norm's output [1, 4, 4, 4] flattened channels-first" in r.stderr
    elif kind == "sep":  # two depthwise kernels that both become [6, 1, 3, 3]: groups tell them apart
        # Keras 3 names a DepthwiseConv2D's kernel "kernel", Keras 2 "depthwise_kernel"
        assert rows["depthwise.weight"] == ("dw/kernel" if version == "3" else "dw/depthwise_kernel", "depthwise2d")
        assert rows["separable.weight"] == ("sep/depthwise_kernel", "depthwise2d")
        assert rows["pointwise.weight"] == ("sep/pointwise_kernel", "conv2d") and rows["pointwise.bias"][0] == "sep/bias"
    else:
        assert rows["gru.bias_ih_l0"][1] == "gru_bias_ih" and rows["gru.bias_hh_l0"][1] == "gru_bias_hh"
        assert rows["encoder.weight_ih_l0_reverse"][0].endswith("backward_lstm/lstm_cell/kernel")
        assert rows["encoder.weight_ih_l0"][1] == "dense"  # Keras' LSTM gates i,f,c,o are torch's i,f,g,o
        assert "token ids below 11" in r.stderr
    st = tmp_path / "x.safetensors"
    r = cli_run("convert", path, "--mapping", out, "-o", st)
    assert r.returncode == 0, r.stderr
    model = forward(out, load_st(st))
    assert all(isinstance(m, PLAIN) for m in model.modules() if not list(m.children())), list(model.modules())
    with torch.no_grad():
        assert_close(model(torch_input(x)), expected)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] != "weights_h5"], ids=kf.case_id)
def test_verify_with_model_runs_the_keras_file_through_keras(case, keras_file, cli_run, tmp_path):
    path, _, _ = keras_file(case)
    r = cli_run("verify", path, "--model", f"{MODELS}:{FACTORY[case[1]]}", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True and report["tf_side"] == "original-graph" and "ran the Keras model" in report["tf_side_reason"]
    assert all(o["max_abs_error"] <= o["atol"] for o in report["outputs"])


def test_convert_with_model_in_one_step(keras_file, cli_run, tmp_path):
    from safetensors.torch import load_file as load_st

    path, expected, x = keras_file(("3", "rnn", "keras"))
    out = tmp_path / "text.safetensors"
    r = cli_run("convert", path, "--model", f"{MODELS}:TextNet", "-o", out)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "text.mapping.py").exists() and "problems: 0" in r.stderr
    with torch.no_grad():
        assert_close(forward(tmp_path / "text.mapping.py", load_st(out))(torch_input(x)), expected)


def test_a_model_that_flattens_channels_last_takes_the_kernel_as_it_is(keras_file, tmp_path):
    path, expected, x = keras_file(("3", "cnn", "keras"))
    proposal = tf2pt.propose_mapping(path, f"{MODELS}:ConvNetChannelsLast")
    rows = {key: t for p in proposal.pairs for _, key, t in p.rows}
    assert rows["classifier.0.weight"] == "dense"
    assert "flattened channels-last" in proposal.summary()
    out = tmp_path / "m.py"
    out.write_text(proposal.render())
    state, _ = tf2pt.convert(path, mapping=str(out))
    with torch.no_grad():
        assert_close(forward(out, state)(torch_input(x)), expected)


def test_the_flatten_order_matters(keras_file, tmp_path):
    """The plain ``dense`` transform (the shape is the same) misses Keras: the running check is needed."""
    path, expected, x = keras_file(("3", "cnn", "keras"))
    out = tmp_path / "m.py"
    out.write_text(tf2pt.propose_mapping(path, f"{MODELS}:ConvNet").render().replace("'dense_after_flatten:4x4x4'",
                                                                                     "'dense'"))
    state, _ = tf2pt.convert(path, mapping=str(out))
    with torch.no_grad(), pytest.raises(AssertionError, match="max error"):
        assert_close(forward(out, state)(torch_input(x)), expected)


def test_a_unidirectional_lstm_is_named_as_the_first_point_of_departure(keras_file, cli_run, tmp_path):
    path, _, _ = keras_file(("3", "rnn", "keras"))
    model = tmp_path / "one_way.py"
    model.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = nn.Embedding(11, 4)\n"
        "        self.encoder = nn.LSTM(4, 3, batch_first=True)\n"
        "        self.gru = nn.GRU(3, 2, batch_first=True)\n"
        "        self.out = nn.Linear(2, 2)\n"
        "    def forward(self, ids):\n"
        "        h, _ = self.encoder(self.embed(ids))\n"
        "        return self.out(self.gru(h)[1][-1])\n")
    out = tmp_path / "m.py"
    r = cli_run("map", path, "--model", f"{model}:Net", "-o", out)
    assert r.returncode == 2 and not out.exists() and "Traceback" not in r.stderr
    assert ("TF layer bidirectional (lstm 4->3, bidirectional) has no counterpart; the model's next unmatched "
            "module is encoder (lstm 4->3)") in r.stderr


def test_a_reset_before_gru_does_not_take_a_reset_after_one(keras_file, cli_run, tmp_path):
    """Keras' default GRU (reset_after=True, a [2, 3u] bias) into tf2pt.nn.GRU(reset_after=False):
    the shapes could be made to fit, the computation could not; nothing is written."""
    path, _, _ = keras_file(("3", "rnn", "keras"))
    model = tmp_path / "reset_before.py"
    model.write_text(
        "from torch import nn\n"
        "from tf2pt.nn import GRU\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = nn.Embedding(11, 4)\n"
        "        self.encoder = nn.LSTM(4, 3, batch_first=True, bidirectional=True)\n"
        "        self.gru = GRU(6, 2, batch_first=True, reset_after=False)\n"
        "        self.out = nn.Linear(2, 2)\n"
        "    def forward(self, ids):\n"
        "        h, _ = self.encoder(self.embed(ids))\n"
        "        return self.out(self.gru(h)[1][-1])\n")
    out = tmp_path / "m.py"
    r = cli_run("map", path, "--model", f"{model}:Net", "-o", out)
    assert r.returncode == 2 and not out.exists()
    assert "TF layer gru (gru 6->2) has no counterpart; the model's next unmatched module is gru" in r.stderr

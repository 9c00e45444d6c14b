"""verify for Keras files (#14): a ``.keras`` or full-model ``.h5`` runs through Keras itself in
verify's TF child (Keras 3 with ``safe_mode``, or tf_keras for a file Keras 2 wrote), its inputs'
shapes and dtypes from the Keras model, every output compared; a weights-only file runs through
the mapping's ``keras_model`` or ``tf_reference``; a file holding Python code is refused before
any Keras sees it.

The fixtures are written by real Keras code here, with random weights (BatchNormalization's
moving mean away from 0, its variance away from 1); the mappings are small files as a user
would write them, with :func:`tf2pt.keras_rules.keras_layer_rules`."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "variance" in w.name:
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.standard_normal(shape) * 0.5
        w.assign(value.astype(np.float32))


def _keras(version):
    if version == "2":
        return pytest.importorskip("tf_keras")
    return pytest.importorskip("keras")


def _cnn(keras, seed=0):
    """Conv2D (stride 2, same), BatchNormalization, Flatten, Dense: NHWC (8, 8, 3) -> 5 logits."""
    inp = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn", epsilon=1e-3)(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inp, keras.layers.Dense(5, name="fc")(x), name="cnn")
    _randomize(model, seed)
    return model


def _text(keras, seed=1):
    """Embedding (13 ids), LSTM (sequences), GRU (last state), Dense: token ids of any length."""
    inp = keras.Input((None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(13, 4, name="embedding")(inp)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = keras.layers.GRU(3, name="gru")(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="dense")(x), name="text")
    _randomize(model, seed)
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """``get(model, fmt, version)`` -> path: the model saved by that Keras (built once)."""
    pytest.importorskip("tensorflow")
    base = tmp_path_factory.mktemp("keras_verify")
    cache = {}

    def get(kind, fmt, version="3"):
        key = (kind, fmt, version)
        if key not in cache:
            keras = _keras(version)
            model = {"cnn": _cnn, "text": _text}[kind](keras)
            d = base / f"{kind}-{fmt}-{version}"
            d.mkdir()
            path = str(d / {"keras": "model.keras", "h5": "model.h5", "weights": "model.weights.h5",
                            "weights_h5": "weights.h5"}[fmt])
            if fmt in ("keras", "h5"):
                model.save(path)
            else:
                model.save_weights(path)
            cache[key] = path
        return cache[key]

    return get


CNN_MAPPING = '''
from tf2pt.keras_rules import keras_layer_rules
from tf2pt.mapping import TRAINING_ONLY, Mapping, Source, Target, VerifySpec

EPS = {eps!r}


def build():
    from torch import nn

    from tf2pt.nn import Conv2dSame

    return nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.BatchNorm2d(4, eps=EPS), nn.Flatten(), nn.Linear(64, 5))


def tf_reference(variables, x):
    """The same forward in tf.nn ops, with the mapping's own epsilon; the Keras 3 file's weights
    by their stored names (layers/<class>/vars/<i>)."""
    import tensorflow as tf

    v = lambda layer, i: tf.constant(variables[f"layers/{{layer}}/vars/{{i}}"])
    y = tf.nn.conv2d(tf.constant(x), v("conv2d", 0), 2, "SAME") + v("conv2d", 1)
    bn = lambda i: v("batch_normalization", i)
    y = tf.nn.batch_normalization(y, bn(2), bn(3), bn(1), bn(0), EPS)
    y = tf.reshape(y, [y.shape[0], -1])
    return (tf.matmul(y, v("dense", 0)) + v("dense", 1)).numpy(), {{}}


def keras_model():
    """The architecture, in code (for weights-only files)."""
    import {keras} as keras

    inp = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn", epsilon=1e-3)(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inp, keras.layers.Dense(5, name="fc")(x))


RULES = (keras_layer_rules("conv", "Conv2D", "0", {{"strides": 2, "padding": "same"}})
         + keras_layer_rules("bn", "BatchNormalization", "1", {{"epsilon": EPS}})
         + keras_layer_rules("fc", "Dense", "3", feature_map=(4, 4, 4)))

MAPPING = Mapping(
    name="keras_cnn", description="Conv2D stride 2 same, BN, Flatten, Dense", source=Source(origin="a test"),
    targets=[Target("torch", "Sequential", build, RULES.rename, RULES.fill, layers={{"conv": "0", "bn": "1"}})],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec({verify}),
)
'''


def _cnn_mapping(tmp_path, eps=1e-3, verify="tf_reference=tf_reference", keras="keras"):
    path = tmp_path / f"cnn_mapping_{abs(hash((eps, verify, keras)))}.py"
    path.write_text(CNN_MAPPING.format(eps=eps, verify=verify, keras=keras))
    return str(path)


def _report(tmp_path):
    return json.loads((tmp_path / "r.json").read_text())


def test_a_keras_cnn_file_verifies_against_its_own_keras_model(tf, keras_files, tmp_path, cli_run):
    """The .keras file's model, loaded by Keras 3 with safe_mode, is the TF side; the mapping's
    tf_reference (on the file's weights as h5py reads them) agrees with it too."""
    path = keras_files("cnn", "keras")
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path), "--synthetic", "3", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "original-graph"
    assert "model.keras" in report["tf_side_reason"] and "keras.saving.load_model, safe_mode=True" in report["tf_side_reason"]
    assert report["inputs"] == {"images": {"shape": [3, 8, 8, 3], "dtype": "float32", "layout": "channels_last"}}
    (out,) = report["outputs"]
    assert out["name"] == "fc" and out["shape"] == [3, 5] and out["kind"] == "logits"
    assert out["top1_agreement"] == 1.0 and 0 < out["max_abs_error"] < 1e-4
    assert report["reference_vs_graph_max_abs"] < 1e-4
    assert report["signature"] == {"inputs": ["images"], "outputs": ["fc"]}
    assert "output fc: [3, 5] logits" in r.stdout and "voxels" not in r.stdout


def test_the_tf_side_is_the_keras_models_own_output(tf, keras_files, tmp_path, cli_run):
    """On an --input .npy, the TF output verify compared is what Keras itself predicts."""
    keras = _keras("3")
    path = keras_files("cnn", "keras")
    x = np.random.default_rng(7).standard_normal((2, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path), "--input", tmp_path / "x.npy", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    expected = keras.saving.load_model(path, compile=False).predict(x, verbose=0)
    out = _report(tmp_path)["outputs"][0]
    assert out["output_range"] == pytest.approx(float(np.ptp(expected)), rel=1e-6)
    assert out["shape"] == [2, 5]


@pytest.mark.parametrize("fmt,version,loader", [("h5", "3", "keras.saving.load_model (its HDF5 loader"),
                                                ("h5", "2", "tf_keras.models.load_model"),
                                                ("keras", "2", "tf_keras.models.load_model, safe_mode=True")])
def test_other_keras_files_run_through_the_keras_that_loads_them(fmt, version, loader, tf, keras_files, tmp_path,
                                                                 cli_run):
    """Keras 3's .h5 through Keras 3; Keras 2's .h5 and .keras through tf_keras (Keras 3 cannot
    load them: see tf2pt.verify.kerasside)."""
    path = keras_files("cnn", fmt, version)
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, verify=""), "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "original-graph" and loader in report["tf_side_reason"], report["tf_side_reason"]
    assert report["outputs"][0]["name"] == "fc" and report["outputs"][0]["top1_agreement"] == 1.0
    assert report["inputs"]["images"]["shape"] == [1, 8, 8, 3]


def test_a_wrong_bn_epsilon_fails_against_the_keras_model_though_its_reference_agrees(tf, keras_files, tmp_path,
                                                                                      cli_run):
    """The torch model and the tf_reference share the mistake (epsilon 0.1, Keras used 1e-3);
    verify runs the .keras file's own model, so the mistake is caught: exit 1."""
    path = keras_files("cnn", "keras")
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, eps=0.1), "--synthetic", "4", "--json", tmp_path / "r.json")
    assert r.returncode == 1, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "original-graph"
    out = report["outputs"][0]
    assert out["max_abs_error"] > out["atol"] and "max abs error" in report["reason"]
    assert report["reference_vs_graph_max_abs"] > out["atol"]  # the reference alone would have passed
    assert "FAILED" in r.stdout


def test_a_wrong_tf_output_names_the_closest_keras_outputs(tf, keras_files, tmp_path, cli_run):
    path = keras_files("cnn", "keras")
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path), "--tf-output", "fcc")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--tf-output 'fcc'" in line and "Keras model" in line and "closest: fc" in line, line
    assert "Traceback" not in r.stderr
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path), "--tf-output", "fc", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path), "--signature", "serving_default")
    assert r.returncode == 2 and "--signature applies to TF2 SavedModels" in r.stderr, r.stderr


def test_per_layer_names_the_first_keras_layer_that_diverges(tf, keras_files, tmp_path, cli_run):
    """--per-layer on a Keras file: the mapping's layers (Keras layer names, and the torch modules
    the target names for them) compared on the Keras model's own layer outputs, in TF's layout.
    With the wrong epsilon the convolution agrees and the BatchNormalization is the first to
    diverge."""
    path = keras_files("cnn", "keras")
    good = _cnn_mapping(tmp_path, verify='layers=("conv", "bn")')
    r = cli_run("verify", path, "-m", good, "--per-layer", "--synthetic", "2", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert [(row["layer"], row["module"], row["status"]) for row in report["per_layer"]] == [
        ("conv", "0", "ok"), ("bn", "1", "ok")]
    assert report["first_divergent_layer"] is None and "per layer" in r.stdout
    bad = _cnn_mapping(tmp_path, eps=0.1, verify='layers=("conv", "bn")')
    r = cli_run("verify", path, "-m", bad, "--per-layer", "--synthetic", "2", "--json", tmp_path / "bad.json")
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((tmp_path / "bad.json").read_text())
    assert [row["status"] for row in report["per_layer"]] == ["ok", "DIVERGES"]
    assert report["first_divergent_layer"] == "bn" and "first divergent layer: bn" in r.stdout
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, verify='layers=("conv", "bnn")'), "--per-layer")
    assert r.returncode == 2 and "no layer 'bnn'" in r.stderr and "closest: bn" in r.stderr, r.stderr


@pytest.mark.parametrize("structure", ["list", "dict"])
def test_a_keras_model_with_two_inputs_and_two_outputs_is_named_both_ways(structure, tf):
    """In-process (no child): the Keras model's inputs and outputs by name, list- or
    dict-structured, run and returned as Keras computes them."""
    keras = _keras("3")
    from tf2pt.verify.kerasside import KerasModel
    from tf2pt.verify.tfside import make_inputs

    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([a, b]))
    y, z = keras.layers.Dense(1, name="y")(h), keras.layers.Dense(2, name="z")(h)
    model = keras.Model([a, b], [y, z]) if structure == "list" else keras.Model({"a": a, "b": b}, {"y": y, "z": z})
    _randomize(model, 3)
    km = KerasModel(tf, model, path="m.keras", side="original-graph", reason="test")
    assert {k: (str(d), s) for k, (d, s) in km.inputs.items()} == {"a": ("float32", (None, 3)),
                                                                     "b": ("float32", (None, 2))}
    assert km.outputs == ["y", "z"]
    inputs = make_inputs(km, synthetic=[4])
    out = km(inputs)
    expected = model.predict([inputs["a"], inputs["b"]] if structure == "list" else inputs, verbose=0)
    expected = dict(zip(["y", "z"], expected)) if structure == "list" else expected
    for name in ("y", "z"):
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-5, atol=1e-6)
    assert out["z"].shape == (4, 2)


# ------------------------------------------------------------------------------------------------
# a text model: token ids
# ------------------------------------------------------------------------------------------------

TEXT_MAPPING = '''
from tf2pt.keras_rules import keras_layer_rules
from tf2pt.mapping import TRAINING_ONLY, Mapping, Source, Target, VerifySpec


def build():
    from torch import nn

    from tf2pt.keras_rules import recurrent_module

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(13, 4)
            self.lstm = recurrent_module("LSTM", {"units": 5}, 4)
            self.gru = recurrent_module("GRU", {"units": 3, "reset_after": True}, 5)
            self.dense = nn.Linear(3, 4)

        def forward(self, ids):
            y, _ = self.lstm(self.embedding(ids))
            y, _ = self.gru(y)
            return self.dense(y[:, -1])

    return Text()


RULES = (keras_layer_rules("embedding", "Embedding", "embedding")
         + keras_layer_rules("lstm", "LSTM", "lstm", {"units": 5})
         + keras_layer_rules("gru", "GRU", "gru", {"units": 3, "reset_after": True})
         + keras_layer_rules("dense", "Dense", "dense"))

MAPPING = Mapping(
    name="keras_text", description="Embedding, LSTM, GRU, Dense", source=Source(origin="a test"),
    targets=[Target("torch", "Text", build, RULES.rename, RULES.fill)],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec(),
)
'''


def test_a_keras_text_model_takes_token_ids(tf, keras_files, tmp_path, cli_run):
    """The input is the Keras model's: int32 ids of shape (None, None), the sizes from
    --synthetic, the ids drawn from [0, 13) (the Embedding's input_dim), passed as they are."""
    path = keras_files("text", "keras")
    mapping = tmp_path / "text_mapping.py"
    mapping.write_text(TEXT_MAPPING)
    r = cli_run("verify", path, "-m", mapping, "--synthetic", "3", "7", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "original-graph"
    assert report["inputs"] == {"ids": {"shape": [3, 7], "dtype": "int32", "layout": "none"}}
    low, high = report["input_values"]["ids"]
    assert 0 <= low and 2 < high <= 12  # the Embedding's whole range, not 0/1
    (out,) = report["outputs"]
    assert out["name"] == "dense" and out["shape"] == [3, 4] and out["top1_agreement"] == 1.0
    assert out["max_abs_error"] < 1e-4 * out["output_range"]


def test_the_synthetic_ids_cover_the_embedding(tf):
    """Unit: the bound of synthetic ids is the smallest Embedding input_dim (nested models too)."""
    keras = _keras("3")
    from tf2pt.verify.kerasside import embedding_high

    assert embedding_high(_text(keras)) == 13
    inner = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(9, 2)])
    outer_in = keras.Input((4,), dtype="int32")
    outer = keras.Model(outer_in, keras.layers.Embedding(30, 2)(outer_in) + inner(outer_in))
    assert embedding_high(outer) == 9
    assert embedding_high(_cnn(keras)) is None


# ------------------------------------------------------------------------------------------------
# files holding code: refused before Keras sees them
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2", "3"])
def test_an_h5_with_a_lambda_layer_is_refused_without_loading_it(version, tf, tmp_path, cli_run):
    """The Lambda's code writes a file when it runs (Keras runs it when it loads the model, as
    it rebuilds the graph): verify exits 2 with one line naming the file and the Lambda, and the
    code never runs."""
    keras = _keras(version)
    marker = tmp_path / "ran.txt"

    def touch(x, where=str(marker)):
        open(where, "w").close()
        return x

    inp = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Lambda(touch, name="evil")(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inp, keras.layers.Dense(5, name="fc")(x))
    path = str(tmp_path / "evil.h5")
    model.save(path)
    marker.unlink()
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, verify=""))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert path in lines[0] and "Lambda" in lines[0] and "'evil'" in lines[0], lines
    assert not marker.exists()


def test_tf_keras_is_not_let_import_a_module_a_config_names():
    """Unit: tf_keras imports any module a .keras config names; verify refuses one outside Keras."""
    from tf2pt.errors import UnsupportedError
    from tf2pt.verify.kerasside import check_modules

    ok = {"class_name": "Functional", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"kernel_initializer": {
            "module": "keras.initializers", "class_name": "GlorotUniform"}}}]}}
    check_modules(ok, "m.keras")
    bad = {"class_name": "Functional", "config": {"layers": [{"module": "os", "class_name": "system", "config": {}}]}}
    with pytest.raises(UnsupportedError, match="module 'os'"):
        check_modules(bad, "m.keras")


def test_a_keras2_file_without_tf_keras_runs_through_keras3_or_says_to_install_it(tf, keras_files, tmp_path,
                                                                                   run_cli):
    """With tf_keras absent, Keras 3 gets the Keras 2 .h5: the CNN it loads (the report notes
    it), the text model it cannot (an LSTM's time_major): one line with Keras 3's error, naming
    the package to install."""
    r = run_cli("verify", keras_files("cnn", "h5", "2"), "-m", _cnn_mapping(tmp_path, verify=""),
                "--json", tmp_path / "r.json", block=("tf_keras",))
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert "Keras 3" in report["tf_side_reason"] and any("tf_keras is not installed" in n for n in report["tf_notes"])
    mapping = tmp_path / "text_mapping.py"
    mapping.write_text(TEXT_MAPPING)
    r = run_cli("verify", keras_files("text", "h5", "2"), "-m", mapping, "--synthetic", "2", "5", block=("tf_keras",))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert "Keras 3 cannot load it" in lines[0] and "time_major" in lines[0], lines
    assert "pip install tf_keras" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------
# weights-only files: no architecture
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,version", [("weights", "3"), ("weights_h5", "2")])
def test_a_weights_only_file_runs_through_the_mappings_keras_model(fmt, version, tf, keras_files, tmp_path, cli_run):
    path = keras_files("cnn", fmt, version)
    mapping = _cnn_mapping(tmp_path, verify="keras_model=keras_model",
                           keras="tf_keras" if version == "2" else "keras")
    r = cli_run("verify", path, "-m", mapping, "--synthetic", "2", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "keras-model"
    assert "weights only" in report["tf_side_reason"] and "keras_model" in report["tf_side_reason"]
    assert report["inputs"]["images"]["shape"] == [2, 8, 8, 3] and report["outputs"][0]["top1_agreement"] == 1.0


def test_a_tf_checkpoint_without_a_graph_runs_through_the_mappings_keras_model(tf, tmp_path, cli_run):
    """tf_keras' save_weights in TF's format (a bundle, no .meta): the mapping's keras_model
    (a tf_keras model) loads it, and runs."""
    keras = _keras("2")
    prefix = str(tmp_path / "ckpt")
    _cnn(keras).save_weights(prefix)
    mapping = _cnn_mapping(tmp_path, verify="keras_model=keras_model", keras="tf_keras")
    r = cli_run("verify", prefix, "-m", mapping, "--synthetic", "2", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "keras-model" and "no graph next to the checkpoint" in report["tf_side_reason"]
    assert report["outputs"][0]["name"] == "fc" and report["outputs"][0]["top1_agreement"] == 1.0


def test_a_weights_only_file_runs_through_the_tf_reference_with_declared_inputs(tf, keras_files, tmp_path, cli_run):
    path = keras_files("cnn", "weights")
    verify = 'tf_reference=tf_reference, input_specs={"images": ((None, 8, 8, 3), "float32")}'
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, verify=verify), "--synthetic", "2",
                "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = _report(tmp_path)
    assert report["tf_side"] == "reference" and "tf_reference" in report["tf_side_reason"]
    assert report["outputs"][0]["max_abs_error"] < 1e-4 and report["reference_vs_graph_max_abs"] is None
    # with neither, there is nothing to run: one line, exit 2
    r = cli_run("verify", path, "-m", _cnn_mapping(tmp_path, verify=""))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "weights only" in r.stderr and "keras_model" in r.stderr and "Traceback" not in r.stderr

"""verify for any TF model (#14): TF2 SavedModels run through ``tf.saved_model.load`` and a
signature, inputs of any rank from the signature, every output compared with metrics that fit
it, and a TF2 SavedModel that could run file I/O refused before it is loaded."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

# ------------------------------------------------------------------------------------------------
# a Keras 2-D CNN, exported as a TF2 SavedModel
# ------------------------------------------------------------------------------------------------

CNN_MAPPING = '''
from tf2pt.mapping import TRAINING_ONLY, Fill, Ignore, Mapping, Rename, Source, Target, VerifySpec

EPS = {eps!r}


def build():
    from torch import nn

    from tf2pt.nn import Conv2dSame

    return nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.BatchNorm2d(4, eps=EPS), nn.Flatten(), nn.Linear(64, 5))


def tf_reference(variables, x):
    """The same forward in tf.nn ops, with the mapping's own epsilon."""
    import tensorflow as tf

    v = lambda i: tf.constant(variables[f"variables/{{i}}/.ATTRIBUTES/VARIABLE_VALUE"])
    y = tf.nn.conv2d(tf.constant(x), v(0), 2, "SAME") + v(1)
    y = tf.nn.batch_normalization(y, v(4), v(5), v(3), v(2), EPS)
    y = tf.reshape(y, [y.shape[0], -1])
    return (tf.matmul(y, v(6)) + v(7)).numpy(), {{}}


# Keras' export stores each variable under its object path ("variables/N" in the order of
# model.variables); the readable names (conv/kernel, bn/gamma, ...) are what `tf2pt inspect` shows
V = r"variables/{{}}/\\.ATTRIBUTES/VARIABLE_VALUE"
RULES = [Rename(V.format(0), "0.weight", "conv2d"), Rename(V.format(1), "0.bias"),
         Rename(V.format(2), "1.weight"), Rename(V.format(3), "1.bias"),
         Rename(V.format(4), "1.running_mean"), Rename(V.format(5), "1.running_var"),
         Rename(V.format(6), "3.weight", "dense_after_flatten:4x4x4"), Rename(V.format(7), "3.bias")]

MAPPING = Mapping(
    name="cnn2d", description="Conv2D stride 2 same, BN, Flatten, Dense", source=Source(origin="a test"),
    targets=[Target("torch", "Sequential", build, RULES,
                    fill=[Fill(r".*num_batches_tracked", 0, "not a TF variable")])],
    ignore=[TRAINING_ONLY, Ignore(r"_all_variables/.*", "the same variables, listed again by Keras' export")],
    verify=VerifySpec(tf_reference=tf_reference{kind}),
)
'''


def _mapping(tmp_path, eps=1e-3, kind=""):
    path = tmp_path / f"cnn_mapping_{str(eps).replace('.', '_').replace('-', '_')}.py"
    path.write_text(CNN_MAPPING.format(eps=eps, kind=kind))
    return str(path)


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory):
    """A Keras 3 CNN with random, non-trivial weights (moving variance != 1, mean != 0)."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    d = tmp_path_factory.mktemp("keras_cnn")
    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 3), name="images")  # named: Keras numbers unnamed inputs per process
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn", epsilon=1e-3)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(5, name="fc")(x))
    for w in model.weights:
        value = rng.standard_normal(w.shape).astype("float32")
        w.assign(np.abs(value) + 0.05 if "variance" in w.path else value)
    path = str(d / "cnn")
    model.export(path, verbose=False)
    return path


def test_a_keras_cnn_savedmodel_verifies_against_its_own_graph(tf, keras_cnn, tmp_path, cli_run):
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path), "--synthetic", "3", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tf_side"] == "original-graph" and "serving_default" in report["tf_side_reason"]
    (out,) = report["outputs"]
    assert out["shape"] == [3, 5] and out["kind"] == "logits" and out["kind_inferred"]
    assert out["top1_agreement"] == 1.0 and out["top5_agreement"] == 1.0 and out["rows"] == 3
    assert 0 < out["max_abs_error"] < 1e-4 and out["nonfinite"] == {"tf": 0, "torch": 0}
    assert report["inputs"]["images"] == {"shape": [3, 8, 8, 3], "dtype": "float32", "layout": "channels_last"}
    assert report["reference_vs_graph_max_abs"] < 1e-4  # the mapping's tf_reference agrees too
    assert "voxels" not in r.stdout and "top-1 agreement 100.00%" in r.stdout


def test_an_npy_input_is_what_both_sides_get(tf, keras_cnn, tmp_path, cli_run):
    x = np.random.default_rng(5).standard_normal((8, 8, 3)).astype(np.float32)  # no batch axis: added
    np.save(tmp_path / "x.npy", x)
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path), "--input", tmp_path / "x.npy", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["images"]["shape"] == [1, 8, 8, 3]
    # the TF output really is the graph's on that input
    expected = tf.saved_model.load(keras_cnn).signatures["serving_default"](images=tf.constant(x[None]))
    assert report["output_range"] == pytest.approx(float(np.ptp(expected["output_0"].numpy())), rel=1e-6)


def test_a_png_input_through_pillow(tf, keras_cnn, tmp_path, cli_run):
    PIL = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    PIL.fromarray(pixels).save(tmp_path / "x.png")
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path), "--input", tmp_path / "x.png", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    expected = tf.saved_model.load(keras_cnn).signatures["serving_default"](
        images=tf.constant(pixels[None].astype(np.float32)))["output_0"].numpy()
    assert report["output_range"] == pytest.approx(float(np.ptp(expected)), rel=1e-6)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path), "--input", tmp_path / "bad.png")
    assert r.returncode == 2 and "cannot read the image" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_wrong_bn_epsilon_fails_against_the_graph_though_its_reference_agrees(tf, keras_cnn, tmp_path, cli_run):
    """The mapping's torch model and its tf_reference share the mistake (epsilon 0.1, Keras
    used 1e-3); verify runs the SavedModel's own graph, so the mistake is caught: exit 1."""
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path, eps=0.1), "--json", tmp_path / "r.json")
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tf_side"] == "original-graph"
    out = report["outputs"][0]
    assert out["max_abs_error"] > out["atol"] and "max abs error" in report["reason"]
    # the hand-written reference forward agrees with torch: it would have passed
    assert report["reference_vs_graph_max_abs"] > out["atol"]
    assert "FAILED" in r.stdout


def test_a_wrong_output_or_signature_is_exit_2_naming_the_closest(tf, keras_cnn, tmp_path, cli_run):
    mapping = _mapping(tmp_path)
    r = cli_run("verify", keras_cnn, "-m", mapping, "--tf-output", "output_1")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--tf-output 'output_1'" in line and "closest: output_0" in line and "Traceback" not in r.stderr
    r = cli_run("verify", keras_cnn, "-m", mapping, "--signature", "serving")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--signature 'serving'" in line and "serve" in line and "serving_default" in line


def test_the_other_signature_runs_when_named(tf, keras_cnn, tmp_path, cli_run):
    r = cli_run("verify", keras_cnn, "-m", _mapping(tmp_path), "--signature", "serve", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["signature"]["name"] == "serve"


# ------------------------------------------------------------------------------------------------
# a tf.Module with two inputs and two outputs
# ------------------------------------------------------------------------------------------------

MODULE_MAPPING = '''
from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target, VerifySpec


def build():
    import torch
    from torch import nn

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4, 3))
            self.b = nn.Parameter(torch.zeros(3))
            self.v = nn.Parameter(torch.zeros(2, 3))

        def forward(self, a, b):  # the signature's inputs, sorted by name
            h = a @ self.w + self.b + b @ self.v
            return h, torch.tanh(h).sum(dim=1, keepdim=True)  # "logits", "score": sorted by name

    return Two()


MAPPING = Mapping(
    name="two", description="two inputs, two outputs", source=Source(origin="a test"),
    targets=[Target("torch", "Two", build, [Rename(r"(w|b|v)/\\.ATTRIBUTES/VARIABLE_VALUE", r"\\1")])],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec({verify}),
)
'''


def _two_mapping(tmp_path, verify=""):
    path = tmp_path / "two_mapping.py"
    path.write_text(MODULE_MAPPING.format(verify=verify))
    return str(path)


@pytest.fixture(scope="module")
def two_module(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)

    class Two(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(3).astype(np.float32))
            self.v = tf.Variable(rng.standard_normal((2, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, a, b):
            h = tf.matmul(a, self.w) + self.b + tf.matmul(b, self.v)
            return {"logits": h, "score": tf.reduce_sum(tf.tanh(h), axis=1, keepdims=True)}

    module = Two()
    path = str(tmp_path_factory.mktemp("two") / "two")
    tf.saved_model.save(module, path, signatures=module.__call__)
    return path


def test_a_module_with_two_inputs_and_two_outputs_compares_both(tf, two_module, tmp_path, cli_run):
    r = cli_run("verify", two_module, "-m", _two_mapping(tmp_path), "--synthetic", "6", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["signature"] == {"name": "serving_default", "inputs": ["a", "b"], "outputs": ["logits", "score"]}
    assert {k: v["shape"] for k, v in report["inputs"].items()} == {"a": [6, 4], "b": [6, 2]}
    assert all(v["layout"] == "none" for v in report["inputs"].values())
    logits, score = report["outputs"]
    assert (logits["name"], logits["kind"], logits["rows"]) == ("logits", "logits", 6)
    assert (score["name"], score["kind"], score["shape"]) == ("score", "regression", [6, 1])
    assert "top1_agreement" not in score and all(o["max_abs_error"] < 1e-5 for o in (logits, score))
    assert "output score: [6, 1] regression (inferred from its shape)" in r.stdout


def test_an_npz_gives_each_input_and_one_output_can_be_chosen(tf, two_module, tmp_path, cli_run):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "in.npz", a=rng.standard_normal((2, 4)).astype(np.float32),
             b=rng.standard_normal((2, 2)).astype(np.float32))
    mapping = _two_mapping(tmp_path, verify='outputs=["score", "logits"]')
    # the torch model returns (logits, score): naming the outputs in the other order must fail
    r = cli_run("verify", two_module, "-m", mapping, "--input", tmp_path / "in.npz")
    assert r.returncode == 2 and "output 'score'" in r.stderr and "differ in shape" in r.stderr, r.stdout + r.stderr
    r = cli_run("verify", two_module, "-m", _two_mapping(tmp_path), "--input", tmp_path / "in.npz",
                "--tf-output", "logits", "--tf-output", "score", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [o["name"] for o in report["outputs"]] == ["logits", "score"]
    assert report["inputs"]["a"]["shape"] == [2, 4]
    np.savez(tmp_path / "bad.npz", a=np.zeros((2, 4), np.float32), c=np.zeros((2, 2), np.float32))
    r = cli_run("verify", two_module, "-m", _two_mapping(tmp_path), "--input", tmp_path / "bad.npz")
    assert r.returncode == 2 and "not the signature's inputs" in r.stderr, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------
# a TF2 SavedModel that could touch files is refused before tf.saved_model.load sees it
# ------------------------------------------------------------------------------------------------


def _writing_module(tf, path, target, where):
    """``where``: "signature" (the served function writes a file) or "other" (a function the
    signature does not call, which tf.saved_model.load restores and a caller could run)."""

    class Evil(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(3)
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(3).astype(np.float32))
            self.v = tf.Variable(rng.standard_normal((2, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, a, b):
            h = tf.matmul(a, self.w) + self.b + tf.matmul(b, self.v)
            if where == "signature":
                tf.io.write_file(str(target), "pwned")
            return {"logits": h, "score": tf.reduce_sum(tf.tanh(h), axis=1, keepdims=True)}

    module = Evil()
    if where == "other":
        def side():
            tf.io.write_file(str(target), "pwned")
            return tf.constant(0)

        module.side = tf.function(side, input_signature=[])
        module.side.get_concrete_function()
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    return path


def _tamper_restore(path, target):
    """Add a WriteFile to TF's own restore function of the SavedModel, as a crafted file would."""
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as fh:
        sm.ParseFromString(fh.read())
    meta = sm.meta_graphs[0]
    restore = next(f for f in meta.graph_def.library.function if "traced_restore" in f.signature.name)
    const = restore.node_def.add()
    const.CopyFrom(node_def_pb2.NodeDef(name="evil_name", op="Const"))
    const.attr["dtype"].type = 7  # DT_STRING
    const.attr["value"].tensor.dtype = 7
    const.attr["value"].tensor.string_val.append(str(target).encode())
    write = restore.node_def.add()
    write.CopyFrom(node_def_pb2.NodeDef(name="evil_write", op="WriteFile", input=["evil_name:output:0", "evil_name:output:0"]))
    with open(pb, "wb") as fh:
        fh.write(sm.SerializeToString())


@pytest.mark.parametrize("where", ["signature", "other", "restore"])
def test_a_tf2_savedmodel_that_could_write_a_file_is_refused(where, tf, tmp_path, cli_run):
    target = tmp_path / "pwned.txt"
    path = str(tmp_path / "evil")
    _writing_module(tf, path, target, "none" if where == "restore" else where)
    if where == "restore":
        _tamper_restore(path, target)
    assert not target.exists()
    r = cli_run("verify", path, "-m", _two_mapping(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "WriteFile" in line and "Traceback" not in r.stderr, r.stderr
    if where == "restore":
        assert "save/restore function" in line
    assert not target.exists()


def test_tf_saved_model_load_never_runs_the_savedmodels_own_restore_function(tf, tmp_path, cli_run):
    """What docs/reliability.md says runs: with --trust-graph (no check), the WriteFile spliced
    into _traced_restore still does not run, because tf.saved_model.load restores the variables
    through TF's checkpoint reader, not through that function."""
    target = tmp_path / "pwned.txt"
    path = _writing_module(tf, str(tmp_path / "evil"), target, "none")
    _tamper_restore(path, target)
    r = cli_run("verify", path, "-m", _two_mapping(tmp_path), "--trust-graph")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not target.exists()


def test_the_clean_module_of_the_same_shape_passes(tf, tmp_path, cli_run):
    path = _writing_module(tf, str(tmp_path / "clean"), tmp_path / "never", "none")
    r = cli_run("verify", path, "-m", _two_mapping(tmp_path), "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    notes = json.loads((tmp_path / "r.json").read_text())["tf_notes"]
    assert any("save/restore functions" in n and "traced_restore" in n for n in notes), notes


# ------------------------------------------------------------------------------------------------
# no TensorFlow needed
# ------------------------------------------------------------------------------------------------


def test_metrics_fit_the_output():
    from tf2pt.verify.compare import compare_output, infer_kind

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10))
    assert infer_kind(logits) == "logits"
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert infer_kind(probs) == "probabilities"
    assert infer_kind(rng.standard_normal((2, 8, 8, 3))) == "segmentation"
    assert infer_kind(rng.standard_normal((4, 1))) == "regression"
    swapped = logits.copy()
    order = np.argsort(-logits[0])
    swapped[0, order[3]], swapped[0, order[7]] = logits[0, order[7]], logits[0, order[3]]  # 4th and 8th swap
    m = compare_output("y", logits, swapped)
    assert m["top1_agreement"] == 1.0 and m["top5_agreement"] == 0.75 and m["max_abs_error"] > 0
    seg = rng.standard_normal((1, 4, 4, 3))
    other = seg.copy()
    other[0, 0, 0] = seg[0, 0, 0][::-1] * 10  # one voxel's label changes
    m = compare_output("seg", seg, other)
    assert m["voxels"] == 16 and m["label_agreement"] == pytest.approx(15 / 16) and m["dice_min"] < 1
    emb = compare_output("e", logits, logits * 2, "embedding")
    assert emb["min_cosine_similarity"] == pytest.approx(1.0) and emb["max_abs_error"] > 0
    m = compare_output("n", logits, np.where(logits > 1, np.nan, logits))
    assert m["nonfinite"]["torch"] == int((logits > 1).sum()) > 0 and m["max_abs_error"] == float("inf")


def test_synthetic_sizes_fill_the_unknown_dimensions():
    from tf2pt.errors import InputError
    from tf2pt.verify.tfside import fill_shape

    assert fill_shape((None, None, 3), [16], "x") == (1, 16, 3)
    assert fill_shape((None, None, 3), [2, 16], "x") == (2, 16, 3)
    assert fill_shape((None, 8, 8, 3), None, "x") == (1, 8, 8, 3)
    with pytest.raises(InputError, match="unknown size"):
        fill_shape((None, None, None, 3), [4], "x")


def test_the_tf_side_variables_are_a_read_only_mapping(tf, tmp_path):
    from tf2pt.verify.tfside import TFVariables

    ckpt = tf.train.Checkpoint(a=tf.Variable([1.0, 2.0]), b=tf.Variable(3))
    prefix = ckpt.write(str(tmp_path / "ck"))
    v = TFVariables(tf, prefix)
    names = list(v)
    assert names == sorted(names) and "a/.ATTRIBUTES/VARIABLE_VALUE" in names and len(v) == len(names)
    assert set(v.keys()) == set(names) and dict(v.items())["b/.ATTRIBUTES/VARIABLE_VALUE"] == 3
    np.testing.assert_array_equal(v["a/.ATTRIBUTES/VARIABLE_VALUE"], [1.0, 2.0])
    with pytest.raises(KeyError, match="closest"):
        v["a/.ATTRIBUTES/VARIABLE"]
    with pytest.raises(TypeError):
        v["a"] = 1  # read-only
    assert v.get("missing") is None


TOKENS_MAPPING = '''
from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target, VerifySpec


def build():
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(7, 4)
            self.fc = nn.Linear(4, 3)

        def forward(self, ids):
            return self.fc(self.embedding(ids).mean(dim=1))

    return Bag()


MAPPING = Mapping(
    name="bag", description="token ids -> embedding bag -> dense", source=Source(origin="a test"),
    targets=[Target("torch", "Bag", build, [
        Rename(r"table/\\.ATTRIBUTES/VARIABLE_VALUE", "embedding.weight"),
        Rename(r"kernel/\\.ATTRIBUTES/VARIABLE_VALUE", "fc.weight", "dense"),
        Rename(r"bias/\\.ATTRIBUTES/VARIABLE_VALUE", "fc.bias")])],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec(int_high=7),
)
'''


def test_token_ids_of_any_length(tf, tmp_path, cli_run):
    """An int32 (None, None) input: token ids drawn from [0, int_high), passed as they are."""
    rng = np.random.default_rng(4)

    class Bag(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable(rng.standard_normal((7, 4)).astype(np.float32))
            self.kernel = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))
            self.bias = tf.Variable(rng.standard_normal(3).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
        def __call__(self, ids):
            return {"logits": tf.matmul(tf.reduce_mean(tf.gather(self.table, ids), axis=1), self.kernel) + self.bias}

    module = Bag()
    path = str(tmp_path / "bag")
    tf.saved_model.save(module, path, signatures=module.__call__)
    mapping = tmp_path / "bag_mapping.py"
    mapping.write_text(TOKENS_MAPPING)
    r = cli_run("verify", path, "-m", mapping, "--synthetic", "2", "9", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["ids"] == {"shape": [2, 9], "dtype": "int32", "layout": "none"}
    assert report["outputs"][0]["kind"] == "logits" and report["outputs"][0]["top1_agreement"] == 1.0
    r = cli_run("verify", path, "-m", mapping, "--synthetic", "2", "9", "4")
    assert r.returncode == 2 and "unknown size" in r.stderr, r.stdout + r.stderr


CONV_MAPPING = '''
from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target, VerifySpec


def build():
    from torch import nn

    return nn.Conv{d}d(3, 2, 3, padding=1)


MAPPING = Mapping(
    name="conv{d}", description="one SAME convolution", source=Source(origin="a test"),
    targets=[Target("torch", "Conv", build, [Rename(r"w/\\.ATTRIBUTES/VARIABLE_VALUE", "weight", "conv"),
                                             Rename(r"b/\\.ATTRIBUTES/VARIABLE_VALUE", "bias")])],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec(),
)
'''


@pytest.mark.parametrize("d", [1, 2, 3])
def test_the_layout_bridge_for_1d_2d_3d_outputs(d, tf, tmp_path, cli_run):
    """Channels-last in TF, channels-first in torch, both ways: inputs and outputs of rank 3-5."""
    rng = np.random.default_rng(d)

    class Conv(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((3,) * d + (3, 2)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(2).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None] * (d + 1) + [3], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.nn.convolution(x, self.w, padding="SAME") + self.b}

    module = Conv()
    path = str(tmp_path / "conv")
    tf.saved_model.save(module, path, signatures=module.__call__)
    mapping = tmp_path / f"conv{d}_mapping.py"
    mapping.write_text(CONV_MAPPING.format(d=d))
    sizes = [5, 6, 4][:d]
    r = cli_run("verify", path, "-m", mapping, "--synthetic", *sizes, "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["x"] == {"shape": [1, *sizes, 3], "dtype": "float32", "layout": "channels_last"}
    (out,) = report["outputs"]
    assert out["shape"] == [1, *sizes, 2] and out["max_abs_error"] < 1e-5
    if d == 1:
        assert out["kind"] == "regression" and "voxels" not in r.stdout
    else:
        assert out["kind"] == "segmentation" and out["voxels"] == int(np.prod(sizes)) and out["label_agreement"] == 1.0


def test_tf1_and_tf2_savedmodels_are_told_apart_without_tensorflow(tf, two_module, keras_cnn, tmp_path):
    """From the proto, by tf2pt's own decoder: a TF1 SavedModelBuilder's keeps the TF1 path."""
    from test_graph_safety import _savedmodel

    from tf2pt.verify.run import is_tf2_savedmodel
    from tf2pt.verify.savedmodel import savedmodel_version

    tf1 = _savedmodel(tf, str(tmp_path), tmp_path / "never")
    assert savedmodel_version(tf1) == "tf1" and not is_tf2_savedmodel(tf1)
    assert savedmodel_version(two_module) == "tf2" and savedmodel_version(keras_cnn) == "tf2"
    assert is_tf2_savedmodel(os.path.join(keras_cnn, "saved_model.pb"))


def test_a_single_value_output_is_held_to_its_magnitude_not_to_a_zero_range():
    from tf2pt.mapping import VerifySpec
    from tf2pt.verify.compare import compare_output
    from tf2pt.verify.run import _atol

    m = compare_output("score", np.array([[1.5]], np.float32), np.array([[1.5000002]], np.float32))
    assert m["output_range"] == 0 and m["max_abs_error"] > 0
    atol, rule = _atol(None, VerifySpec(), m)
    assert atol == pytest.approx(1.5e-4) and "max |TF output|" in rule and m["max_abs_error"] <= atol
    assert _atol(None, VerifySpec(), {"output_range": 2.0, "output_scale": 9.0})[0] == pytest.approx(2e-4)

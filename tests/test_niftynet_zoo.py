"""The NiftyNet network zoo, checked against NiftyNet 0.6.0's own network code.

Each architecture: NiftyNet's real network (``niftynet.network.*`` under the shims of
``tf2pt.testing.niftynet_zoo``) is built, trained for a step (Adam, zero-debiased BN moving
averages, an EMA of the weights), given random non-trivial inference values and saved with its
inference graph; the checkpoint is converted with TensorFlow blocked; NiftyNet's graph runs once
on a non-cubic volume (``--save-reference``, per layer), and the converted model is compared
with it: max abs error <= 1e-5 x the output range, every label equal, every layer in tolerance.
A deliberately broken mapping (tests/data/wrong_<name>.py) fails against the same reference at
the layer it breaks.

Needs NiftyNet (``pip install --no-deps niftynet==0.6.0``); skips cleanly without it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA
from tf2pt import registry

from tf2pt.testing.niftynet_zoo import niftynet_available

if not niftynet_available():  # not importorskip: niftynet/__init__.py imports its TF 1 engine
    pytest.skip("NiftyNet 0.6.0 is not installed (pip install --no-deps niftynet==0.6.0)", allow_module_level=True)

SIZE = (40, 48, 56)  # not a cube: the volume verify is given
VNET_SIZE = (32, 48, 48)  # SIZE brought to VNet's multiple of 16 by verify (centre crop)
UNET_SIZE = (96, 96, 104)  # UNet3D's smallest useful input, not a cube

#: architecture -> (writer arguments, the layer its broken mapping breaks). The writer's
#: input_shape is the size verify feeds (NiftyNet's graphs have static sizes).
ZOO = {
    # PReLU: NiftyNet names its slopes <layer>/prelu_acti_/alpha
    "highres3dnet_small": (dict(input_shape=SIZE, train_shape=(8, 8, 8), acti_func="prelu"), "deconv"),
    "highres3dnet_large": (dict(input_shape=SIZE, train_shape=(8, 8, 8)), "conv_2"),
    # the learned spatial prior on: it adds a resize and a log to the default network
    "dense_vnet": (dict(input_shape=SIZE, train_shape=(8, 8, 8), hyperparams={"use_prior": True}), "block_1_skip"),
    # PReLU, and n_features 4..64 instead of NiftyNet's 16..256 (70M parameters, 1.1 GB with Adam + EMA)
    "vnet": (dict(input_shape=VNET_SIZE, train_shape=(16, 16, 16), acti_func="prelu",
                  attributes={"n_features": [4, 8, 16, 32, 64]}), "L3"),
    # UNet3D needs 89+ voxels (96: the output is 8 after the 44-voxel crops), and with NiftyNet's
    # n_features (32..512) a forward takes ~90 s here and training > 20 GB: narrower channels, and
    # the training variables are created without running a step
    "unet": (dict(input_shape=UNET_SIZE, train_shape=(96, 96, 96), train_steps=0,
                  attributes={"n_features": [4, 8, 16, 32, 64]}), "R3"),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tf):
    """``zoo(name)`` -> (checkpoint prefix, reference file made by NiftyNet's graph), built once."""
    cache = {}

    def get(name):
        if name not in cache:
            from tf2pt.testing.niftynet_zoo import write_niftynet_checkpoint
            from tf2pt.verify import save_reference

            d = tmp_path_factory.mktemp(name)
            kwargs, _ = ZOO[name]
            prefix = write_niftynet_checkpoint(str(d / "ckpt"), name, num_classes=3, seed=5, **kwargs)
            ref = str(d / "ref.npz")
            meta = save_reference(prefix, name, ref, synthetic=UNET_SIZE if name == "unet" else SIZE, per_layer=True)
            assert meta["tf_side"] == "original-graph", meta
            cache[name] = (prefix, ref)
        return cache[name]

    return get


def test_shims_leave_tensorflow_alone_and_tf2pt_never_imports_niftynet(tf):
    from tf2pt.testing.niftynet_zoo import niftynet_modules

    real, classes = niftynet_modules()
    import tensorflow

    assert tensorflow is real and tensorflow.__name__ == "tensorflow" and hasattr(tensorflow, "function")
    assert {"highres3dnet_small", "highres3dnet_large", "dense_vnet", "vnet", "unet"} <= set(classes)
    shim = sys.modules["niftynet.layer.bn"].tf  # what NiftyNet's modules got as `tensorflow`
    assert shim.get_variable is real.compat.v1.get_variable and shim.make_template is real.compat.v1.make_template
    with pytest.raises(NotImplementedError, match="tensorflow.contrib.layers.instance_norm"):
        shim.contrib.layers.instance_norm(None)
    assert np.int is int and np.float is float  # NumPy's removed aliases, back (np.bool is NumPy 2's own)
    code = ("import sys, tf2pt.cli, tf2pt.registry, tf2pt.verify, tf2pt.conversion; tf2pt.registry.list_mappings(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'niftynet'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.slow
def test_checkpoint_carries_the_training_variables(zoo, tf):
    """Adam slots, zero-debias variables, EMA shadows, non-trivial BN statistics; and DenseVNet's
    optional prior is there when asked for (NiftyNet's class-level defaults are left alone)."""
    prefix, _ = zoo("highres3dnet_small")
    reader = tf.train.load_checkpoint(prefix)
    names = set(reader.get_variable_to_shape_map())
    base = "HighRes3DNetSmall/deconv_bn_prelu/bn_/"
    assert {base + "moving_mean", base + "moving_variance", "global_step", "ApplyGradients/beta1_power"} <= names
    assert "HighRes3DNetSmall/deconv_bn_prelu/deconv_/w/Adam_1" in names
    assert "HighRes3DNetSmall/deconv_bn_prelu/deconv_/w/ExponentialMovingAverage" in names
    assert "HighRes3DNetSmall/res_1_0/prelu_acti_0/alpha" in names  # NiftyNet's own scope name
    assert any(n.endswith("/moving_variance/biased") for n in names)
    assert any(n.endswith("/moving_variance/local_step") for n in names)
    assert not np.allclose(reader.get_tensor(base + "moving_variance"), 1.0)
    assert not np.allclose(reader.get_tensor(base + "moving_mean"), 0.0)
    assert reader.get_tensor("global_step") == 2000
    prior = tf.train.load_checkpoint(zoo("dense_vnet")[0]).get_variable_to_shape_map()["DenseVNet/spatial_prior_block/prior"]
    assert prior == [1, 24, 24, 24, 1]
    from tf2pt.testing.niftynet_zoo import niftynet_modules

    assert niftynet_modules()[1]["dense_vnet"].__hyper_params__["use_prior"] is False


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_niftynet_network_converts_without_tf_and_matches_its_own_graph(name, zoo, run_cli, tmp_path):
    prefix, ref = zoo(name)
    out = tmp_path / "model.safetensors"
    r = run_cli("convert", prefix, "-m", name, "-o", out, block=("tensorflow",))
    assert r.returncode == 0, r.stderr
    assert "problems: 0" in r.stderr and out.stat().st_size > 0

    report_path = tmp_path / "report.json"
    r = run_cli("verify", prefix, "-m", name, "--reference", ref, "--per-layer", "--json", report_path,
                "--min-agreement", "1.0", block=("tensorflow",))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["tf_side"] == "original-graph"
    assert report["input"]["shape"] == [1, *ZOO[name][0]["input_shape"]]
    assert report["max_abs_error"] <= 1e-5 * report["output_range"], report["max_abs_error"]
    assert report["argmax_agreement"] == 1.0
    assert report["per_layer"] and all(row["status"] == "ok" for row in report["per_layer"]), report["per_layer"]
    assert [row["layer"] for row in report["per_layer"]] == list(registry.get_mapping(name).verify.layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_broken_mapping_is_caught_at_its_layer(name, zoo, cli_run, tmp_path):
    prefix, ref = zoo(name)
    _, layer = ZOO[name]
    report_path = tmp_path / "report.json"
    r = cli_run("verify", prefix, "-m", DATA / f"wrong_{name}.py", "--reference", ref, "--per-layer",
                "--json", report_path)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is False and report["first_divergent_layer"] == layer
    status = [row["status"] for row in report["per_layer"]]
    first_bad = [row["layer"] for row in report["per_layer"]].index(layer)
    assert set(status[:first_bad]) == {"ok"} and status[first_bad] == "DIVERGES"
    assert f"first divergent layer: {layer}" in r.stdout


def test_resize_and_avg_pool_equal_niftynet_own_layers(tf):
    """tf2pt.nn's legacy resize and SAME average pooling against NiftyNet's own LinearResizeLayer
    and DownSampleLayer('AVG') (the layers DenseVNet uses), on odd sizes and non-integer scales."""
    import torch

    import tf2pt.nn as tfnn
    from tf2pt.testing.niftynet_zoo import niftynet_modules

    niftynet_modules()
    LinearResizeLayer = sys.modules["niftynet.layer.linear_resize"].LinearResizeLayer
    DownSampleLayer = sys.modules["niftynet.layer.downsample"].DownSampleLayer
    rng = np.random.default_rng(3)
    v1 = tf.compat.v1
    cases = [((5, 7, 9), (11, 13, 6)), ((9, 4, 7), (9, 11, 3)), ((5, 6, 7), (20, 24, 28))]
    x = {src: rng.standard_normal((1, *src, 2)).astype(np.float32) + 3.0 for src, _ in cases}
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        outs = [LinearResizeLayer(list(dst))(tf.constant(x[src])) for src, dst in cases]
        pools = [DownSampleLayer("AVG", kernel_size=3, stride=2)(tf.constant(x[src])) for src, _ in cases]
        got_tf = sess.run(outs + pools)
    for (src, dst), expected in zip(cases, got_tf[:len(cases)]):
        got = tfnn.resize_linear_legacy(torch.from_numpy(np.moveaxis(x[src], -1, 1).copy()), dst)
        np.testing.assert_allclose(np.moveaxis(got.numpy(), 1, -1), expected, atol=1e-6, rtol=0)
    for (src, _), expected in zip(cases, got_tf[len(cases):]):
        got = tfnn.AvgPoolSame((3, 3, 3), (2, 2, 2))(torch.from_numpy(np.moveaxis(x[src], -1, 1).copy()))
        np.testing.assert_allclose(np.moveaxis(got.numpy(), 1, -1), expected, atol=1e-6, rtol=0)

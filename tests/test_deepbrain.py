"""deepbrain's trained frozen graph (from its PyPI wheel) -> PyTorch, with parity on a real brain.

The graph is not vendored: it is downloaded with ``pip download --no-deps deepbrain==0.1`` into a
cache (or taken from ``$TF2PT_DEEPBRAIN_GRAPH``); these tests skip, saying why, when it cannot be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import tf2pt
from conftest import ROOT
from tf2pt.read import open_checkpoint


@pytest.fixture(scope="session")
def deepbrain_graph(tmp_path_factory):
    given = os.environ.get("TF2PT_DEEPBRAIN_GRAPH")
    if given:
        return given
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tf2pt" / "deepbrain-0.1"
    graph = cache / "deepbrain" / "models" / "graph.pb"
    if not graph.exists():
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "deepbrain==0.1", "-d", str(cache)],
                           capture_output=True, text=True, timeout=300)
        wheels = list(cache.glob("deepbrain-0.1-*.whl"))
        if r.returncode != 0 or not wheels:
            pytest.skip(f"deepbrain 0.1 could not be downloaded from PyPI: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            whl.extract("deepbrain/models/graph.pb", cache)
    return str(graph)


def test_graphdef_constants_equal_tensorflows(deepbrain_graph, tf):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(deepbrain_graph).read_bytes())
    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    with open_checkpoint(deepbrain_graph) as ckpt:
        assert ckpt.kind == "graphdef" and set(ckpt.variables) == set(consts)
        for name, value in consts.items():
            assert np.array_equal(ckpt.read(name), value) and ckpt.read(name).dtype == value.dtype, name
        weights = [v.name for v in ckpt.variables.values() if v.role == "inference"]
    assert len(weights) == 23 and "conv3d_transpose_1/kernel" in weights and "conv3d_9/bias" in weights


def test_converted_weights_load_strictly(deepbrain_graph, run_cli, tmp_path):
    out = tmp_path / "deepbrain.safetensors"
    r = run_cli("convert", deepbrain_graph, "--mapping", "deepbrain", "-o", out, block=("tensorflow",))
    assert r.returncode == 0, r.stderr
    assert "mapped:   23" in r.stderr and "72  graph constant" in r.stderr
    from safetensors.torch import load_file

    model = tf2pt.build_model("deepbrain")
    model.load_state_dict(load_file(out), strict=True)
    assert model.up2.weight.shape == (32, 16, 3, 3, 3)  # TF [3, 3, 3, 16, 32] = [k, out, in]


def test_verify_runs_the_original_frozen_graph_on_a_real_brain(deepbrain_graph, cli_run, tmp_path, tf):
    report_path = tmp_path / "report.json"
    r = cli_run("verify", deepbrain_graph, "--mapping", "deepbrain", "--json", report_path, "--per-layer")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["tf_side"] == "original-graph" and report["tf_tensors"] == {"input": "img:0", "output": "prob:0"}
    assert report["input"]["shape"] == [1, 128, 128, 128] and report["input"]["source"].startswith("MNI152")
    assert report["max_abs_error"] <= 1e-4 and report["argmax_agreement"] >= 0.9999
    assert all(row["status"] == "ok" for row in report["per_layer"])
    assert report["reference_vs_graph_max_abs"] <= 1e-4  # the tf.nn reference agrees with the graph too


def test_skullstrip_example_writes_a_mask_in_the_input_space(deepbrain_graph, tmp_path, tf):
    nib = pytest.importorskip("nibabel")
    from nilearn.datasets import load_mni152_template

    src = load_mni152_template(resolution=2)
    data = np.asarray(src.dataobj, dtype=np.float32)[::-1]  # LAS storage: the mask must follow it
    affine = src.affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "t1.nii.gz"))
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "deepbrain" / "skullstrip.py"), str(tmp_path / "t1.nii.gz"),
                        str(tmp_path / "mask.nii.gz"), "--weights", deepbrain_graph, "--prob", str(tmp_path / "prob.nii.gz")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mask_img = nib.load(str(tmp_path / "mask.nii.gz"))
    assert mask_img.shape == data.shape and np.allclose(mask_img.affine, affine)
    mask = np.asarray(mask_img.dataobj)
    assert mask.dtype == np.uint8 and 0 < mask.mean() < 1
    # the same pipeline with TF running deepbrain's original graph gives the same mask
    from tf2pt.verify.volume import resize_array

    x = resize_array(data.astype(np.float64), (128, 128, 128))
    x = (x / x.max()).astype(np.float32)[None, ..., None]
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        gd = v1.GraphDef()
        gd.ParseFromString(Path(deepbrain_graph).read_bytes())
        tf.graph_util.import_graph_def(gd, name="")
        with v1.Session(graph=g) as sess:
            prob_tf = sess.run("prob:0", {"img:0": x, "training:0": False})[0, ..., 0]
    mask_tf = resize_array(prob_tf, data.shape) > 0.5
    assert (mask_tf == mask.astype(bool)).mean() >= 0.9999

"""The highresnet mapping: exact reproduction of the published weights, TF/PyTorch parity on logits,
the MONAI target, PReLU checkpoints, and checkpoints that must be refused."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import tf2pt
from conftest import DATA, EXAMPLE, PUBLISHED_PTH
from tf2pt.cli import cli
from tf2pt.errors import ConversionError, MappingError
from tf2pt.read import open_checkpoint

MANIFEST = json.loads((DATA / "published_highres3dnet_sha256.json").read_text())["tensors"]


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def assert_is_published(state_dict):
    assert set(state_dict) == set(MANIFEST)
    for key, t in state_dict.items():
        m = MANIFEST[key]
        assert list(t.shape) == m["shape"] and str(t.dtype) == "torch." + m["dtype"], key
        assert tensor_sha256(t) == m["sha256"], key
    if PUBLISHED_PTH.exists():  # the published file itself, where it is at hand
        published = torch.load(PUBLISHED_PTH, weights_only=True)
        assert all(torch.equal(published[k], state_dict[k]) for k in published)


def test_convert_cli_reproduces_the_published_weights_without_tensorflow(run_cli, tmp_path):
    out = tmp_path / "x.pth"
    r = run_cli("convert", EXAMPLE, "--mapping", "highresnet", "-o", out, block=("tensorflow",))
    assert r.returncode == 0, r.stderr
    assert "mapped:   105" in r.stderr and "ignored:  276" in r.stderr and "problems: 0" in r.stderr
    assert_is_published(torch.load(out, weights_only=True))


def test_safetensors_output_and_provenance(tmp_path):
    """By default the fingerprint is the index's sha256 plus the CRC32C checks (no second pass
    over the data); --hash-sources adds every file's sha256."""
    out = tmp_path / "x.safetensors"
    r = CliRunner().invoke(cli, ["convert", str(EXAMPLE), "-m", "highresnet", "-o", str(out), "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    assert_is_published(load_file(out))
    meta = safe_open(str(out), "pt").metadata()
    assert "source_sha256" not in meta
    fingerprint = json.loads(meta["source_fingerprint"])
    index = EXAMPLE / "model.ckpt-33000.index"
    assert fingerprint == {"method": "sha256 of the index; CRC32C of every converted tensor checked against it",
                           "sha256": {index.name: hashlib.sha256(index.read_bytes()).hexdigest()}}
    files = {os.path.basename(f["path"]): f.get("sha256") for f in json.loads((tmp_path / "r.json").read_text())["files"]}
    assert files[index.name] == fingerprint["sha256"][index.name] and files["model.ckpt-33000.data-00000-of-00001"] is None
    full = tmp_path / "full.safetensors"
    r = CliRunner().invoke(cli, ["convert", str(EXAMPLE), "-m", "highresnet", "-o", str(full), "--hash-sources"])
    assert r.exit_code == 0, r.output
    meta = safe_open(str(full), "pt").metadata()
    hashes = json.loads(meta["source_sha256"])
    assert json.loads(meta["source_fingerprint"]) == {"method": "sha256 of every source file", "sha256": hashes}
    with open_checkpoint(EXAMPLE) as ckpt:
        assert len(hashes) == len(ckpt.files) == 2
        for f in ckpt.files:
            assert hashes[os.path.basename(f)] == hashlib.sha256(open(f, "rb").read()).hexdigest()
    assert (meta["mapping"], meta["target"], meta["tf2pt_version"]) == ("highresnet", "tf2pt", tf2pt.__version__)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["counts"] == {"mapped": 105, "ignored": 276, "filled": 21, "problems": 0}
    assert {row["transform"] for row in report["mapped"]} == {"conv3d", "identity"}


def test_safetensors_conversion_needs_neither_torch_nor_tensorflow(run_cli, tmp_path):
    """The tf2pt target declares its state dict (``spec_tf2pt``), so the streamed conversion is
    planned, checked and written without importing torch; the bytes are still the published ones."""
    out = tmp_path / "x.safetensors"
    r = run_cli("convert", EXAMPLE, "-m", "highresnet", "-o", out, block=("torch", "tensorflow"))
    assert r.returncode == 0, r.stderr
    assert "checked against: the target's declared spec (torch not loaded)" in r.stderr
    from safetensors.torch import load_file

    assert_is_published(load_file(out))


@pytest.mark.parametrize("activation", ["relu", "prelu"])
@pytest.mark.parametrize("in_channels, num_classes", [(1, 160), (2, 5), (4, 1)])
def test_the_declared_spec_is_the_model(activation, in_channels, num_classes):
    from tf2pt.testing import check_target_spec

    check_target_spec("highresnet", activation=activation, in_channels=in_channels, num_classes=num_classes)


def test_python_api_and_build_model_defaults():
    sd, report = tf2pt.convert(EXAMPLE, mapping="highresnet")
    assert report.ok and report.model_kwargs == {"in_channels": 1, "num_classes": 160, "activation": "relu"}
    assert_is_published(sd)
    model = tf2pt.build_model("highresnet")
    model.load_state_dict(sd, strict=True)
    assert model.block[0].convolutional_block[1].in_channels == 1 and model.block[6].convolutional_block[0].out_channels == 160
    small = tf2pt.build_model("highresnet", in_channels=2, num_classes=4)
    assert small.block[6].convolutional_block[0].weight.shape == (4, 80, 1, 1, 1)


def test_output_is_atomic_and_never_overwritten(tmp_path):
    out = tmp_path / "model.pth"
    out.write_bytes(b"precious")
    r = CliRunner().invoke(cli, ["convert", str(EXAMPLE), "-m", "highresnet", "-o", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output and out.read_bytes() == b"precious"
    r = CliRunner().invoke(cli, ["convert", str(EXAMPLE), "-m", "highresnet", "-o", str(out), "--force"])
    assert r.exit_code == 0 and out.read_bytes() != b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def _logits_torch(model, x_ndhwc):
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_ndhwc, -1, 1))))
    return np.moveaxis(y.numpy(), 1, -1)


def _logits_tf_graph(tf, prefix, x):
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        saver = v1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
        saver.restore(sess, prefix)
        return sess.run("logits:0", {"images:0": x})


@pytest.mark.parametrize("fixture", ["niftynet_highres3dnet", "niftynet_highres3dnet_prelu"])
def test_tf_graph_and_converted_pytorch_agree_on_logits(fixture, checkpoints, tf):
    """TF runs NiftyNet's graph (space_to_batch dilation, graph mode, the checkpoint's variables);
    PyTorch runs the converted weights. Random weights with non-trivial BN statistics."""
    prefix = checkpoints(fixture)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 32, 1)).astype(np.float32)
    expected = _logits_tf_graph(tf, prefix, x)
    sd, report = tf2pt.convert(prefix, mapping="highresnet")
    assert report.ok and len(report.ignored) > 100  # Adam, EMA, zero-debias, beta powers, global_step
    model = tf2pt.build_model("highresnet", **report.model_kwargs)
    model.load_state_dict(sd, strict=True)
    got = _logits_torch(model, x)
    scale = expected.max() - expected.min()
    assert np.abs(got - expected).max() <= 1e-4 * scale
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.999
    if fixture.endswith("prelu"):
        assert report.model_kwargs["activation"] == "prelu"
        assert isinstance(model.block[0].convolutional_block[3], torch.nn.PReLU)
        # and the independent tf.nn reference forward agrees with NiftyNet's graph
        from tf2pt.verify.tfside import TFVariables
        from tf2pt.mappings.highresnet import tf_reference

        ref, _ = tf_reference(TFVariables(tf, prefix), x)
        assert np.abs(ref - expected).max() <= 1e-4 * scale


def test_monai_target_reproduces_the_default_targets_logits(tmp_path):
    sd, _ = tf2pt.convert(EXAMPLE, mapping="highresnet")
    sd_m, report = tf2pt.convert(EXAMPLE, mapping="highresnet", target="monai")
    assert report.ok
    ours = tf2pt.build_model("highresnet")
    ours.load_state_dict(sd)
    theirs = tf2pt.build_model("highresnet", "monai")
    theirs.load_state_dict(sd_m, strict=True)
    assert isinstance(theirs.blocks[-1].adn.A, torch.nn.Identity)
    x = np.random.default_rng(1).standard_normal((1, 24, 24, 24, 1)).astype(np.float32)
    a, b = _logits_torch(ours, x), _logits_torch(theirs, x)
    assert (a < 0).any()  # logits, not ReLU outputs
    assert np.abs(a - b).max() <= 1e-5 * (a.max() - a.min())


def test_monai_target_refuses_prelu_checkpoints(checkpoints):
    with pytest.raises(MappingError, match="target 'monai' supports ReLU checkpoints only"):
        tf2pt.convert(checkpoints("niftynet_highres3dnet_prelu"), mapping="highresnet", target="monai")


def _rewrite(tf, prefix, dest, change):
    """Save a copy of a checkpoint with real TF, after ``change(values)`` edits the dict."""
    v1 = tf.compat.v1
    reader = tf.train.load_checkpoint(prefix)
    values = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    change(values)
    g = tf.Graph()
    with g.as_default():
        variables = [v1.Variable(v, name=n) for n, v in sorted(values.items())]
        assert all(v.op.name == n for v, n in zip(variables, sorted(values)))
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            return v1.train.Saver(variables).save(sess, str(dest), write_meta_graph=False)


def test_bad_checkpoints_fail_naming_every_problem(checkpoints, tf, tmp_path):
    base = checkpoints("niftynet_highres3dnet")
    kernel = "HighRes3DNet/res_2_1/conv_0/w"

    def damage(values):
        values[kernel] = np.ascontiguousarray(np.transpose(values[kernel], (4, 3, 0, 1, 2)))  # stored OIDHW
        values["HighRes3DNet/res_2_1/extra/w"] = np.ones((3,), np.float32)
        del values["HighRes3DNet/conv_1_bn_relu/bn_/moving_variance"]

    prefix = _rewrite(tf, base, tmp_path / "bad.ckpt", damage)
    with pytest.raises(ConversionError) as e:
        tf2pt.convert(prefix, mapping="highresnet")
    problems = "\n".join(e.value.problems)
    assert len(e.value.problems) == 3, problems
    assert f"shape mismatch for 'block.2.dilation_block.1.residual_block.0.convolutional_block.3.weight': TF '{kernel}' [32, 32, 3, 3, 3] -> conv3d -> [3, 3, 32, 32, 3], model expects [32, 32, 3, 3, 3]" in problems
    assert "unmapped variable 'HighRes3DNet/res_2_1/extra/w' [3] float32" in problems
    assert "'block.4.convolutional_block.1.running_var' [80] is not filled" in problems
    # the CLI lists them all and writes nothing
    out = tmp_path / "out.pth"
    r = CliRunner().invoke(cli, ["convert", prefix, "-m", "highresnet", "-o", str(out)])
    assert r.exit_code == 2 and not out.exists()
    assert r.output.count("  - ") == 3 and "extra/w" in r.output and "running_var" in r.output
    # --no-strict converts what matches and still reports the rest
    r = CliRunner().invoke(cli, ["convert", prefix, "-m", "highresnet", "-o", str(out), "--no-strict"])
    assert r.exit_code == 0 and out.exists() and "problems: 3" in r.output
    partial = torch.load(out, weights_only=True)
    assert "block.4.convolutional_block.1.running_var" not in partial and len(partial) == 124


def test_unknown_mapping_and_target_suggest(cli_run, tmp_path):
    r = cli_run("convert", EXAMPLE, "--mapping", "highresnt", "-o", tmp_path / "x.pth")
    assert r.returncode == 2 and "did you mean 'highresnet'" in r.stderr and "Traceback" not in r.stderr
    r = cli_run("convert", EXAMPLE, "--mapping", "highresnet", "--target", "monia", "-o", tmp_path / "x.pth")
    assert r.returncode == 2 and "did you mean 'monai'" in r.stderr
    assert not list(tmp_path.glob("x.pth*"))


def test_mappings_command_lists_targets():
    r = CliRunner().invoke(cli, ["mappings", "--format", "json"])
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert [t["name"] for t in rows["highresnet"]["targets"]] == ["tf2pt", "monai"]

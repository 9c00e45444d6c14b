"""`tf2pt verify`: both frameworks run, parity is measured, failures are caught and located."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import DATA, EXAMPLE
from tf2pt.verify import volume as vol
from tf2pt.errors import InputError

WRONG = str(DATA / "wrong_highresnet.py")
SMALL = ["--crop", "32", "32", "32"]


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory):
    """A reference saved with torch blocked (the TF half of a two-environment check)."""
    pytest.importorskip("tensorflow")
    import subprocess
    import sys
    import textwrap

    d = tmp_path_factory.mktemp("ref")
    (d / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'torch':
                    raise ImportError('torch is blocked for this test')
        sys.meta_path.insert(0, _Block())
    """))
    env = dict(os.environ, PYTHONPATH=str(d), TF_CPP_MIN_LOG_LEVEL="3")
    ref = d / "ref.npz"
    r = subprocess.run([sys.executable, "-m", "tf2pt", "verify", str(EXAMPLE), "-m", "highresnet", *SMALL,
                        "--per-layer", "--save-reference", str(ref)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return ref


def test_verify_passes_on_the_real_brain_and_reports(cli_run, tmp_path, tf):
    report_path = tmp_path / "report.json"
    fig = tmp_path / "parity.png"
    r = cli_run("verify", EXAMPLE, "--mapping", "highresnet", "--crop", "48", "48", "48", "--json", report_path,
                "--figure", fig)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["tf_side"] == "original-graph"
    assert report["input"]["source"].startswith("MNI152") and report["input"]["shape"] == [1, 48, 48, 48]
    assert report["argmax_agreement"] >= 0.9999
    assert report["max_abs_error"] <= 1e-4 * report["output_range"] == report["thresholds"]["atol"]
    assert report["nonfinite"] == {"tf": 0, "torch": 0}
    assert {"devices", "versions", "timings", "thresholds", "dice_worst"} <= set(report)
    assert report["versions"]["tensorflow"] and report["versions"]["torch"]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PASSED" in r.stdout and "max abs error" in r.stdout


def test_wrong_mapping_fails_and_per_layer_names_the_layer(cli_run, tmp_path, tf):
    report_path = tmp_path / "report.json"
    r = cli_run("verify", EXAMPLE, "--mapping", WRONG, *SMALL, "--per-layer", "--json", report_path)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is False and report["first_divergent_layer"] == "res_2_1"
    status = {row["layer"]: row["status"] for row in report["per_layer"]}
    assert status["res_2_0"] == "ok" and status["res_2_1"] == "DIVERGES"
    assert "first divergent layer: res_2_1" in r.stdout


def test_two_environments_reference_then_compare(reference_file, run_cli, tmp_path):
    import zipfile

    assert set(zipfile.ZipFile(reference_file).namelist()) >= {"input.npy", "output.npy", "meta.npy", "layer.res_2_1.npy"}
    report_path = tmp_path / "report.json"
    r = run_cli("verify", EXAMPLE, "-m", "highresnet", "--reference", reference_file, "--json", report_path,
                "--per-layer", block=("tensorflow",))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["tf_side"] == "original-graph" and report["reference_file"] == str(reference_file)
    assert report["versions"]["tensorflow"]  # recorded by the TF half
    assert all(row["status"] == "ok" for row in report["per_layer"]) and len(report["per_layer"]) == 12
    # the wrong mapping fails against the same reference, also without TF
    r = run_cli("verify", EXAMPLE, "-m", WRONG, "--reference", reference_file, "--per-layer", block=("tensorflow",))
    assert r.returncode == 1 and "first divergent layer: res_2_1" in r.stdout


def test_reference_from_another_checkpoint_is_refused(reference_file, checkpoints, cli_run):
    r = cli_run("verify", checkpoints("niftynet_highres3dnet"), "-m", "highresnet", "--reference", reference_file)
    assert r.returncode == 2 and "reference was made from other checkpoint files" in r.stderr
    assert "Traceback" not in r.stderr


def test_assert_parity_in_pytest(tf):
    from tf2pt.testing import assert_parity

    report = assert_parity(EXAMPLE, "highresnet", synthetic=(24, 24, 24))
    assert report.passed and report["input"]["shape"] == [1, 24, 24, 24]
    with pytest.raises(AssertionError, match="parity failed"):
        assert_parity(EXAMPLE, WRONG, synthetic=(24, 24, 24))


def test_without_a_graph_the_reference_forward_runs_and_says_why(checkpoints, tmp_path, tf):
    from bundle_tools import copy_bundle
    from tf2pt.verify import verify

    prefix = copy_bundle(checkpoints("niftynet_highres3dnet"), tmp_path / "nometa")
    os.unlink(prefix + ".meta")
    report = verify(prefix, "highresnet", synthetic=(16, 16, 16))
    assert report.passed and report["tf_side"] == "reference"
    assert "model.ckpt-33000.meta not found" in report["tf_side_reason"]
    # a tensor name the user gives that the graph lacks is an error naming the closest tensors
    with pytest.raises(InputError, match=r"--tf-output 'logit:0'.*no such tensor.*closest: logits:0"):
        verify(checkpoints("niftynet_highres3dnet"), "highresnet", synthetic=(16, 16, 16), tf_output="logit:0")


def test_volumes_npy_nifti_orientation_and_sizes(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10, 12, 14)).astype(np.float32)
    np.save(tmp_path / "v.npy", data)
    v = vol.load_file(str(tmp_path / "v.npy"))
    assert v.data.shape == (1, 10, 12, 14)
    np.save(tmp_path / "v4.npy", np.stack([data, data]))
    assert vol.load_file(str(tmp_path / "v4.npy")).data.shape == (2, 10, 12, 14)
    # an LPS-oriented NIfTI is reoriented to RAS: axes 0 and 1 are flipped
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "lps.nii.gz"))
    v = vol.load_file(str(tmp_path / "lps.nii.gz"))
    assert np.array_equal(v.data[0], data[::-1, ::-1, :]) and "LPS -> RAS" in v.steps[0]
    # crop to multiples of 8, or pad where the volume is too small
    v = vol.fit_multiple(vol.Volume(np.zeros((1, 20, 17, 9), np.float32), "x"), 8)
    assert v.data.shape == (1, 16, 16, 8)
    v = vol.fit_multiple(vol.Volume(np.zeros((1, 5, 17, 9), np.float32), "x"), 8)
    assert v.data.shape == (1, 8, 24, 16)
    with pytest.raises(InputError, match=r"expected \(D, H, W\) or \(C, D, H, W\)"):
        np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
        vol.load_file(str(tmp_path / "bad.npy"))
    with pytest.raises(InputError, match="unknown volume format"):
        (tmp_path / "v.txt").write_text("1")
        vol.load_file(str(tmp_path / "v.txt"))


def test_verify_usage_errors_exit_2(cli_run, tmp_path):
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", "--volume", tmp_path / "missing.nii.gz")
    assert r.returncode == 2 and "volume file not found" in r.stderr
    np.save(tmp_path / "two.npy", np.zeros((2, 8, 8, 8), np.float32))
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", "--volume", tmp_path / "two.npy")
    assert r.returncode == 2 and "volume has 2 channel(s), the model takes 1" in r.stderr
    r = cli_run("verify", EXAMPLE, "-m", "highresnet", "--reference", tmp_path / "two.npy")
    assert r.returncode == 2 and "not a tf2pt reference file" in r.stderr
    import torch

    if not torch.cuda.is_available():
        r = cli_run("verify", EXAMPLE, "-m", "highresnet", "--device", "cuda", *SMALL)
        assert r.returncode == 2 and "no CUDA device" in r.stderr


def test_sampled_reference_for_large_volumes(run_cli, tmp_path, tf):
    """A compact reference (labels everywhere, full outputs at N voxels) still catches a wrong
    mapping, and says what it compared."""
    ref = tmp_path / "ref.npz"
    r = run_cli("verify", EXAMPLE, "-m", "highresnet", "--synthetic", "24", "24", "24", "--save-reference", ref,
                "--sample-voxels", "500", block=("torch",))
    assert r.returncode == 0, r.stderr
    report_path = tmp_path / "report.json"
    r = run_cli("verify", EXAMPLE, "-m", "highresnet", "--reference", ref, "--json", report_path, block=("tensorflow",))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["voxels"] == 24 ** 3
    assert report["error_scope"].startswith("sampled: all channels at 500 of 13824 voxels")
    r = run_cli("verify", EXAMPLE, "-m", WRONG, "--reference", ref, block=("tensorflow",))
    assert r.returncode == 1, r.stdout
    r = run_cli("verify", EXAMPLE, "-m", "highresnet", "--reference", ref, "--per-layer")
    assert r.returncode == 2 and "sampled reference has no layer outputs" in r.stderr

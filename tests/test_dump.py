"""`tf2pt dump`: the tutorial's CSV and TF-named state dict."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import imported_by_command
from tf2pt.cli import cli
from tf2pt.read import open_checkpoint


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_dump_writes_tf_named_tensors_in_tf_layout(example, tmp_path, suffix):
    out = tmp_path / f"tf{suffix}"
    table = tmp_path / "vars.csv"
    r = invoke("dump", example, "--csv", table, "--state-dict", out)
    assert r.exit_code == 0, r.output
    sd = load_file(out) if suffix == ".safetensors" else torch.load(out, weights_only=True)
    assert len(sd) == 105
    with open_checkpoint(example) as ckpt:
        for name, tensor in sd.items():
            assert np.array_equal(tensor.numpy(), ckpt.read(name)), name
    assert tuple(sd["HighRes3DNet/conv_0_bn_relu/conv_/w"].shape) == (3, 3, 3, 1, 16)  # TF layout kept
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 105 and rows[0]["name"].startswith("HighRes3DNet/") and rows[0]["shape"].startswith("[")
    if suffix == ".safetensors":
        assert safe_open(str(out), "pt").metadata()["layout"] == "tensorflow"


def test_dump_all_dtypes_lists_what_it_cannot_write(checkpoints, tmp_path):
    out = tmp_path / "all.pth"
    r = CliRunner().invoke(cli, ["dump", checkpoints("all_dtypes"), "--all", "--state-dict", str(out)])
    assert r.exit_code == 0, r.output
    sd = torch.load(out, weights_only=True)
    skipped = [l for l in r.output.splitlines() if l.startswith("not written")]
    assert len(skipped) == 4 and all("string" in l for l in skipped)  # 3 string variables + the object graph
    with open_checkpoint(checkpoints("all_dtypes")) as ckpt:
        for name, tensor in sd.items():
            ref = ckpt.read(name)
            if ref.dtype.name == "bfloat16":
                assert torch.equal(tensor, torch.from_numpy(ref.astype(np.float32)).to(torch.bfloat16)), name
            else:
                assert np.array_equal(tensor.numpy(), ref, equal_nan=True), name


def test_dump_refuses_to_overwrite_and_needs_an_output(example, tmp_path):
    out = tmp_path / "x.safetensors"
    out.write_text("keep me")
    r = invoke("dump", example, "--state-dict", out)
    assert r.exit_code == 2 and "already exists" in r.output and out.read_text() == "keep me"
    assert invoke("dump", example, "--state-dict", out, "--force").exit_code == 0
    assert invoke("dump", example).exit_code == 2
    r = invoke("dump", example, "--state-dict", tmp_path / "x.npz")
    assert r.exit_code == 2 and "unknown output format" in r.output


def test_pth_dump_loads_with_weights_only(example, tmp_path):
    out = tmp_path / "tf.pth"
    invoke("dump", example, "--state-dict", out, "--filter", "conv_0_bn_relu")
    sd = torch.load(out, weights_only=True)
    assert all(type(v) is torch.Tensor for v in sd.values()) and len(sd) == 5
    assert not [f for f in os.listdir(tmp_path) if ".tf2pt-tmp-" in f]


def test_a_safetensors_dump_does_not_import_numpy(example, tmp_path):
    """Dumping to safetensors copies bytes from the memory map after checking their CRC32C,
    which the crc32c extension takes as a memoryview: numpy's import (about a tenth of a 1 GiB
    dump's time) is not needed, and the output is what TF's reader reads."""
    out = tmp_path / "tf.safetensors"
    assert imported_by_command(["dump", example, "--state-dict", out, "--quiet"]) == []
    sd = load_file(out)
    with open_checkpoint(example) as ckpt:
        assert len(sd) == 105
        for name, value in sd.items():
            assert value.numpy().tobytes() == ckpt.read(name).tobytes(), name

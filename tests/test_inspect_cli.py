"""`tf2pt inspect`: formats, filters, stats, totals, hidden rows, errors, and its import cost."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from bundle_tools import copy_bundle, flip_byte, truncate, write_bundle
from conftest import EXAMPLE as EXAMPLE_DIR, imported_by_command
from tf2pt.cli import cli
from tf2pt.read import open_checkpoint


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_default_table_hides_training_only_rows(example):
    r = invoke("inspect", example)
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert lines[0].split() == ["name", "shape", "dtype", "params", "bytes", "role"]
    rows = [l for l in lines[2:] if l.startswith("HighRes3DNet/")]
    assert len(rows) == 105 and all(l.rstrip().endswith("inference") for l in rows)
    assert "105 variables, 823,664 parameters, 3.1 MiB shown; 276 training-only variables hidden (use --all)" in lines[-1]


def test_all_shows_every_variable_with_its_role(example):
    r = invoke("inspect", example, "--all", "--format", "json")
    doc = json.loads(r.output)
    assert len(doc["variables"]) == 381 and doc["hidden"] == 0
    roles = {v["name"]: (v["role"], v["role_reason"]) for v in doc["variables"]}
    assert roles["HighRes3DNet/res_2_0/conv_1/w/Adam_1"] == ("training", "optimizer slot (Adam_1)")
    assert roles["HighRes3DNet/res_2_0/bn_1/moving_mean"] == ("inference", "model variable")
    assert roles["global_step"][0] == "training"


def test_json_shape(example, checkpoints):
    doc = json.loads(invoke("inspect", example, "--format", "json").output)
    assert set(doc) >= {"checkpoint", "variables", "hidden"}
    assert doc["checkpoint"] == example and doc["hidden"] == 276
    v = doc["variables"][0]
    assert {"name", "shape", "dtype", "role"} <= set(v) and isinstance(v["shape"], list)
    assert all(isinstance(d, int) for d in v["shape"])
    # object-based checkpoints: `name` is the stored key, the readable name is its own field
    doc = json.loads(invoke("inspect", checkpoints("tf2_keras"), "--format", "json").output)
    kernel = next(v for v in doc["variables"] if v.get("readable_name") == "conv2d_1/kernel")
    assert kernel["name"] == "optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"


def test_filter_csv_markdown_and_stats(example):
    r = invoke("inspect", example, "--filter", r"res_1_0/bn_0/moving_(mean|variance)$", "--format", "csv", "--stats")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert [row["name"] for row in rows] == ["HighRes3DNet/res_1_0/bn_0/moving_mean", "HighRes3DNet/res_1_0/bn_0/moving_variance"]
    with open_checkpoint(example) as ckpt:
        var = ckpt.read("HighRes3DNet/res_1_0/bn_0/moving_variance").astype(np.float64)
    assert float(rows[1]["min"]) == pytest.approx(var.min()) and float(rows[1]["std"]) == pytest.approx(var.std())
    assert rows[1]["nan"] == "0" and rows[1]["inf"] == "0"
    md = invoke("inspect", example, "--filter", "conv_2_bn", "--format", "markdown").output
    assert md.startswith("| name | shape | dtype | params | bytes | role |") and md.count("\n| HighRes3DNet/") == 5


def test_stats_count_nan_and_inf(checkpoints):
    doc = json.loads(invoke("inspect", checkpoints("all_dtypes"), "--format", "json", "--stats", "--filter", "with_nan_inf").output)
    (v,) = doc["variables"]
    assert (v["nan"], v["inf"], v["min"], v["max"]) == (1, 2, -0.0, 1e-40) or (v["nan"], v["inf"]) == (1, 2)


def test_bad_filter_is_a_usage_error(example):
    r = invoke("inspect", example, "--filter", "(")
    assert r.exit_code == 2 and "not a valid regular expression" in r.output


@pytest.fixture()
def broken(example, checkpoints, tmp_path):
    """name -> path of a broken checkpoint (each made from a copy of a real one)."""
    prefix = open_checkpoint(example).prefix
    out = {"missing file": str(tmp_path / "does-not-exist")}
    t = copy_bundle(prefix, tmp_path / "trunc")
    truncate(t + ".data-00000-of-00001", 1000)
    out["truncated .data"] = t
    f = copy_bundle(prefix, tmp_path / "flip")
    flip_byte(f + ".data-00000-of-00001", 20)
    out["flipped byte"] = f
    n = tmp_path / "notbundle"
    n.mkdir()
    (n / "model.index").write_bytes(os.urandom(4096))
    out["index not a bundle"] = str(n / "model")
    s = copy_bundle(open_checkpoint(checkpoints("sharded")).prefix, tmp_path / "shard")
    os.unlink(s + ".data-00002-of-00003")
    out["missing shard"] = s
    out["unsupported dtype"] = write_bundle(tmp_path / "variant", [(b"v", 21, [], b"\x01\x02")])
    return out


@pytest.mark.parametrize("case", ["missing file", "truncated .data", "flipped byte", "index not a bundle",
                                  "missing shard", "unsupported dtype"])
def test_broken_input_one_line_exit_2_no_traceback(case, broken, run_cli):
    # --stats reads every tensor, so data damage is reached too
    r = run_cli("inspect", broken[case], "--all", "--stats")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tf2pt: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert os.path.basename(broken[case]) in lines[0]


def test_inspect_imports_no_torch_pandas_or_tf(example):
    assert imported_by_command(["inspect", example, "--format", "json"], ("torch", "pandas", "tensorflow")) == []


def test_python_api_returns_a_dataframe(example):
    import tf2pt

    df = tf2pt.inspect(example)
    assert len(df) == 105 and {"name", "shape", "dtype", "params", "bytes", "role"} <= set(df.columns)
    assert len(tf2pt.inspect(example, all=True)) == 381
    assert df.loc[df.name == "HighRes3DNet/conv_0_bn_relu/conv_/w", "params"].item() == 432


def test_inspect_lists_1000_variables_with_readable_names(checkpoints):
    """The listing of a 1,000-variable checkpoint (its speed is measured in benchmarks/run.py)."""
    r = invoke("inspect", checkpoints("many_1000"))
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "readable_name"] and len(lines) == 2 + 1000 + 1
    assert lines[-1].startswith("1000 variables,") and lines[-1].endswith("; 1 training-only variable hidden (use --all)")  # the object graph


def test_backend_tf_gives_the_same_listing(checkpoints):
    pytest.importorskip("tensorflow")
    for name in ("tf2_keras", "partitioned"):
        native = json.loads(invoke("inspect", checkpoints(name), "--all", "--format", "json").output)
        via_tf = json.loads(invoke("inspect", checkpoints(name), "--all", "--format", "json", "--backend", "tf").output)
        strip = lambda doc: [{k: v for k, v in row.items() if k not in ("bytes", "partitions")} for row in doc["variables"]]
        assert strip(native) == strip(via_tf) and native["hidden"] == via_tf["hidden"] == 0


def test_notes_reach_the_table_and_json(example, tmp_path):
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "moved")
    (tmp_path / "moved" / "checkpoint").write_text('model_checkpoint_path: "/data/run7/model.ckpt-33000"\n')
    table = invoke("inspect", tmp_path / "moved").output.strip().splitlines()
    assert table[-1].startswith("note: the 'checkpoint' file names '/data/run7/model.ckpt-33000'")
    doc = json.loads(invoke("inspect", tmp_path / "moved", "--format", "json").output)
    assert doc["prefix"] == prefix and len(doc["notes"]) == 1


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_listing_does_not_even_import_numpy(checkpoints, fmt):
    """Importing numpy is about half of a listing's time; the index, the object graph and the
    table are decoded without it (reading tensor data, --stats or a dump to .pth import it)."""
    assert imported_by_command(["inspect", checkpoints("many_1000"), "--format", fmt]) == []


def test_inspect_example_without_tensorflow(run_cli):
    """Issue 2's acceptance: with TensorFlow unimportable, inspect lists exactly the 105 inference
    variables of the bundled example, and --all every variable with its role."""
    r = run_cli("inspect", EXAMPLE_DIR, "--format", "json", block=("tensorflow",))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["variables"]) == 105 and {v["role"] for v in doc["variables"]} == {"inference"}
    assert sum(v["name"].endswith("/w") for v in doc["variables"]) == 21
    r = run_cli("inspect", EXAMPLE_DIR, "--all", "--format", "json", block=("tensorflow",))
    everything = {v["name"]: v for v in json.loads(r.stdout)["variables"]}
    assert len(everything) == 381
    reasons = {}
    for v in everything.values():
        reasons[v["role_reason"]] = reasons.get(v["role_reason"], 0) + 1
    assert reasons == {"model variable": 105, "optimizer slot (Adam)": 63, "optimizer slot (Adam_1)": 63,
                       "ExponentialMovingAverage shadow": 63, "zero-debias accumulator": 42, "zero-debias step": 42,
                       "optimizer beta1_power": 1, "optimizer beta2_power": 1, "step counter": 1}

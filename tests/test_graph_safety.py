"""A checkpoint's graph never runs code: verify checks every op it would run, never runs the
graph's own restore op, and refuses a graph that would touch files (#16). Also the TF side's
phase timings and the reference cache (#19)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

TINY_MAPPING = '''
from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target, VerifySpec


def build(in_channels=1, out_channels=2):
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, 1, bias=False)

        def forward(self, x):
            return self.conv(x)

    return Tiny()


MAPPING = Mapping(
    name="tiny", description="one 1x1x1 convolution", source=Source(origin="a test"),
    targets=[Target("torch", "Conv3d", build, [Rename("w", "conv.weight", "conv3d")])],
    ignore=[TRAINING_ONLY],
    verify=VerifySpec(tf_input="images:0", tf_output="logits:0"),
)
'''


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny_mapping.py"
    path.write_text(TINY_MAPPING)
    return str(path)


def _graph(tf, evil: str, target):
    """A 1x1x1 conv graph; ``evil``: "" (clean), "output" (a WriteFile the output depends on)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [1, None, None, None, 1], name="images")
        w = v1.get_variable("w", initializer=np.random.default_rng(0).standard_normal((1, 1, 1, 1, 2)).astype(np.float32))
        y = tf.nn.conv3d(x, w, [1] * 5, "SAME")
        if evil == "output":
            write = tf.raw_ops.WriteFile(filename=str(target), contents="pwned")
            with tf.control_dependencies([write]):
                y = tf.identity(y)
        tf.identity(y, name="logits")
    return graph, w


def _meta_checkpoint(tf, d, evil: str, target):
    """A TF1 Saver checkpoint with its .meta; "restore" points the SaverDef's restore op at a
    WriteFile, as the crafted input of the review did."""
    v1 = tf.compat.v1
    graph, _ = _graph(tf, "output" if evil == "output" else "", target)
    with graph.as_default():
        saver = v1.train.Saver()
        if evil == "restore":
            tf.raw_ops.WriteFile(filename=str(target), contents="pwned", name="evil_restore")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, os.path.join(d, "model.ckpt"), write_meta_graph=False)
        meta = saver.export_meta_graph()
    if evil == "restore":
        meta.saver_def.restore_op_name = "evil_restore"
    with open(prefix + ".meta", "wb") as fh:
        fh.write(meta.SerializeToString())
    return prefix


def _frozen(tf, d, target):
    v1 = tf.compat.v1
    graph, _ = _graph(tf, "output", target)
    with graph.as_default(), v1.Session(graph=graph) as sess:
        sess.run(v1.global_variables_initializer())
        frozen = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["logits"])
    path = os.path.join(d, "frozen.pb")
    with open(path, "wb") as fh:
        fh.write(frozen.SerializeToString())
    return path


def _savedmodel(tf, d, target):
    v1 = tf.compat.v1
    graph, _ = _graph(tf, "output", target)
    path = os.path.join(d, "sm")
    with graph.as_default(), v1.Session(graph=graph) as sess:
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(sess, ["serve"])
        builder.save()
    return path


@pytest.mark.parametrize("kind", ["meta-restore", "meta-output", "frozen", "savedmodel"])
def test_a_graph_that_would_write_a_file_is_refused_and_writes_nothing(kind, tf, tiny, tmp_path, cli_run):
    target = tmp_path / "pwned.txt"
    d = tmp_path / kind
    d.mkdir()
    if kind.startswith("meta"):
        ckpt = _meta_checkpoint(tf, str(d), kind.split("-")[1], target)
    elif kind == "frozen":
        ckpt = _frozen(tf, str(d), target)
        with open(tiny, "a") as fh:  # a frozen graph's weight is the constant of the same name
            fh.write("from tf2pt.mapping import GRAPH_CONSTANTS\n"
                     "MAPPING = __import__('dataclasses').replace(MAPPING, ignore=[GRAPH_CONSTANTS])\n")
    else:
        ckpt = _savedmodel(tf, str(d), target)
    assert not target.exists()
    r = cli_run("verify", ckpt, "-m", tiny, "--synthetic", "4", "4", "4")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "WriteFile" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not target.exists()


def test_a_clean_graph_runs_restored_by_tf2pt_not_by_its_saver(tf, tiny, tmp_path, cli_run):
    """The same graph without the WriteFile passes, its variable given TF's checkpoint value by
    tf2pt's assignment; the report breaks the TF side into phases."""
    ckpt = _meta_checkpoint(tf, str(tmp_path), "", tmp_path / "never")
    r = cli_run("verify", ckpt, "-m", tiny, "--synthetic", "4", "4", "4", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tf_side"] == "original-graph" and report["max_abs_error"] < 1e-6
    phases = {"tf_import_seconds", "tf_graph_load_seconds", "tf_forward_seconds", "torch_import_seconds",
              "convert_seconds", "model_build_seconds", "torch_forward_seconds", "compare_seconds", "total_seconds"}
    assert phases <= set(report["timings"]) and all(report["timings"][k] >= 0 for k in phases)
    assert report["tf_notes"] == []  # the Saver's own ops are not worth a note


def test_trust_graph_runs_it_anyway(tf, tiny, tmp_path, cli_run):
    target = tmp_path / "written.txt"
    ckpt = _meta_checkpoint(tf, str(tmp_path), "output", target)
    r = cli_run("verify", ckpt, "-m", tiny, "--synthetic", "4", "4", "4", "--trust-graph")
    assert r.returncode == 0, r.stdout + r.stderr
    assert target.read_text() == "pwned"  # what --trust-graph allows, shown


def test_the_reference_cache_skips_tensorflow_the_second_time(tf, tiny, tmp_path, cli_run):
    ckpt = _meta_checkpoint(tf, str(tmp_path), "", tmp_path / "never")
    cache = tmp_path / "cache"
    reports = []
    for i in range(2):
        r = cli_run("verify", ckpt, "-m", tiny, "--synthetic", "4", "4", "4", "--reference-cache", cache,
                    "--json", tmp_path / f"r{i}.json")
        assert r.returncode == 0, r.stdout + r.stderr
        reports.append(json.loads((tmp_path / f"r{i}.json").read_text()))
    assert [r["reference_cache"]["hit"] for r in reports] == [False, True]
    assert "tf_process_seconds" in reports[0]["timings"] and "tf_process_seconds" not in reports[1]["timings"]
    assert reports[0]["max_abs_error"] == reports[1]["max_abs_error"] and len(list(cache.iterdir())) == 1
    # another input is another key
    r = cli_run("verify", ckpt, "-m", tiny, "--synthetic", "4", "4", "6", "--reference-cache", cache)
    assert r.returncode == 0 and len(list(cache.iterdir())) == 2


def test_the_closure_is_what_runs_and_io_elsewhere_is_noted():
    """graphcheck on hand-made GraphDef-like objects (no TF): a fed input cuts the walk, control
    inputs count, called functions are checked, and an unused input pipeline is only noted."""
    from types import SimpleNamespace as NS

    from tf2pt.errors import UnsafeGraphError
    from tf2pt.verify import graphcheck

    def node(name, op, *inputs, **funcs):
        attr = {k: NS(func=NS(name=v), list=None) for k, v in funcs.items()}
        return NS(name=name, op=op, input=list(inputs), attr=attr)

    fn = NS(signature=NS(name="body"), node_def=[node("r", "ReadFile")])
    g = NS(node=[node("pipe", "TFRecordDataset"), node("img", "PlaceholderWithDefault", "pipe"),
                 node("w", "Const"), node("y", "Mul", "img", "w"), node("z", "Identity", "y", "^init"),
                 node("init", "NoOp"), node("loop", "While", "y", body="body")],
           library=NS(function=[fn]))
    assert graphcheck.closure(g, ["z:0"], ["img:0"]) == {"z", "y", "w", "init"}
    assert "pipe" in graphcheck.closure(g, ["z:0"], [])
    graphcheck.check_run(g, ["z:0"], ["img:0"], "g.pb")
    with pytest.raises(UnsafeGraphError, match="TFRecordDataset"):
        graphcheck.check_run(g, ["z:0"], [], "g.pb")
    with pytest.raises(UnsafeGraphError, match="ReadFile.*function 'body'"):
        graphcheck.check_run(g, ["loop"], ["img:0"], "g.pb")
    notes = graphcheck.io_elsewhere(g, graphcheck.closure(g, ["z:0"], ["img:0"]))
    assert notes == ["the graph also holds I/O ops that verify does not run (ReadFile, TFRecordDataset)"]


def test_a_tensorflow_failure_comes_back_whole(tf, tiny, tmp_path, cli_run):
    """TF's exception type and message, not only the last line of its stderr."""
    v1 = tf.compat.v1
    graph, w = _graph(tf, "", tmp_path / "never")
    with graph.as_default():
        extra = v1.placeholder(tf.float32, [], name="needs_a_feed")
        y = graph.get_tensor_by_name("logits:0")
        tf.identity(y * extra, name="scaled")
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"))
    r = cli_run("verify", prefix, "-m", tiny, "--synthetic", "4", "4", "4", "--tf-output", "scaled:0")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "the TensorFlow side failed: InvalidArgumentError:" in line and "needs_a_feed" in line, line


def test_missing_dependencies_are_named_at_once_before_any_work(run_cli):
    """Without TensorFlow (and nilearn, for the default volume), one line names what to install."""
    from conftest import EXAMPLE

    r = run_cli("verify", EXAMPLE, "-m", "highresnet", block=("tensorflow", "nilearn"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "tensorflow-cpu, nilearn" in lines[0] and "pip install 'tf2pt[verify]'" in lines[0]

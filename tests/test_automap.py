"""tf2pt map: mappings proposed into users' own torch models, checked like the built-ins and by
running both frameworks. No test here uses a hand-written mapping."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, EXAMPLE, PUBLISHED_PTH
from test_deepbrain import deepbrain_graph  # noqa: F401  (fixture)
import tf2pt
from tf2pt.plan import plan
from tf2pt.read import open_checkpoint
from tf2pt.registry import load_file
from tf2pt.transforms import TRANSFORMS, get_transform

MODELS = DATA / "automap_models.py"
HIGHRES_ARGS = '{"args": [1, 160], "kwargs": {"add_dropout_layer": true}}'


def assert_conforms(mapping_path, checkpoint) -> None:
    """The checks tests/test_mappings_conformance.py makes of every built-in mapping."""
    m = load_file(str(mapping_path))
    assert m.description and m.source.origin and m.source.variables
    for t in m.targets:
        with torch.device("meta"):
            model = t.build()
        keys = set(model.state_dict())
        for rule in t.rename:
            get_transform(rule.transform)  # a known name, or a parametrised one (dense_after_flatten:4x4x4)
            re.compile(rule.pattern)
        for fill in t.fill:
            assert any(fill.matches(k) for k in keys), f"fill rule {fill.pattern!r} matches no key"
        modules = dict(model.named_modules())
        if m.verify is not None:
            assert set(t.layers) <= set(m.verify.layers)
            assert all(path in modules for path in t.layers.values())
        with open_checkpoint(checkpoint) as ckpt:
            inference = sum(v.role == "inference" for v in ckpt.variables.values())
            assert inference == m.source.variables
            entries, report = plan(ckpt, m, t)
            assert report.problems == []
            # every variable mapped (a Keras GRU's one bias fills two keys: count the variables)
            assert len({row["tf"] for row in report.mapped}) == m.source.variables
            assert len(entries) == len(report.mapped) + len(report.filled)


def _map(cli_run, checkpoint, model, out, *extra):
    r = cli_run("map", checkpoint, "--model", model, "-o", out, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.exists()
    return r


# ---------------------------------------------------------------------------------------------
# an independent implementation: the PyPI highresnet package, bit for bit
# ---------------------------------------------------------------------------------------------


def test_highres3dnet_into_the_highresnet_package_reproduces_the_published_weights(cli_run, tmp_path):
    pytest.importorskip("highresnet")
    if not PUBLISHED_PTH.exists():
        pytest.skip(f"{PUBLISHED_PTH} is not at hand")
    out = tmp_path / "highresnet_map.py"
    # ties by order here (the running check has its own test below, and TF costs a start-up)
    r = _map(cli_run, EXAMPLE, "highresnet:HighRes3DNet", out, "--model-kwargs", HIGHRES_ARGS, "--no-settle-ties")
    assert "graph order (model.ckpt-33000.meta)" in r.stderr and "execution order" in r.stderr
    text = out.read_text()
    assert "from highresnet import HighRes3DNet" in text and "TRAINING_ONLY" in text
    assert "# ambiguous: decided by order" in text  # many same-shape convs and batch norms
    assert_conforms(out, EXAMPLE)
    state, report = tf2pt.convert(str(EXAMPLE), mapping=str(out))
    published = torch.load(PUBLISHED_PTH, weights_only=True)
    assert set(state) == set(published)
    for key, value in published.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_python_api_gives_the_same_file(tmp_path):
    pytest.importorskip("highresnet")
    proposal = tf2pt.propose_mapping(str(EXAMPLE), "highresnet:HighRes3DNet",
                                     {"args": [1, 160], "kwargs": {"add_dropout_layer": True}}, run_ties=False)
    assert len(proposal.pairs) == 42 and proposal.graph_io["input"] == "images:0"
    assert proposal.graph_io["output"] == "logits:0" and proposal.spatial_multiple == 4  # dilation 4
    assert proposal.ambiguous and all(p.decided_by == "order" for p in proposal.ambiguous)
    path = tmp_path / "m.py"
    path.write_text(proposal.render())
    assert_conforms(path, EXAMPLE)


# ---------------------------------------------------------------------------------------------
# MONAI's HighResNet and a differently written deepbrain U-Net, verified against TF's own graphs
# ---------------------------------------------------------------------------------------------


def test_highres3dnet_into_monai_passes_verify(cli_run, tmp_path, tf):
    pytest.importorskip("monai")
    out = tmp_path / "monai_map.py"
    r = _map(cli_run, EXAMPLE, f"{MODELS}:monai_highresnet", out)  # ties settled by running where they can be
    assert "6 tied layers settled by their activations; 29 left decided by order" in r.stderr
    assert out.read_text().count("# tie settled by running") == 6
    assert_conforms(out, EXAMPLE)
    from tf2pt.testing import assert_parity

    report = assert_parity(str(EXAMPLE), str(out), synthetic=(24, 24, 24))
    assert report["tf_side"] == "original-graph" and report["tf_tensors"] == {"input": "images:0", "output": "logits:0"}


def test_deepbrain_into_another_unet_passes_verify(deepbrain_graph, cli_run, tmp_path, tf):
    out = tmp_path / "unet_map.py"
    _map(cli_run, deepbrain_graph, f"{MODELS}:deepbrain_style_unet", out)
    text = out.read_text()
    assert "GRAPH_CONSTANTS" in text and "# ambiguous" not in text  # no two layers alike
    assert "tf_input='img:0'" in text and "tf_output='prob:0'" in text and "{'training:0': False}" in text
    assert_conforms(out, deepbrain_graph)
    rows = {r.key: r.pattern for r in load_file(str(out)).default_target.rename}
    assert rows["down.0.a.weight"] == "conv3d/kernel" and rows["down.0.b.weight"] == "conv3d_1/kernel"
    assert rows["upsample.0.weight"] == "conv3d_transpose/kernel" and rows["merge.2.weight"] == "conv3d_8/kernel"
    from tf2pt.testing import assert_parity

    report = assert_parity(deepbrain_graph, str(out), synthetic=(32, 32, 32))
    assert report["tf_side"] == "original-graph"


def test_verify_with_model_proposes_and_verifies(deepbrain_graph, cli_run, tmp_path, tf):
    r = cli_run("verify", deepbrain_graph, "--model", f"{MODELS}:deepbrain_style_unet", "--synthetic", 32, 32, 32)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and "tf2pt map:" in r.stderr


# ---------------------------------------------------------------------------------------------
# a tie: two same-shape convolutions registered in the opposite order to their execution
# ---------------------------------------------------------------------------------------------


def write_tie_checkpoint(tf, directory: Path) -> str:
    """A TF1 Saver checkpoint (with its .meta) of 3D convs stem -> mix_b -> mix_a -> head, trained
    one Adam step: ``mix_b`` runs first but sorts after ``mix_a`` by name."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.default_rng(5)
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, None, None, None, 1], name="images")
        labels = v1.placeholder(tf.int32, [None, None, None, None], name="labels")

        def conv(x, name, cin, cout, k, relu=True):
            with v1.variable_scope(name):
                w = v1.get_variable("kernel", initializer=rng.standard_normal((k, k, k, cin, cout)).astype(np.float32) * 0.3)
                b = v1.get_variable("bias", initializer=rng.standard_normal(cout).astype(np.float32))
            y = tf.nn.bias_add(tf.nn.conv3d(x, w, [1] * 5, "SAME"), b)
            return tf.nn.relu(y) if relu else y

        with v1.variable_scope("net"):
            h = conv(images, "stem", 1, 4, 3)
            h = conv(h, "mix_b", 4, 4, 3)
            h = conv(h, "mix_a", 4, 4, 3)
            logits = tf.identity(conv(h, "head", 4, 2, 1, relu=False), name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train, {images: rng.standard_normal((2, 8, 8, 8, 1)).astype(np.float32),
                             labels: rng.integers(0, 2, (2, 8, 8, 8)).astype(np.int32)})
            return saver.save(sess, str(directory / "model.ckpt"), global_step=1)


@pytest.fixture(scope="module")
def tie_checkpoint(tmp_path_factory, tf):
    return write_tie_checkpoint(tf, tmp_path_factory.mktemp("tie"))


def _tf_value(checkpoint, name):
    with open_checkpoint(checkpoint) as ckpt:
        return torch.from_numpy(np.ascontiguousarray(TRANSFORMS["conv3d"](ckpt.read(name))))


def test_tie_is_settled_by_running_the_graph(tie_checkpoint, cli_run, tmp_path):
    out = tmp_path / "tie_map.py"
    r = _map(cli_run, tie_checkpoint, f"{MODELS}:TieNet", out)
    text = out.read_text()
    assert "# ambiguous" not in text and text.count("# tie settled by running: error") == 2
    assert "ties settled by running both frameworks: 2" in r.stderr
    assert_conforms(out, tie_checkpoint)
    state, _ = tf2pt.convert(tie_checkpoint, mapping=str(out))
    assert torch.equal(state["first.weight"], _tf_value(tie_checkpoint, "net/mix_b/kernel"))
    assert torch.equal(state["second.weight"], _tf_value(tie_checkpoint, "net/mix_a/kernel"))
    proposal = tf2pt.propose_mapping(tie_checkpoint, f"{MODELS}:TieNet")
    pair = next(p for p in proposal.pairs if p.tf.scope == "net/mix_b")
    assert pair.decided_by == "running" and pair.module.path == "first"
    assert pair.evidence["first"] < 1e-4 < pair.evidence["second"]  # the evidence: each candidate's error


def test_tie_without_the_graph_is_flagged_ambiguous(tie_checkpoint, cli_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in Path(tie_checkpoint).parent.iterdir():
        if f.name.startswith("model.ckpt") and not f.name.endswith(".meta"):
            shutil.copy(f, bare / f.name)
    out = tmp_path / "tie_map.py"
    r = _map(cli_run, bare / Path(tie_checkpoint).name, f"{MODELS}:TieNet", out)
    text = out.read_text()
    assert "natural sort" in r.stderr and "ambiguous: 2 picks" in r.stderr
    flagged = [line for line in text.splitlines() if line.rstrip().endswith("# ambiguous: decided by order")]
    assert {re.search(r"'(\w+)\.weight'", line).group(1) for line in flagged} == {"first", "second"}
    assert "VERIFY = None" in text  # no graph: no verify facts to infer
    assert_conforms(out, str(bare / Path(tie_checkpoint).name))


# ---------------------------------------------------------------------------------------------
# verify --per-layer with the layer pairs the matcher found
# ---------------------------------------------------------------------------------------------


def test_verify_with_model_per_layer_compares_every_matched_layer_in_the_graph(tie_checkpoint, cli_run, tmp_path):
    """Each matched TF layer's output tensor in the original graph (the .meta) against its
    module's output, in TF order, with the pairs the matcher found (ties settled by running)."""
    import json

    report = tmp_path / "r.json"
    r = cli_run("verify", tie_checkpoint, "--model", f"{MODELS}:TieNet", "--per-layer", "--synthetic", 12, 12, 12,
                "--json", report)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["tf_side"] == "original-graph" and d["first_divergent_layer"] is None
    assert [(row["layer"], row["module"], row["status"]) for row in d["per_layer"]] == [
        ("net.stem", "stem", "ok"), ("net.mix_b", "first", "ok"), ("net.mix_a", "second", "ok"),
        ("net.head", "head", "ok")]
    assert all(row["max_rel_error"] < 1e-5 for row in d["per_layer"])


def test_per_layer_names_the_first_layer_a_wrong_pick_breaks(tie_checkpoint, cli_run, tmp_path):
    """The generated file carries the layer pairs (VerifySpec.layer_tensors, Target.layers): with
    its two tied rows swapped by hand, verify --per-layer fails at the first swapped layer."""
    import json

    out = tmp_path / "tie_map.py"
    text = tf2pt.propose_mapping(tie_checkpoint, f"{MODELS}:TieNet", run_ties=False).render()  # order: right here
    assert "layer_tensors={" in text and "'net.mix_b': 'net/BiasAdd_1:0'" in text
    out.write_text(text.replace("'first.weight'", "'@@'").replace("'second.weight'", "'first.weight'")
                   .replace("'@@'", "'second.weight'").replace("'first.bias'", "'@@'")
                   .replace("'second.bias'", "'first.bias'").replace("'@@'", "'second.bias'"))
    assert_conforms(out, tie_checkpoint)
    report = tmp_path / "r.json"
    r = cli_run("verify", tie_checkpoint, "--mapping", out, "--per-layer", "--synthetic", 12, 12, 12, "--json", report)
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["first_divergent_layer"] == "net.mix_b"
    assert [row["status"] for row in d["per_layer"]] == ["ok", "DIVERGES", "DIVERGES", "DIVERGES"]
    assert "first divergent layer: net.mix_b" in r.stdout


def test_per_layer_with_model_needs_a_graph(tie_checkpoint, cli_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in Path(tie_checkpoint).parent.iterdir():
        if f.name.startswith("model.ckpt") and not f.name.endswith(".meta"):
            shutil.copy(f, bare / f.name)
    r = cli_run("verify", bare / Path(tie_checkpoint).name, "--model", f"{MODELS}:TieNet", "--per-layer",
                "--synthetic", 12, 12, 12)
    assert r.returncode == 2 and "has no graph holding them" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# honest failure
# ---------------------------------------------------------------------------------------------


def test_highres3dnet_into_deepbrains_unet_fails_with_the_first_point_of_departure(cli_run, tmp_path):
    out = tmp_path / "wrong.py"
    r = cli_run("map", EXAMPLE, "--model", "tf2pt.models.deepbrain:DeepBrainUNet", "-o", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert ("TF layer HighRes3DNet/conv_0_bn_relu/conv_ (conv 3x3x3, 1->16, no bias) has no counterpart; "
            "the model's next unmatched module is encoder1.0 (conv 3x3x3, 1->8)") in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_layer_is_named(cli_run, tmp_path):
    pytest.importorskip("highresnet")
    out = tmp_path / "m.py"
    r = cli_run("map", EXAMPLE, "--model", "highresnet:HighRes3DNet", "--model-kwargs", "[1, 160]", "-o", out)
    assert r.returncode == 2 and not out.exists()
    assert "TF layer HighRes3DNet/conv_1_bn_relu/conv_ (conv 1x1x1, 64->80, no bias) has no counterpart" in r.stderr


# ---------------------------------------------------------------------------------------------
# convert --model
# ---------------------------------------------------------------------------------------------


def test_convert_with_model_saves_the_mapping_beside_the_output(deepbrain_graph, cli_run, tmp_path):
    out = tmp_path / "unet.safetensors"
    r = cli_run("convert", deepbrain_graph, "--model", f"{MODELS}:deepbrain_style_unet", "-o", out)
    assert r.returncode == 0, r.stderr
    mapping = tmp_path / "unet.mapping.py"
    assert out.exists() and mapping.exists() and "mapped:   23" in r.stderr
    from safetensors.torch import load_file as load_st

    model = load_file(str(mapping)).default_target.build()
    model.load_state_dict(load_st(out), strict=True)


def test_convert_needs_exactly_one_of_mapping_and_model(cli_run, tmp_path):
    out = tmp_path / "x.safetensors"
    r = cli_run("convert", EXAMPLE, "-o", out)
    assert r.returncode == 2 and "exactly one of --mapping" in r.stderr
    r = cli_run("convert", EXAMPLE, "--mapping", "highresnet", "--model", "x:y", "-o", out)
    assert r.returncode == 2 and "exactly one of --mapping" in r.stderr and not out.exists()


def test_convert_with_a_model_that_does_not_fit_leaves_nothing(cli_run, tmp_path):
    out = tmp_path / "x.safetensors"
    r = cli_run("convert", EXAMPLE, "--model", "tf2pt.models.deepbrain:DeepBrainUNet", "-o", out)
    assert r.returncode == 2 and "has no counterpart" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_facts_of_a_training_graph_name_its_output(tie_checkpoint, tmp_path, tf):
    """The .meta of a training graph (Adam, a labels placeholder, gradients): the facts point at
    the forward's input and output, and verify passes with them."""
    out = tmp_path / "tie_map.py"
    out.write_text(tf2pt.propose_mapping(tie_checkpoint, f"{MODELS}:TieNet", run_ties=False).render())
    verify = load_file(str(out)).verify
    assert (verify.tf_input, verify.tf_output) == ("images:0", "net/logits:0")
    from tf2pt.testing import assert_parity

    assert_parity(tie_checkpoint, str(out), synthetic=(12, 12, 12))


def test_names_from_a_hostile_checkpoint_stay_strings_and_comments():
    import ast

    from tf2pt.automap.render import _c, _s

    for text in ['a"b', "a'b", 'x"\n__import__("os").system("echo hi")\n"', "a\\", r"conv\.0/w", "\u2028x"]:
        assert ast.literal_eval(_s(text)) == text
        assert "\n" not in _c(text) and "\u2028" not in _c(text) and "\r" not in _c(text)


def test_map_refuses_to_overwrite_and_wants_a_py_file(cli_run, tmp_path):
    out = tmp_path / "m.py"
    out.write_text("# mine\n")
    r = cli_run("map", EXAMPLE, "--model", "tf2pt.models.deepbrain:DeepBrainUNet", "-o", out)
    assert r.returncode == 2 and "already exists" in r.stderr and out.read_text() == "# mine\n"
    r = cli_run("map", EXAMPLE, "--model", "tf2pt.models.deepbrain:DeepBrainUNet", "-o", tmp_path / "m.txt")
    assert r.returncode == 2 and "must end in .py" in r.stderr
    r = cli_run("map", EXAMPLE, "--model", "no_such_module_here:Net", "-o", tmp_path / "n.py")
    assert r.returncode == 2 and "cannot import model module 'no_such_module_here'" in r.stderr
    assert not (tmp_path / "n.py").exists()


def test_a_tf2_object_graph_checkpoint_maps_by_its_readable_names(checkpoints, cli_run, tmp_path):
    """A TF2 object-based checkpoint of a small Keras model (conv, BN, dense; Adam slots): grouped
    by the object graph's readable names, ordered by natural sort (there is no graph)."""
    ckpt = checkpoints("tf2_keras")
    out = tmp_path / "keras_map.py"
    _map(cli_run, ckpt, f"{MODELS}:SmallKerasLikeNet", out)
    assert_conforms(out, ckpt)
    state, _ = tf2pt.convert(ckpt, mapping=str(out))
    with open_checkpoint(ckpt) as c:
        by_readable = {v.readable_name: c.read(n) for n, v in c.variables.items() if v.role == "inference"}
    assert torch.equal(state["classifier.weight"], torch.from_numpy(by_readable["dense/kernel"].T.copy()))
    assert torch.equal(state["features.1.running_var"], torch.from_numpy(by_readable["bn/moving_variance"]))
    assert torch.equal(state["features.0.weight"],
                       torch.from_numpy(np.ascontiguousarray(by_readable["conv2d_1/kernel"].transpose(3, 2, 0, 1))))


def test_batch_norm_against_group_norm_is_named(cli_run, tmp_path):
    model = tmp_path / "gn_model.py"
    model.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv3d(1, 16, 3, padding=1, bias=False), nn.GroupNorm(4, 16), nn.ReLU())\n")
    out = tmp_path / "m.py"
    r = cli_run("map", EXAMPLE, "--model", f"{model}:build", "-o", out)
    assert r.returncode == 2 and not out.exists()
    assert "the model's module 1 (GroupNorm with weight [16], bias [16]) is of a kind tf2pt cannot match" in r.stderr


def write_bn_tie_checkpoint(tf, directory: Path) -> str:
    """stem conv -> bn_y (fused, runs first) -> mid conv -> bn_x (fused) -> head, one Adam step."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.default_rng(7)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, None, None, None, 1], name="images")
        labels = v1.placeholder(tf.int32, [None, None, None, None], name="labels")

        def conv(x, name, cin, cout, k):
            with v1.variable_scope(name):
                w = v1.get_variable("kernel", initializer=f32(k, k, k, cin, cout) * 0.3)
                b = v1.get_variable("bias", initializer=f32(cout))
            return tf.nn.bias_add(tf.nn.conv3d(x, w, [1] * 5, "SAME"), b)

        def bn(x, name, c):
            with v1.variable_scope(name):
                gamma = v1.get_variable("gamma", initializer=1 + 0.3 * f32(c))
                beta = v1.get_variable("beta", initializer=f32(c))
                mean = v1.get_variable("moving_mean", initializer=f32(c), trainable=False)
                var = v1.get_variable("moving_variance", initializer=np.abs(f32(c)) + 0.5, trainable=False)
            y, _, _ = v1.nn.fused_batch_norm(x, gamma, beta, mean, var, epsilon=1e-3, is_training=False,
                                             data_format="NDHWC")
            return y

        with v1.variable_scope("net"):
            h = tf.nn.relu(bn(conv(images, "stem", 1, 4, 3), "bn_y", 4))
            h = tf.nn.relu(bn(conv(h, "mid", 4, 4, 3), "bn_x", 4))
            logits = tf.identity(conv(h, "head", 4, 2, 1), name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train, {images: f32(2, 8, 8, 8, 1), labels: rng.integers(0, 2, (2, 8, 8, 8)).astype(np.int32)})
            return saver.save(sess, str(directory / "model.ckpt"), global_step=1)


def test_batch_norm_ties_are_settled_by_the_fused_op(tf, tmp_path):
    ckpt = write_bn_tie_checkpoint(tf, tmp_path)
    proposal = tf2pt.propose_mapping(ckpt, f"{MODELS}:BNTieNet")
    pairs = {p.tf.scope: p for p in proposal.pairs}
    assert pairs["net/bn_y"].module.path == "early" and pairs["net/bn_x"].module.path == "late"
    assert pairs["net/bn_y"].decided_by == "running" and pairs["net/bn_y"].evidence["late"] > 1e-2
    assert not proposal.ambiguous
    out = tmp_path / "bn_map.py"
    out.write_text(proposal.render())
    assert_conforms(out, ckpt)
    from tf2pt.testing import assert_parity

    assert_parity(ckpt, str(out), synthetic=(12, 12, 12))


def test_a_kernel_the_graph_reads_transposed_is_not_transposed_again(tf, tmp_path):
    """A square dense kernel has the same shape either way round: the graph's ``MatMul``
    ``transpose_b`` says which way it is read."""
    v1 = tf.compat.v1
    rng = np.random.default_rng(3)
    w1, b1 = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w2, b2 = rng.standard_normal((4, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        h = tf.nn.relu(tf.matmul(x, tf.constant(w1, name="fc1/kernel")) + tf.constant(b1, name="fc1/bias"))
        tf.identity(tf.matmul(h, tf.constant(w2, name="fc2/kernel"), transpose_b=True)
                    + tf.constant(b2, name="fc2/bias"), name="logits")
    pb = tmp_path / "mlp.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    model = tmp_path / "mlp.py"
    model.write_text("from torch import nn\n"
                     "def build():\n"
                     "    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4))\n")
    proposal = tf2pt.propose_mapping(str(pb), f"{model}:build")
    rows = {key: (tf_name, t) for p in proposal.pairs for tf_name, key, t in p.rows}
    assert rows["0.weight"] == ("fc1/kernel", "dense") and rows["2.weight"] == ("fc2/kernel", "identity")
    out = tmp_path / "mlp_map.py"
    out.write_text(proposal.render())
    assert_conforms(out, str(pb))
    state, _ = tf2pt.convert(str(pb), mapping=str(out))
    net = load_file(str(out)).default_target.build()
    net.load_state_dict(state)
    xs = rng.standard_normal((3, 6)).astype(np.float32)
    with v1.Session(graph=graph) as sess:
        expected = sess.run("logits:0", {"x:0": xs})
    with torch.no_grad():
        assert np.allclose(net(torch.from_numpy(xs)).numpy(), expected, atol=1e-5)


def test_a_tf_graph_that_flattens_channels_last_gets_its_dense_rows_permuted(tf, tmp_path):
    """conv (NHWC) -> reshape -> matmul in a frozen graph, into Conv2d -> nn.Flatten -> Linear:
    the kernel's rows are in NHWC order, nn.Flatten's in NCHW; found by running the torch model.
    The same graph built NCHW flattens as nn.Flatten does: plain ``dense``."""
    from tf2pt.automap.tflayers import graph_channels_first, read_graph

    v1 = tf.compat.v1
    rng = np.random.default_rng(11)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    fc = rng.standard_normal((4 * 6 * 6, 3)).astype(np.float32)

    def frozen(fmt):
        graph = tf.Graph()
        with graph.as_default():
            x = v1.placeholder(tf.float32, [None, 6, 6, 2] if fmt == "NHWC" else [None, 2, 6, 6], name="x")
            h = tf.nn.relu(tf.nn.conv2d(x, tf.constant(w, name="conv/kernel"), 1, "SAME", data_format=fmt))
            tf.identity(tf.matmul(tf.reshape(h, [-1, 4 * 6 * 6]), tf.constant(fc, name="fc/kernel")), name="logits")
        return graph

    graph = frozen("NHWC")
    pb = tmp_path / "cnn.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    model = tmp_path / "cnn.py"
    model.write_text("from torch import nn\n"
                     "def build():\n"
                     "    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),\n"
                     "                         nn.Linear(144, 3, bias=False))\n")
    proposal = tf2pt.propose_mapping(str(pb), f"{model}:build", input_shape=[1, 2, 6, 6])
    rows = {key: t for p in proposal.pairs for _, key, t in p.rows}
    assert rows == {"0.weight": "conv2d", "3.weight": "dense_after_flatten:6x6x4"}
    out = tmp_path / "cnn_map.py"
    out.write_text(proposal.render())
    assert_conforms(out, str(pb))
    state, _ = tf2pt.convert(str(pb), mapping=str(out))
    net = load_file(str(out)).default_target.build()
    net.load_state_dict(state)
    xs = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    with v1.Session(graph=graph) as sess:
        expected = sess.run("logits:0", {"x:0": xs})
    with torch.no_grad():
        got = net(torch.from_numpy(np.ascontiguousarray(xs.transpose(0, 3, 1, 2)))).numpy()
    assert np.allclose(got, expected, atol=1e-4)
    nchw = tmp_path / "nchw.pb"
    nchw.write_bytes(frozen("NCHW").as_graph_def().SerializeToString())
    with open_checkpoint(str(nchw)) as ckpt:
        assert graph_channels_first(read_graph(ckpt))
    with open_checkpoint(str(pb)) as ckpt:
        assert not graph_channels_first(read_graph(ckpt))
    proposal = tf2pt.propose_mapping(str(nchw), f"{model}:build", input_shape=[1, 2, 6, 6])
    assert {key: t for p in proposal.pairs for _, key, t in p.rows}["3.weight"] == "dense"


@pytest.mark.parametrize("body,channels_first_input,flatten,note", [
    ("nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))", True,
     (4, 4, 4), "flattened channels-first"),
    ("Permuted()", True, None, "channels-last, as TF does"),  # flattens channels-last itself: the kernel as it is
    ("nn.Sequential(nn.Flatten(), nn.Linear(20, 3))", False, None, "channels-last"),  # [N, T, F]: TF's layout
    ("nn.Sequential(nn.Flatten(), nn.Linear(20, 3))", True, (5, 4), "channels-first"),  # a [N, C, L] map
    ("nn.Sequential(nn.Embedding(7, 4), nn.Flatten(), nn.Linear(20, 3))", True, None, "channels-last"),  # [N, T, F]
    ("nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))", True, None,
     "either order is the same"),
    ("nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 3))", True, (4, 4, 4),
     "module 2 (with weights) lies between"),  # its features are in the flatten order too: said
    ("nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(64, 64), Shuffle(), nn.Linear(64, 3))", True, None,
     "in an order tf2pt cannot tell"),
])
def test_flatten_orders_found_by_running_the_model(body, channels_first_input, flatten, note):
    from torch import nn

    from tf2pt.automap.torchmodules import execution_order, torch_modules

    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            y = torch.tanh(self.conv(x))
            return self.fc(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1))

    class Shuffle(nn.Module):  # a 3-D view of a vector, flattened again in another order
        def forward(self, x):
            return x.reshape(x.shape[0], 4, 4, 4).transpose(1, 3).reshape(x.shape[0], -1)

    model = eval(body, {"nn": nn, "Permuted": Permuted, "Shuffle": Shuffle})
    modules = torch_modules(model)
    shape = [1, 5] if "Embedding" in body else ([1, 4, 5] if "Linear(20" in body else [1, 2, 6, 6])
    order, ran, _ = execution_order(model, modules, shape, input_channels_first=channels_first_input)
    assert order.startswith("execution order"), order
    linear = [m for m in modules if m.kind == "dense"][-1]
    assert linear.flatten == flatten and note in linear.flatten_note

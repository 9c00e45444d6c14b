"""Issue 13's end-to-end acceptance: the fixtures' 2-D CNN (Conv2D stride 2 ``padding="same"``,
BN, Flatten, Dense) and text model (Embedding, Bidirectional LSTM, GRU, Dense), trained one
step and saved by real Keras 3 and Keras 2 (``tf_keras``) as ``.keras``, full-model ``.h5`` and
(Keras 2) weights-only ``.h5``, read by tf2pt's own reader and converted by the public API
(``tf2pt.convert``, strict) and the CLI (TensorFlow and Keras blocked) into plain torch modules
(``nn.Conv2d``-family / ``nn.LSTM`` / ``nn.GRU`` / ``tf2pt.nn``), whose outputs must equal the
Keras model's own prediction on random inputs within 1e-5 of the output's range.

The mapping is built from the reader's layer table (:func:`tf2pt.testing.keras_torch.layer_table`:
names, classes, configs) with :func:`tf2pt.keras_rules.keras_layer_rules`, so one piece of
code serves every format and both Kerases."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tf2pt.testing import keras_fixtures as kf

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tf2pt import nn as tfnn  # noqa: E402
from tf2pt.testing.keras_torch import ARCHITECTURE  # noqa: E402

pytestmark = pytest.mark.tf

#: (Keras version, model, format): every full-model and weights-only .h5 and .keras the fixtures write
CASES = [(v, k, f) for v in ("3", "2") for k in ("cnn", "rnn") for f in kf.FORMATS[v] if f in ("keras", "h5", "weights_h5")]
IDS = [kf.case_id(c) for c in CASES]


@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
    """``get(case)`` -> (path, Keras' prediction on random inputs, the inputs): the file written
    by real Keras after one training step, then loaded back by that Keras, which predicts."""
    pytest.importorskip("tensorflow", reason="Keras writes the test files")
    base = tmp_path_factory.mktemp("keras_e2e")
    cache = {}

    def get(case):
        if case not in cache:
            version, kind, fmt = case
            pytest.importorskip("tf_keras" if version == "2" else "keras", reason=f"Keras {version} is not installed")
            d = base / kf.case_id(case)
            d.mkdir()
            path = kf.write(d, kind, fmt, version)
            keras = kf.keras_module(version)
            if fmt == "weights_h5":  # weights only: Keras builds the model from code, other values, then loads
                model = kf.build(keras, kind, seed=99)
                model.load_weights(path)
            else:
                model = keras.models.load_model(path, compile=False)
            rng = np.random.default_rng(1234)
            if kind == "cnn":
                x = rng.standard_normal((6, 8, 8, 2)).astype(np.float32)
            else:
                x = rng.integers(0, 11, (6, 5)).astype(np.int32)
            cache[case] = (path, np.asarray(model.predict(x, batch_size=6, verbose=0)), x)
        return cache[case]

    return get


def torch_input(kind, x):
    if kind == "cnn":  # Keras is NHWC, the torch model NCHW
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    return torch.from_numpy(x.astype(np.int64))


def assert_close(got, expected, tol=1e-5):
    """Within ``tol`` of the output's range: a wrong layout, gate order or eps is off by far more."""
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert span > 1e-3, "a degenerate output range proves nothing"
    err = float(np.abs(got - expected).max())
    assert err <= tol * span, f"max error {err:.3g} > {tol} x range {span:.3g}"


def check_plain_modules(kind, model):
    """The user sees each layer as the plain torch (or tf2pt.nn) module it is; nothing opaque."""
    assert not isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule))
    if kind == "cnn":
        assert type(model.conv) is tfnn.Conv2dSame and isinstance(model.conv, nn.Conv2d)  # TF's asymmetric SAME
        assert model.conv.stride == (2, 2)
        assert type(model.bn) is nn.BatchNorm2d and model.bn.eps == pytest.approx(1e-3)  # Keras' eps, not torch's
        assert type(model.flatten) is nn.Flatten
        assert type(model.fc1) is nn.Linear and type(model.fc2) is nn.Linear
        assert type(model.conv_act) is nn.ReLU and type(model.fc1_act) is nn.Tanh
    else:
        assert type(model.embedding) is nn.Embedding
        assert type(model.lstm) is nn.LSTM and model.lstm.bidirectional and model.lstm.batch_first
        assert type(model.gru) is nn.GRU and model.gru.batch_first  # reset_after=True: torch's GRU is exact
        assert type(model.dense) is nn.Linear
    leaves = [m for m in model.modules() if not list(m.children())]
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.Flatten, nn.Linear, nn.Embedding, nn.LSTM, nn.GRU, nn.ReLU, nn.Tanh,
               nn.Identity)
    assert all(isinstance(m, allowed) for m in leaves), [type(m) for m in leaves]


def mapping_for(path, kind):
    from tf2pt.read import open_checkpoint
    from tf2pt.testing.keras_torch import keras_mapping, layer_table

    with open_checkpoint(path) as ckpt:
        table = layer_table(ckpt)
        n_training = sum(v.role == "training" for v in ckpt.variables.values())
        kind_read = ckpt.kind
    return keras_mapping(kind, table), table, n_training, kind_read


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_converts_to_plain_torch_modules_that_equal_keras(case, keras_case):
    import tf2pt

    version, kind, fmt = case
    path, expected, x = keras_case(case)
    mapping, table, n_training, kind_read = mapping_for(path, kind)
    assert kind_read == {"keras": "keras", "h5": "keras_h5", "weights_h5": "keras_weights_h5"}[fmt]
    if fmt != "weights_h5":  # the file records the classes; only weights-only files need the model's code
        assert [r["class"] for r in table] == [row[1] for row in ARCHITECTURE[kind]]

    state, report = tf2pt.convert(path, mapping=mapping)  # strict: any problem raises
    assert report.problems == []
    # trained one step: the optimizer's state is there, and every bit of it is ignored as training-only
    assert n_training > 0 if fmt != "weights_h5" else n_training == 0
    assert len(report.ignored) == n_training
    assert all(row["rule"].startswith("training-only") for row in report.ignored)
    transforms = {row["transform"] for row in report.mapped}
    if kind == "cnn":
        assert "dense_after_flatten:4x4x4" in transforms and "conv2d" in transforms
    else:
        assert {"gru_kernel", "gru_bias_ih", "gru_bias_hh", "dense"} <= transforms

    model = mapping.default_target.build()
    model.load_state_dict(state, strict=True)
    model.eval()
    check_plain_modules(kind, model)
    with torch.no_grad():
        got = model(torch_input(kind, x))
    assert_close(got, expected)


@pytest.mark.parametrize("version", ["3", "2"])
def test_reader_reports_the_model_layers_the_same_in_every_format(version, keras_case):
    """A ``.keras`` file's LSTM cells inside a Bidirectional, and a GRU's cell, belong to the
    Bidirectional and the GRU (class and config), as in the ``.h5`` of the same model: the reader
    once reported the cell's path with the inner LSTM's class, so rules by class could not
    serve both formats (the backward copy even says ``go_backwards``)."""
    from tf2pt.read import open_checkpoint

    tables = {}
    for fmt in ("keras", "h5"):
        path = keras_case((version, "rnn", fmt))[0]
        with open_checkpoint(path) as ckpt:
            model_vars = [v for v in ckpt.variables.values() if v.role == "inference"]
            tables[fmt] = [(v.layer_class, (v.layer_config or {}).get("layer", {}).get("class_name"))
                           for v in model_vars]
            bidi = [v for v in model_vars if "forward_" in v.readable_name or "backward_" in v.readable_name]
            assert len(bidi) == 6 and {v.layer_class for v in bidi} == {"Bidirectional"}
            assert len({v.layer for v in bidi}) == 1 and "/" not in bidi[0].layer
            assert bidi[0].layer_config["merge_mode"] == "concat"
            gru = [v for v in model_vars if v.layer_class == "GRU"]
            assert len(gru) == 3 and len({v.layer for v in gru}) == 1 and "/" not in gru[0].layer
            assert gru[0].layer_config["reset_after"] is True
    assert tables["keras"] == tables["h5"]


#: a ``sitecustomize`` that makes these packages absent, as if not installed: ``import`` raises
#: ModuleNotFoundError and ``importlib.util.find_spec`` answers None. (``run_cli``'s ``block=``
#: raises from ``find_spec`` instead, which torch trips over where a real absence is harmless:
#: building ``nn.Embedding`` on the meta device imports ``torch._dynamo``, which probes
#: ``find_spec("tensorflow")`` to skip its files.)
HIDE = """
import sys
_HIDDEN = ('tensorflow', 'keras', 'tf_keras')
class _Hide:
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in _HIDDEN:
            return None
        find = getattr(self._finder, 'find_spec', None)
        return find(name, path, target) if find is not None else None
    def __getattr__(self, attr):
        return getattr(self._finder, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""


def _cli_convert(case, keras_case, run_cli, tmp_path, how):
    from safetensors.torch import load_file

    from tf2pt.read import open_checkpoint
    from tf2pt.testing.keras_torch import keras_mapping, layer_table

    version, kind, fmt = case
    path, expected, x = keras_case(case)
    with open_checkpoint(path) as ckpt:
        table = layer_table(ckpt)
    mapping_file = tmp_path / "keras_model_mapping.py"
    mapping_file.write_text("import json\n"
                            "from tf2pt.testing.keras_torch import keras_mapping\n"
                            f"TABLE = json.loads({json.dumps(json.dumps(table))})\n"
                            f"MAPPING = keras_mapping({kind!r}, TABLE)\n")
    out = tmp_path / "x.safetensors"
    args = ("convert", path, "-m", mapping_file, "-o", out)
    if how == "block":
        r = run_cli(*args, block=("tensorflow", "keras", "tf_keras"))
    else:
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text(HIDE)
        env = {"PYTHONPATH": str(hide) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        probe = run_cli("--version", env=env)  # the child really has no TensorFlow or Keras
        assert probe.returncode == 0, probe.stderr
        import subprocess
        import sys

        gone = subprocess.run([sys.executable, "-c", "import importlib.util as u; import sys\n"
                               "assert all(u.find_spec(n) is None for n in ('tensorflow', 'keras', 'tf_keras'))\n"
                               "try:\n    import tensorflow\nexcept ModuleNotFoundError:\n    sys.exit(0)\nsys.exit(1)"],
                              env=dict(os.environ, **env), capture_output=True, text=True)
        assert gone.returncode == 0, gone.stderr
        r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "problems: 0" in r.stdout + r.stderr
    model = keras_mapping(kind, table).default_target.build()
    model.load_state_dict(load_file(str(out)), strict=True)
    model.eval()
    check_plain_modules(kind, model)
    with torch.no_grad():
        got = model(torch_input(kind, x))
    assert_close(got, expected)


@pytest.mark.parametrize("case", [("3", "rnn", "keras"), ("2", "cnn", "h5"), ("2", "rnn", "weights_h5")],
                         ids=lambda c: kf.case_id(c))
def test_cli_converts_without_tensorflow_or_keras(case, keras_case, run_cli, tmp_path):
    """``tf2pt convert FILE -m mapping.py -o x.safetensors`` in a process where TensorFlow and
    both Kerases are absent; the mapping file holds the reader's layer table."""
    _cli_convert(case, keras_case, run_cli, tmp_path, "hide")


def test_cli_converts_with_tensorflow_blocked(keras_case, run_cli, tmp_path):
    """The same under ``run_cli``'s stricter ``block=`` (a model without nn.Embedding)."""
    _cli_convert(("3", "cnn", "h5"), keras_case, run_cli, tmp_path, "block")


def test_the_check_fails_for_the_near_misses(keras_case):
    """What the comparison catches: torch's symmetric padding for Keras' stride-2 SAME, torch's
    default BN eps, and the Dense rows left in NHWC order each miss Keras' output."""
    import tf2pt

    path, expected, x = keras_case(("3", "cnn", "keras"))
    mapping = mapping_for(path, "cnn")[0]
    state, _ = tf2pt.convert(path, mapping=mapping)

    def run(change):
        model = mapping.default_target.build()
        change(model)
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            return model(torch_input("cnn", x))

    assert_close(run(lambda m: None), expected)
    with pytest.raises(AssertionError, match="max error"):
        assert_close(run(lambda m: setattr(m, "conv", nn.Conv2d(2, 4, 3, stride=2, padding=1))), expected)
    with pytest.raises(AssertionError, match="max error"):
        assert_close(run(lambda m: setattr(m.bn, "eps", 1e-5)), expected)
    nhwc_rows = dict(state)
    w = state["fc1.weight"]  # [out, C*H*W] -> the rows Keras' kernel had, [out, H*W*C]
    nhwc_rows["fc1.weight"] = w.reshape(w.shape[0], 4, 4, 4).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    model = mapping.default_target.build()
    model.load_state_dict(nhwc_rows, strict=True)
    model.eval()
    with torch.no_grad(), pytest.raises(AssertionError, match="max error"):
        assert_close(model(torch_input("cnn", x)), expected)

"""Keras weight files (Keras 2 ``.h5``, Keras 3 ``.weights.h5`` / ``.keras`` / sharded
``.weights.json``), read without TensorFlow or Keras, against what Keras itself loads; the
reader's refusals of hostile files; the neighbours tf2pt names and refuses."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tf2pt.testing import keras_fixtures as kf

CASES = kf.all_cases()
IDS = [kf.case_id(c) for c in CASES]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """``files(case)`` -> (path, Keras' weights [(name, array)], Keras' optimizer variables),
    each written and loaded back by real Keras once per module."""
    pytest.importorskip("tensorflow", reason="Keras writes the test files")
    base = tmp_path_factory.mktemp("keras_files")
    cache = {}

    def get(case):
        if case not in cache:
            version = case[0]
            pytest.importorskip("tf_keras" if version == "2" else "keras", reason=f"Keras {version} is not installed")
            d = base / kf.case_id(case)
            d.mkdir()
            path = kf.write_case(d, case)
            weights, optimizer = kf.expected(path, case[1], case[2], version)
            cache[case] = (path, weights, optimizer)
        return cache[case]

    return get


def _check_against_keras(doc, state, weights, optimizer):
    """``inspect --all --format json`` (doc) and ``dump --all`` (state) against Keras."""
    rows = doc["variables"]
    model = [r for r in rows if r["role"] == "inference"]
    assert [r["readable_name"] for r in model] == [n for n, _ in weights]
    assert [tuple(r["shape"]) for r in model] == [a.shape for _, a in weights]
    assert [r["dtype"] for r in model] == [a.dtype.name for _, a in weights]
    assert [r["order"] for r in rows] == list(range(len(rows)))  # the model's order, not HDF5's
    for r, (name, a) in zip(model, weights):
        got = state[r["name"]]
        assert got.dtype == a.dtype and np.array_equal(got, a), name
    opt = [r for r in rows if r["role_reason"].startswith("optimizer")]
    if optimizer is None:  # Keras 3 cannot compile a model it saved as .h5, so it restores no optimizer
        assert opt and all(r["role"] == "training" for r in opt)
        optimizer = []
        opt = []
    assert len(opt) == len(optimizer)
    for r, a in zip(opt, optimizer):
        assert r["role"] == "training"
        assert np.array_equal(state[r["name"]], a), r["name"]
    assert set(state) == {r["name"] for r in rows}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inspect_and_dump_equal_what_keras_loads(case, keras_files, cli_run, tmp_path):
    from safetensors.numpy import load_file

    path, weights, optimizer = keras_files(case)
    r = cli_run("inspect", path, "--all", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    out = tmp_path / "x.safetensors"
    r = cli_run("dump", path, "--all", "--state-dict", out)
    assert r.returncode == 0, r.stderr
    _check_against_keras(doc, load_file(str(out)), weights, optimizer)
    if case[2] in ("keras", "h5"):  # the file has the model's config: the layer's class and config
        conv_or_gru = [x for x in doc["variables"] if x.get("layer_class") in ("Conv2D", "GRU")]
        assert conv_or_gru
        for x in conv_or_gru:
            cfg = x["layer_config"]
            if x["layer_class"] == "Conv2D":
                assert cfg["padding"] == "same" and list(cfg["strides"]) == [2, 2] and cfg["activation"] == "relu"
            else:
                assert cfg["reset_after"] is True
        bn = [x for x in doc["variables"] if x.get("layer_class") == "BatchNormalization"]
        assert case[1] != "cnn" or (bn and all(x["layer_config"]["epsilon"] == pytest.approx(1e-3) for x in bn))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_without_tensorflow_or_keras(case, keras_files, run_cli, tmp_path):
    """The same answers, for every fixture format, in a process where TensorFlow and both
    Kerases cannot be imported (#13's acceptance)."""
    from safetensors.numpy import load_file

    path, weights, optimizer = keras_files(case)
    block = ("tensorflow", "keras", "tf_keras")
    r = run_cli("inspect", path, "--all", "--format", "json", block=block)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    out = tmp_path / "x.safetensors"
    r = run_cli("dump", path, "--all", "--state-dict", out, block=block)
    assert r.returncode == 0, r.stderr
    _check_against_keras(doc, load_file(str(out)), weights, optimizer)


def test_keras2_chunked_layer_names(tmp_path):
    """Keras splits attributes over 64 KiB into ``layer_names0``, ``layer_names1``, ...; the
    order is the attribute's, not HDF5's sorted one (``dense_10`` before ``dense_2``)."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "w.h5"
    names = [f"dense_{i}" for i in (1, 2, 10, 3)]
    rng = np.random.default_rng(0)
    values = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = np.array([n.encode() for n in names[:2]])
        f.attrs["layer_names1"] = np.array([n.encode() for n in names[2:]])
        for n in names:
            g = f.create_group(n)
            g.attrs["weight_names"] = np.array([f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()])
            for w, shape in (("kernel", (3, 2)), ("bias", (2,))):
                values[f"{n}/{w}"] = rng.standard_normal(shape).astype(np.float32)
                g.create_dataset(f"{n}/{w}:0", data=values[f"{n}/{w}"])
    from tf2pt.read import open_checkpoint

    with open_checkpoint(path) as ckpt:
        assert ckpt.kind == "keras_weights_h5"
        assert [v.readable_name for v in ckpt.variables.values()] == [f"{n}/{w}" for n in names for w in ("kernel", "bias")]
        for v in ckpt.variables.values():
            assert np.array_equal(ckpt.read(v.name), values[v.readable_name])


# -- hostile files ----------------------------------------------------------------------------


def _weights_h5(tmp_path, name="w.h5"):
    """A small Keras 2 weights-only file, written with h5py in Keras' layout."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        g.create_dataset("dense/kernel:0", data=np.ones((3, 2), np.float32))
    return path


def _refused(cli_run, path, *words):
    r = cli_run("inspect", path, "--all")
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, line
    return line


def test_external_link_is_refused(tmp_path, cli_run):
    h5py = pytest.importorskip("h5py")
    other = _weights_h5(tmp_path, "other.h5")
    path = _weights_h5(tmp_path)
    with h5py.File(path, "a") as f:
        del f["dense/dense/kernel:0"]
        f["dense/dense/kernel:0"] = h5py.ExternalLink(str(other), "/dense/dense/kernel:0")
    _refused(cli_run, path, "external link", str(other))


def test_link_elsewhere_in_the_file_is_refused_too(tmp_path, cli_run):
    h5py = pytest.importorskip("h5py")
    path = _weights_h5(tmp_path)
    with h5py.File(path, "a") as f:
        f["unlisted"] = h5py.ExternalLink("/etc/passwd", "/x")
        f["alias"] = h5py.SoftLink("/dense")
    _refused(cli_run, path, "link")


def test_external_storage_and_virtual_datasets_are_refused(tmp_path, cli_run):
    h5py = pytest.importorskip("h5py")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(6, np.float32).tobytes())
    path = _weights_h5(tmp_path)
    with h5py.File(path, "a") as f:
        del f["dense/dense/kernel:0"]
        f["dense/dense"].create_dataset("kernel:0", (3, 2), np.float32, external=[(str(raw), 0, 24)])
    _refused(cli_run, path, "external files")
    path2 = _weights_h5(tmp_path, "v.h5")
    with h5py.File(path2, "a") as f:
        del f["dense/dense/kernel:0"]
        layout = h5py.VirtualLayout((3, 2), np.float32)
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", (3, 2))
        f["dense/dense"].create_virtual_dataset("kernel:0", layout)
    _refused(cli_run, path2, "virtual dataset")


def test_declared_size_not_backed_by_the_file_is_refused(tmp_path, cli_run):
    """An unwritten dataset of 2**40 floats: nothing may allocate what it merely declares."""
    h5py = pytest.importorskip("h5py")
    path = _weights_h5(tmp_path)
    with h5py.File(path, "a") as f:
        del f["dense/dense/kernel:0"]
        f["dense/dense"].create_dataset("kernel:0", (1 << 20, 1 << 20), np.float32)
    _refused(cli_run, path, "declares")


def test_damaged_h5_is_one_line(tmp_path, cli_run):
    path = _weights_h5(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _refused(cli_run, path)


def _keras_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_keras_zip_with_traversal_member_is_refused(tmp_path, cli_run):
    h5 = _weights_h5(tmp_path).read_bytes()
    path = _keras_zip(tmp_path / "evil.keras", {"config.json": "{}", "../../evil.sh": "rm -rf /",
                                                "model.weights.h5": h5})
    _refused(cli_run, path, "'../../evil.sh'", "outside the archive")
    path = _keras_zip(tmp_path / "abs.keras", {"/etc/cron.d/x": "x", "model.weights.h5": h5})
    _refused(cli_run, path, "outside the archive")


def test_zip_bomb_is_refused_within_bounded_memory(tmp_path, cli_run):
    """A member declaring 256 MiB of zeros packed into ~250 KiB is refused before it is inflated."""
    import tracemalloc

    from tf2pt.errors import UnsupportedError
    from tf2pt.read import open_checkpoint

    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        with z.open("model.weights.h5", "w", force_zip64=True) as w:
            block = bytes(1 << 20)
            for _ in range(256):
                w.write(block)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedError, match="decompression bomb"):
            open_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    _refused(cli_run, path, "decompression bomb")


def test_zip_member_lying_about_its_size_is_caught(tmp_path, cli_run):
    """A member that inflates past its declared size: inflation stops there and the CRC fails."""
    path = _keras_zip(tmp_path / "lie.keras", {"config.json": "{}", "model.weights.h5": bytes(200_000)},
                      zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # shrink the declared size of model.weights.h5 in its local header and central directory entry
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model.weights.h5")
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        start = 0
        while True:
            i = data.find(sig, start)
            if i < 0:
                break
            off = 22 if sig == b"PK\x03\x04" else 24
            if int.from_bytes(data[i + off:i + off + 4], "little") == info.file_size:
                data[i + off:i + off + 4] = (1000).to_bytes(4, "little")
            start = i + 4
    path.write_bytes(bytes(data))
    _refused(cli_run, path)


def test_npz_weights_are_refused_not_unpickled(tmp_path, cli_run):
    path = _keras_zip(tmp_path / "n.keras", {"config.json": "{}", "metadata.json": "{}",
                                             "model.weights.npz": b"PK\x05\x06" + bytes(18)})
    _refused(cli_run, path, "npz", "unpickle")


def test_lambda_layer_is_refused_keras3(tmp_path, cli_run, tf):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    _refused(cli_run, path, "Lambda", "CVE-2025-9905")


def test_lambda_layer_is_refused_keras2_h5(tmp_path, cli_run, tf):
    keras = pytest.importorskip("tf_keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.h5"
    model.save(path)
    _refused(cli_run, path, "Lambda", "never runs code")


def test_hdf5_that_is_not_keras(tmp_path, cli_run):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    _refused(cli_run, path, "not a Keras weight file")


# -- neighbours -------------------------------------------------------------------------------


def test_tflite_is_named(tmp_path, cli_run):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    _refused(cli_run, path, "TensorFlow Lite")


def _onnx_bytes():
    graph = b"\x0a\x00" + b"\x12\x01g"  # a node, a name
    return (b"\x08\x08" + b"\x12\x07pytorch" + b"\x1a\x032.1" + b"\x3a" + bytes([len(graph)]) + graph
            + b"\x42\x02\x10\x11")


@pytest.mark.parametrize("name", ["model.onnx", "model.pb"])
def test_onnx_is_named(tmp_path, cli_run, name):
    path = tmp_path / name
    path.write_bytes(_onnx_bytes())
    _refused(cli_run, path, "ONNX")


def test_text_graphdef_is_named(tmp_path, cli_run):
    path = tmp_path / "graph.pbtxt"
    path.write_text('node { name: "w" op: "Const" }\n')
    _refused(cli_run, path, "text-format GraphDef")


def test_directory_of_savedmodels_names_them(tmp_path, cli_run):
    for sub in ("exported_1", "exported_2"):
        (tmp_path / "models" / sub / "variables").mkdir(parents=True)
        (tmp_path / "models" / sub / "saved_model.pb").write_bytes(b"")
    line = _refused(cli_run, tmp_path / "models", "2 SavedModels one level down", "exported_1", "exported_2")
    assert "exported_2" in line


def test_h5_suffix_without_hdf5_signature(tmp_path, cli_run):
    path = tmp_path / "w.h5"
    path.write_bytes(b"not hdf5 at all" * 10)
    _refused(cli_run, path, "no HDF5 signature")


# -- readable names in mappings ---------------------------------------------------------------


def _plan(variables, rules, spec):
    from tf2pt.mapping import Mapping, Source, Target
    from tf2pt.plan import plan
    from tf2pt.read import Checkpoint

    ckpt = Checkpoint("mem")
    ckpt.variables = {v.name: v for v in variables}
    target = Target("t", "", lambda: None, rules, spec=lambda: spec)
    mapping = Mapping("m", "", Source("s", "s"), [target])
    return plan(ckpt, mapping, target)


def _info(name, readable, shape=(3, 2), role="inference"):
    from tf2pt.read import VariableInfo

    return VariableInfo(name, "float32", shape, 4 * int(np.prod(shape)), role, "model variable", readable_name=readable)


def test_rename_rules_match_the_readable_name():
    from tf2pt.mapping import Rename

    variables = [_info("layers/dense/vars/0", "head/dense_1/kernel"), _info("layers/dense/vars/1", "head/dense_1/bias", (2,))]
    entries, report = _plan(variables, [Rename(r"head/dense_1/kernel", "fc.weight", "dense"),
                                        Rename(r"head/dense_1/bias", "fc.bias")],
                            {"fc.weight": ((2, 3), "float32"), "fc.bias": ((2,), "float32")})
    assert report.problems == []
    assert {e.key: e.source for e in entries} == {"fc.weight": "layers/dense/vars/0", "fc.bias": "layers/dense/vars/1"}
    assert report.mapped[0]["readable"] == "head/dense_1/kernel"


def test_stored_name_still_matches_and_wins_when_the_same_rule_matches_both():
    from tf2pt.mapping import Rename

    variables = [_info("model/kernel/.ATTRIBUTES/VARIABLE_VALUE", "dense/kernel")]
    entries, report = _plan(variables, [Rename(r"model/(kernel)/\.ATTRIBUTES/VARIABLE_VALUE", r"fc.\1")],
                            {"fc.kernel": ((3, 2), "float32")})
    assert report.problems == [] and entries[0].key == "fc.kernel"


def test_stored_and_readable_names_matching_different_rules_is_a_problem_naming_both():
    from tf2pt.mapping import Rename

    variables = [_info("dense/vars/0", "dense/kernel")]
    _, report = _plan(variables, [Rename(r"dense/vars/0", "a"), Rename(r"dense/kernel", "b")],
                      {"a": ((3, 2), "float32"), "b": ((3, 2), "float32")})
    (problem, *rest) = report.problems
    assert "'dense/vars/0' (readable name 'dense/kernel')" in problem
    assert "by its stored name" in problem and "by its readable name" in problem


def test_unmapped_variable_problem_names_both_names():
    from tf2pt.mapping import Rename

    _, report = _plan([_info("layers/conv2d/vars/0", "conv/kernel")], [Rename("nothing", "x")], {"x": ((1,), "float32")})
    assert any("unmapped variable 'layers/conv2d/vars/0' (readable name 'conv/kernel')" in p for p in report.problems)


def test_hard_link_cycles_are_walked_once(tmp_path):
    """Two hard links from a group back to the root: each object is visited once."""
    h5py = pytest.importorskip("h5py")
    from tf2pt.read import open_checkpoint

    path = _weights_h5(tmp_path)
    with h5py.File(path, "a") as f:
        f["dense/up1"] = f
        f["dense/up2"] = f
    with open_checkpoint(path) as ckpt:
        assert list(ckpt.variables) == ["dense/dense/kernel:0"]


def test_sharded_index_naming_a_file_elsewhere_is_refused(tmp_path, cli_run):
    _weights_h5(tmp_path)
    index = tmp_path / "model.weights.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"/layers/dense/vars": ["../w.h5"]}}))
    _refused(cli_run, index, "'../w.h5'", "not a file next to the index")



def test_onnx_with_a_graph_larger_than_the_sniffed_head_is_named(tmp_path, cli_run):
    graph = b"\x0a\x00" * 70_000  # 140 kB of empty nodes
    length = len(graph)
    varint = bytearray()
    while True:
        b = length & 0x7F
        length >>= 7
        varint.append(b | (0x80 if length else 0))
        if not length:
            break
    path = tmp_path / "exported"
    path.write_bytes(b"\x08\x07" + b"\x12\x07pytorch" + b"\x3a" + bytes(varint) + graph + b"\x42\x02\x10\x11")
    _refused(cli_run, path, "ONNX")


def test_real_tflite_model_is_named(tmp_path, cli_run, tf):
    module = tf.Module()
    module.w = tf.Variable(np.ones((3, 3), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 3], tf.float32)])
    def f(x):
        return tf.matmul(x, module.w)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    path = tmp_path / "model.tflite"
    path.write_bytes(converter.convert())
    _refused(cli_run, path, "TensorFlow Lite", "TFL3")


def test_custom_layer_is_read_but_never_imported(tmp_path, cli_run, tf):
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="stranger")
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.s = self.add_weight(shape=(shape[-1],), initializer="ones", name="s")

        def call(self, x):
            return x * self.s

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), Scale()])
    path = tmp_path / "custom.keras"
    model.save(path)
    r = cli_run("inspect", path, "--all", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert any("custom classes (stranger>Scale)" in n and "never run" in n for n in doc["notes"])
    assert [v["shape"] for v in doc["variables"]] == [[3, 2], [2], [2]]


def test_keras3_h5_optimizer_slots_name_their_variable(keras_files):
    from tf2pt.read import open_checkpoint

    path, weights, _ = keras_files(("3", "cnn", "h5"))
    with open_checkpoint(path) as ckpt:
        slots = {v.slot_of: v.slot_name for v in ckpt.variables.values() if v.slot_of}
    model_names = {n for n, _ in weights}
    assert slots and set(slots) <= model_names
    kernels = [n for n in model_names if n.endswith("/kernel")]
    assert len(kernels) == 3 and all(slots.get(k) in ("momentum", "velocity") for k in kernels)

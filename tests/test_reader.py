"""tf2pt's reader against TensorFlow's own, on checkpoints real TensorFlow wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE, FIXTURES
from bundle_tools import copy_bundle, entry_proto, flip_byte, truncate, write_bundle
from tf2pt.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from tf2pt.reader import open_checkpoint, slice_key


def _tf_view(tf, ckpt):
    """What TensorFlow itself reads: ``(get_tensor, shapes, dtypes)``."""
    if ckpt.kind == "graphdef":  # a frozen graph: TF's own decoding of every Const node
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(Path(ckpt.path).read_bytes())
        consts = {n.name: n.attr["value"].tensor for n in graph_def.node if n.op == "Const"}
        values = {k: tf.make_ndarray(t) for k, t in consts.items()}
        shapes = {k: list(v.shape) for k, v in values.items()}
        types = {k: tf.dtypes.as_dtype(t.dtype) for k, t in consts.items()}
        return values.__getitem__, shapes, types
    reader = tf.train.load_checkpoint(ckpt.prefix)
    return reader.get_tensor, reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()


def _same(a, b) -> bool:
    if isinstance(a, bytes):
        a = np.array(a, dtype=object)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return all(x == y for x, y in zip(a.ravel(), b.ravel()))
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


TF_DTYPE_NAMES = {"half": "float16", "float": "float32", "double": "float64"}


@pytest.mark.parametrize("name", sorted(FIXTURES) + ["bundled_example"])
def test_reader_equals_tf_load_checkpoint(name, checkpoints, tf):
    path = str(EXAMPLE) if name == "bundled_example" else checkpoints(name)
    with open_checkpoint(path) as ckpt:
        get_tensor, shapes, dtypes = _tf_view(tf, ckpt)
        assert set(ckpt.variables) == set(shapes)
        for var, info in ckpt.variables.items():
            assert list(info.shape) == list(shapes[var]), var
            assert info.dtype == TF_DTYPE_NAMES.get(dtypes[var].name, dtypes[var].name), var
            assert _same(get_tensor(var), ckpt.read(var)), var


def test_fixtures_carry_what_training_leaves_behind(checkpoints):
    """Realistic fixtures: Adam slots, EMA shadows, zero-debias variables, beta powers, and
    non-trivial BN statistics."""
    with open_checkpoint(checkpoints("niftynet_highres3dnet")) as ckpt:
        names = set(ckpt.variables)
        assert "HighRes3DNet/conv_0_bn_relu/conv_/w/Adam" in names
        assert "HighRes3DNet/res_2_1/conv_1/w/Adam_1" in names
        assert "HighRes3DNet/conv_0_bn_relu/bn_/gamma/ExponentialMovingAverage" in names
        assert "HighRes3DNet/conv_0_bn_relu/bn_/HighRes3DNet/conv_0_bn_relu/bn_/moving_mean/biased" in names
        assert "HighRes3DNet/res_3_2/bn_1/HighRes3DNet/res_3_2/bn_1/moving_variance/local_step" in names
        assert "ApplyGradients/beta1_power" in names and "global_step" in names
        var = ckpt.read("HighRes3DNet/res_1_0/bn_0/moving_variance")
        mean = ckpt.read("HighRes3DNet/res_1_0/bn_0/moving_mean")
        assert np.abs(var - 1).min() > 1e-3 and np.abs(mean).min() > 0 and not np.allclose(var, mean)
        assert len([v for v in ckpt.variables.values() if v.role == "inference"]) == 105


def test_example_lists_105_inference_variables_and_roles():
    with open_checkpoint(EXAMPLE) as ckpt:
        inference = [v for v in ckpt.variables.values() if v.role == "inference"]
        assert len(inference) == 105
        assert sum(v.name.endswith("/w") for v in inference) == 21
        assert sum(v.name.rsplit("/", 1)[1] in ("beta", "gamma", "moving_mean", "moving_variance") for v in inference) == 84
        roles = {v.name: v.role_reason for v in ckpt.variables.values() if v.role == "training"}
        assert roles["ApplyGradients/beta1_power"] == "optimizer beta1_power"
        assert roles["HighRes3DNet/res_1_0/conv_0/w/Adam"] == "optimizer slot (Adam)"
        assert roles["global_step"] == "step counter"


def test_object_graph_names_and_slots(checkpoints):
    with open_checkpoint(checkpoints("tf2_module_v1_adam")) as ckpt:
        v = ckpt.variables
        kernel = v["model/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
        assert kernel.readable_name == "conv2d_1/kernel" and kernel.role == "inference"
        m = v["model/conv/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"]
        assert (m.slot_of, m.slot_name, m.role) == ("conv2d_1/kernel", "m", "training")
        assert v["save_counter/.ATTRIBUTES/VARIABLE_VALUE"].role == "training"
        assert v["_CHECKPOINTABLE_OBJECT_GRAPH"].role == "training"
    with open_checkpoint(checkpoints("tf2_keras")) as ckpt:
        by_readable = {i.readable_name: i for i in ckpt.variables.values()}
        assert by_readable["conv2d_1/kernel"].role == "inference"
        assert by_readable["bn/moving_variance"].role == "inference"
        slot = by_readable["adam/conv2d_1_kernel_momentum"]
        assert (slot.slot_of, slot.slot_name, slot.role) == ("conv2d_1/kernel", "momentum", "training")
        assert by_readable["adam/iteration"].role == "training"


def test_sharded_and_partitioned(checkpoints):
    with open_checkpoint(checkpoints("sharded")) as ckpt:
        assert ckpt.num_shards > 1 and len({i.shard for i in ckpt.variables.values()}) > 1
        assert len(ckpt.files) == 1 + ckpt.num_shards
    with open_checkpoint(checkpoints("partitioned")) as ckpt:
        assert ckpt.variables["embedding"].partitions == 3 and ckpt.variables["embedding"].shape == (10, 4)
        assert not any(k.startswith("\x00") for k in ckpt.variables)  # slice keys stay hidden


def test_slice_key_encoding_matches_tensorflow(checkpoints):
    """The OrderedCode key of every slice TF wrote is found where slice_key() says."""
    from tf2pt._sstable import read_table

    prefix = open_checkpoint(checkpoints("partitioned")).prefix
    keys = {k for k, _ in read_table(Path(prefix + ".index").read_bytes())}
    assert slice_key("embedding", [(0, 4), (0, 4)]) in keys
    assert slice_key("embedding", [(7, 3), (0, 4)]) in keys
    assert slice_key("bias", [(4, 3)]) in keys
    # large and negative numbers take the multi-byte branches of the signed encoding
    assert slice_key("x", [(-1, None)]).endswith(b"\x7f\x7f")
    assert len(slice_key("x", [(1 << 40, 5)])) > len(slice_key("x", [(5, 5)]))


def test_reads_are_lazy_memory_mapped_views(example):
    with open_checkpoint(example) as ckpt:
        a = ckpt.read("HighRes3DNet/res_3_2/conv_1/w")
        assert not a.flags.owndata and not a.flags.writeable  # a view of the memory map
        assert a.shape == (3, 3, 3, 64, 64)


def test_iter_chunks_streams_raw_bytes_and_checks_crc(example, tmp_path):
    name = "HighRes3DNet/res_3_2/conv_1/w"
    with open_checkpoint(example) as ckpt:
        whole = ckpt.read(name).tobytes()
        chunks = list(ckpt.iter_chunks(name, chunk_bytes=10_000))
        assert len(chunks) > 1 and b"".join(bytes(c) for c in chunks) == whole
        offset = ckpt._entries[name].offset
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "bad")
    flip_byte(prefix + ".data-00000-of-00001", offset + 50_000)
    with open_checkpoint(prefix) as ckpt:
        got = []
        with pytest.raises(CorruptCheckpointError, match="CRC32C"):
            for c in ckpt.iter_chunks(name, chunk_bytes=10_000):
                got.append(c)
        assert sum(len(c) for c in got) < len(whole)  # the last chunk is never handed out


# -- path forms -----------------------------------------------------------------------------


def test_path_forms(example, checkpoints, tmp_path):
    prefix = open_checkpoint(example).prefix
    for form in (prefix, prefix + ".index", prefix + ".meta", prefix + ".data-00000-of-00001", example):
        with open_checkpoint(form) as ckpt:
            assert ckpt.prefix == prefix and len(ckpt.variables) == 381, form
    # a directory with exactly one bundle and no state file
    one = copy_bundle(prefix, tmp_path / "one")
    assert open_checkpoint(tmp_path / "one").prefix == one
    # a SavedModel directory
    sm = checkpoints("savedmodel")
    with open_checkpoint(sm) as ckpt:
        assert ckpt.kind == "savedmodel" and ckpt.prefix.endswith(os.path.join("variables", "variables"))
    assert open_checkpoint(os.path.join(sm, "saved_model.pb")).kind == "savedmodel"


def test_state_file_from_another_machine_falls_back_with_a_note(example, tmp_path):
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "moved")
    (tmp_path / "moved" / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/niftynet/models/model.ckpt-33000"\n')
    with open_checkpoint(tmp_path / "moved") as ckpt:
        assert ckpt.prefix == prefix
        assert any("/home/someone/niftynet/models/model.ckpt-33000" in n and "next to it" in n for n in ckpt.notes)
    # nothing beside it either: a clear error naming the state file
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model.ckpt-1"\n')
    with pytest.raises(CheckpointNotFoundError, match="does not exist, and no bundle 'model.ckpt-1'"):
        open_checkpoint(tmp_path / "empty")


def test_directory_errors(tmp_path, example):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in this directory"):
        open_checkpoint(tmp_path)
    prefix = open_checkpoint(example).prefix
    copy_bundle(prefix, tmp_path / "two")
    Path(tmp_path / "two" / "other.index").write_bytes(Path(prefix + ".index").read_bytes())
    with pytest.raises(CheckpointNotFoundError, match="2 checkpoints in this directory"):
        open_checkpoint(tmp_path / "two")


# -- bad input: one typed error naming the file -----------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such file") as e:
        open_checkpoint(tmp_path / "nope.ckpt")
    assert str(tmp_path / "nope.ckpt") in str(e.value)


def test_truncated_data_is_caught_at_open(example, tmp_path):
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "t")
    data = prefix + ".data-00000-of-00001"
    truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CorruptCheckpointError, match=r"claims bytes .* data file \(truncated\?\)") as e:
        open_checkpoint(prefix)
    assert "data-00000-of-00001" in str(e.value)


def test_flipped_data_byte_fails_the_crc_on_read(example, tmp_path):
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "f")
    with open_checkpoint(prefix) as ckpt:
        offset = ckpt._entries["HighRes3DNet/conv_2_bn/conv_/w"].offset
    flip_byte(prefix + ".data-00000-of-00001", offset + 3)
    with open_checkpoint(prefix) as ckpt:  # listing still works: data is read lazily
        ckpt.read("HighRes3DNet/conv_1_bn_relu/conv_/w")
        with pytest.raises(CorruptCheckpointError, match="'HighRes3DNet/conv_2_bn/conv_/w' fails its CRC32C"):
            ckpt.read("HighRes3DNet/conv_2_bn/conv_/w")


def test_index_that_is_not_a_bundle(example, tmp_path):
    prefix = str(tmp_path / "fake")
    Path(prefix + ".index").write_bytes(Path(open_checkpoint(example).prefix + ".meta").read_bytes())
    with pytest.raises(CorruptCheckpointError, match="bad table magic"):
        open_checkpoint(prefix)
    Path(prefix + ".index").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="empty file"):
        open_checkpoint(prefix)


def test_missing_shard(checkpoints, tmp_path):
    prefix = copy_bundle(open_checkpoint(checkpoints("sharded")).prefix, tmp_path / "s")
    os.unlink(prefix + ".data-00001-of-00003")
    with pytest.raises(CheckpointNotFoundError, match=r"data shard missing \(sharded.ckpt.data-00001-of-00003\)"):
        open_checkpoint(prefix)


def test_unsupported_dtype_is_listed_but_refused_on_read(tmp_path):
    prefix = write_bundle(tmp_path / "variant", [(b"ok", 1, [2], b"\x00" * 8), (b"v", 21, [], b"\x01\x02")])
    with open_checkpoint(prefix) as ckpt:
        assert ckpt.variables["v"].dtype == "variant"
        with pytest.raises(UnsupportedError, match="'v' has dtype variant"):
            ckpt.read("v")
        assert ckpt.read("ok").tolist() == [0.0, 0.0]


def test_forged_sizes_and_shapes_never_allocate(tmp_path):
    huge = write_bundle(tmp_path / "huge", [(b"x", 1, [1 << 20, 1 << 20], b"\x00" * 16)])
    with pytest.raises(CorruptCheckpointError, match="4398046511104 bytes, but the index says 16"):
        open_checkpoint(huge)
    past = write_bundle(tmp_path / "past", [(b"x", 1, [4], b"\x00" * 16)], entry_overrides={b"x": {"offset": 100}})
    with pytest.raises(CorruptCheckpointError, match=r"claims bytes \[100, 116\)"):
        open_checkpoint(past)
    bad_name = write_bundle(tmp_path / "name", [(b"\xff\xfe", 1, [1], b"\x00" * 4)])
    with pytest.raises(CorruptCheckpointError, match="not valid UTF-8"):
        open_checkpoint(bad_name)


def test_backend_tf_agrees(example, tf):
    native = open_checkpoint(example)
    via_tf = open_checkpoint(example, backend="tf")
    assert set(native.variables) == set(via_tf.variables)
    for name, info in native.variables.items():
        other = via_tf.variables[name]
        assert (info.shape, info.dtype, info.role) == (other.shape, other.dtype, other.role)
    assert np.array_equal(native.read("HighRes3DNet/conv_0_bn_relu/conv_/w"), via_tf.read("HighRes3DNet/conv_0_bn_relu/conv_/w"))


def test_reading_imports_no_tensorflow_torch_or_pandas(example):
    code = (
        "import sys, tf2pt\n"
        "from tf2pt.reader import open_checkpoint\n"
        f"c = open_checkpoint({str(example)!r}); c.read('HighRes3DNet/conv_0_bn_relu/conv_/w')\n"
        "print(sorted(m for m in ('tensorflow', 'torch', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []

"""tf2pt's reader against TensorFlow's own, on checkpoints real TensorFlow wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE, FIXTURES
from bundle_tools import (copy_bundle, entry_proto, f_bytes, f_varint, flip_byte, header_proto, slices_proto,
                          to_big_endian, truncate, write_bundle, write_table)
from tf2pt.errors import CheckpointNotFoundError, CorruptCheckpointError, DependencyError, UnsupportedError
from tf2pt.read import open_checkpoint
from tf2pt.read.slices import parse_slice_key, slice_key


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
    from tf2pt.read._sstable import read_table

    prefix = open_checkpoint(checkpoints("partitioned")).prefix
    keys = {k for k, _ in read_table(Path(prefix + ".index").read_bytes())}
    assert slice_key("embedding", [(0, 4), (0, 4)]) in keys
    assert slice_key("embedding", [(7, 3), (0, 4)]) in keys
    assert slice_key("bias", [(4, 3)]) in keys
    # full extents ("-" in a slice spec: no length in the proto) are start 0, length -1; starts
    # of 64 and more take the multi-byte branch of the signed encoding (TF's own SaveV2 wrote these)
    prefix = open_checkpoint(checkpoints("sliced_savev2")).prefix
    keys = {k for k, _ in read_table(Path(prefix + ".index").read_bytes())}
    assert slice_key("emb", [(70, 100), (0, None)]) in keys
    assert slice_key("emb", [(70, 100), (0, None)]).endswith(b"\xc0\x46\xc0\x64\x80\x7f")
    assert slice_key("grid", [(0, 65), (4, 5)]) in keys
    assert sum(k[:1] == b"\x00" for k in keys) == 8


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=12), extents=st.lists(st.tuples(st.integers(-2**63, 2**63 - 1),
                                                            st.one_of(st.none(), st.integers(-2**63, 2**63 - 1))),
                                                  min_size=1, max_size=4))
def test_slice_keys_round_trip(name, extents):
    want = [(s, None if length == -1 else length) for s, length in extents]
    assert parse_slice_key(slice_key(name, extents)) == (name, want)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_parse_slice_key_never_raises(data):
    parsed = parse_slice_key(b"\x00" + data)
    assert parsed is None or slice_key(*parsed) == b"\x00" + data


@pytest.mark.parametrize("value,encoded", [(0, b"\x80"), (-1, b"\x7f"), (63, b"\xbf"), (-64, b"\x40"), (64, b"\xc0\x40"),
                                           (-65, b"\x3f\xbf"), (0x424242, b"\xf0\x42\x42\x42"), (-0x800, b"\x38\x00")])
def test_signed_ordered_code_examples(value, encoded):
    """The worked examples of tensorflow/core/lib/strings/ordered_code.cc, and the range edges."""
    assert slice_key("", [(value, 1)])[5:-1] == encoded  # after 0, "" and the rank; before the length 1


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
        "from tf2pt.read import open_checkpoint\n"
        f"c = open_checkpoint({str(example)!r}); c.read('HighRes3DNet/conv_0_bn_relu/conv_/w')\n"
        "print(sorted(m for m in ('tensorflow', 'torch', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


# -- byte order, versions, partition tiling, forged entries -----------------------------------


def _same_values(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return all(x == y for x, y in zip(a.ravel(), b.ravel()))
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def test_big_endian_bundle_reads_like_tensorflow(checkpoints, tf, tmp_path):
    """A bundle as a big-endian machine writes it (header BIG, numbers and string length
    checksums big-endian) reads back native-endian, equal to the original, and TF agrees."""
    little = open_checkpoint(checkpoints("all_dtypes")).prefix
    big = to_big_endian(little, str(tmp_path / "big"))
    tf_big = tf.train.load_checkpoint(big)
    with open_checkpoint(little) as le, open_checkpoint(big) as be:
        assert be.big_endian and not le.big_endian and set(be.variables) == set(le.variables)
        for name in le.variables:
            got = be.read(name)
            assert got.dtype.isnative and _same_values(le.read(name), got), name
            assert _same_values(np.asarray(tf_big.get_tensor(name), dtype=got.dtype), got), name
            if got.dtype != object:
                assert b"".join(bytes(c) for c in be.iter_chunks(name, chunk_bytes=5)) == got.tobytes(), name
        # one flipped byte in the big-endian data still fails its CRC32C
    data = big + ".data-00000-of-00001"
    with open_checkpoint(big) as be:
        e = be._entries["float64/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    flip_byte(data, e.offset + 9)
    with open_checkpoint(big) as be, pytest.raises(CorruptCheckpointError, match="float64/kernel.*CRC32C"):
        be.read("float64/kernel/.ATTRIBUTES/VARIABLE_VALUE")


def _header(num_shards=1, endianness=0, producer=1, min_consumer=0, bad=()):
    version = f_varint(1, producer) + (f_varint(2, min_consumer) if min_consumer else b"")
    version += b"".join(f_varint(3, b) for b in bad)
    return (f_varint(1, num_shards) if num_shards else b"") + (f_varint(2, endianness) if endianness else b"") + f_bytes(3, version)


@pytest.mark.parametrize("header,error,match", [
    (_header(min_consumer=2), UnsupportedError, r"min_consumer 2\) is not readable"),
    (_header(bad=(1,)), UnsupportedError, "is not readable by a version-1 reader"),
    (_header(producer=-1), UnsupportedError, "producer -1"),
    (_header(endianness=2), CorruptCheckpointError, "unknown byte order"),
    (_header(num_shards=0), CorruptCheckpointError, "header claims 0 shards"),
    (f_bytes(1, b"x"), CorruptCheckpointError, "malformed bundle header"),
])
def test_bundle_header_checks(tmp_path, header, error, match):
    prefix = str(tmp_path / "h")
    write_table(prefix + ".index", [(b"", header), (b"w", entry_proto(1, [1], size=4, crc=0))])
    Path(prefix + ".data-00000-of-00001").write_bytes(b"\0" * 4)
    with pytest.raises(error, match=match):
        open_checkpoint(prefix)


def test_an_absent_crc_field_is_zero_not_unchecked(tmp_path, tf):
    """proto3 drops a crc32c of 0 from the entry; TF then checks the data against 0, and so do we."""
    prefix = write_bundle(tmp_path / "nocrc", [(b"w", 1, [2], np.float32([1, 2]).tobytes())],
                          entry_overrides={b"w": {"crc": None}})
    with open_checkpoint(prefix) as ckpt, pytest.raises(CorruptCheckpointError, match="CRC32C"):
        ckpt.read("w")
    with pytest.raises((tf.errors.OpError, RuntimeError), match="Checksum does not match: stored 2324967102"):
        tf.train.load_checkpoint(prefix).get_tensor("w")  # 2324967102 is the unmasked 0


def _partitioned(prefix, shape, slices, extra=()):
    """A bundle with one partitioned float32 variable ``p`` of ``shape``: ``slices`` is a list
    of ``(extents, listed, stored)`` (listed in the full entry / stored under its own key)."""
    from tf2pt.read._crc import crc32c, mask

    items, data = [], bytearray()
    for extents, _, stored in slices:
        if stored:
            dims = [d if length is None else length for (s, length), d in zip(extents, shape)]
            raw = np.arange(int(np.prod(dims)), dtype=np.float32).tobytes()
            items.append((slice_key("p", extents), entry_proto(1, dims, offset=len(data), size=len(raw),
                                                               crc=mask(crc32c(raw)))))
            data += raw
    full = entry_proto(1, shape) + slices_proto([x for x, listed, _ in slices if listed])
    items = sorted(items + [(b"p", full)] + list(extra))
    write_table(prefix + ".index", [(b"", header_proto())] + items)
    Path(prefix + ".data-00000-of-00001").write_bytes(bytes(data))
    return prefix


@pytest.mark.parametrize("shape,slices,match", [
    ([4], [([(0, 2)], True, True)], "its slices cover 2 of 4 elements"),
    ([1 << 40], [([(0, 2)], True, True)], r"cover 2 of 1099511627776 elements"),  # never allocated
    ([4, 2], [([(0, 2), (0, None)], True, True), ([(1, 2), (0, None)], True, True)], "overlapping slices"),
    ([4], [([(0, 2)], True, True), ([(2, 2)], True, False)], "is missing a slice"),
    ([4], [([(0, 2)], True, True), ([(2, 3)], True, True)], "slice outside its shape"),
    ([4, 2], [([(0, 4), (1, None)], True, True)], "slice outside its shape"),  # a full extent starts at 0
])
def test_partitioned_slices_must_tile_the_shape(tmp_path, shape, slices, match):
    prefix = _partitioned(str(tmp_path / "p"), shape, slices)
    with pytest.raises(CorruptCheckpointError, match=match):
        open_checkpoint(prefix)


def test_orphan_slices_are_hidden_with_a_note(tmp_path):
    prefix = _partitioned(str(tmp_path / "o"), [4], [([(0, 2)], True, True), ([(2, 2)], True, True),
                                                     ([(0, 4)], False, True)])
    with open_checkpoint(prefix) as ckpt:
        assert list(ckpt.variables) == ["p"] and ckpt.variables["p"].partitions == 2
        assert ckpt.read("p").tolist() == [0, 1, 0, 1]
        assert ckpt.notes == ["1 partitioned-variable slice entry belong to no listed variable and were ignored"]


@pytest.mark.parametrize("entry", [
    f_bytes(1, b"\x01"),                                 # dtype length-delimited
    f_varint(1, 1) + f_varint(2, 3),                      # shape as a number
    f_varint(1, 1) + f_bytes(2, f_bytes(2, f_bytes(1, b"x"))),  # a dimension size as bytes
    f_varint(1, 1) + f_bytes(4, b"\x00"),                 # offset as bytes
    f_varint(1, 1) + f_bytes(6, b"\x00\x00\x00\x00"),     # crc32c as bytes
    f_varint(1, 1) + f_bytes(7, f_bytes(1, f_bytes(1, b"x"))),  # an extent start as bytes
    f_varint(1, 1) + f_varint(7, 1),                      # slices as a number
    f_varint(1, 1) + b"\x0b",                             # a group (wire type 3)
    f_varint(1, 1) + b"\x28",                             # truncated varint
])
def test_malformed_entries_are_corrupt_checkpoints(tmp_path, entry):
    prefix = str(tmp_path / "m")
    write_table(prefix + ".index", [(b"", header_proto()), (b"w", entry)])
    Path(prefix + ".data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"malformed index entry for b'w'"):
        open_checkpoint(prefix)


def test_object_graph_fields_of_the_wrong_wire_type_are_proto_errors():
    from tf2pt.read._proto import ProtoError
    from tf2pt.read.objgraph import decode

    for ref in (f_bytes(1, b"12"), f_varint(2, 5)):  # node_id as bytes, local_name as a number
        with pytest.raises(ProtoError):
            decode(f_bytes(1, f_bytes(1, ref)))


def test_state_file_paths_are_unescaped_as_utf8(example, tmp_path):
    """TF writes the state file as a text proto: non-ASCII paths raw or octal-escaped, quotes
    backslash-escaped."""
    src = open_checkpoint(example).prefix
    d = tmp_path / "run"
    d.mkdir()
    for f in Path(src).parent.glob(Path(src).name + ".*"):
        (d / f.name.replace("model.ckpt-33000", 'mödel "best"')).write_bytes(f.read_bytes())
    for text in ('model_checkpoint_path: "m\\303\\266del \\"best\\""\n',
                 'model_checkpoint_path: "mödel \\"best\\""\n',
                 "model_checkpoint_path: 'm\\xc3\\xb6del \"best\"'\n"):
        (d / "checkpoint").write_text(text, encoding="utf-8")
        with open_checkpoint(d) as ckpt:
            assert ckpt.prefix == str(d / 'mödel "best"') and ckpt.notes == [], text


def test_files_partitions_and_chunks(checkpoints):
    with open_checkpoint(checkpoints("sliced_savev2")) as ckpt:
        assert all(isinstance(f, Path) and f.exists() for f in ckpt.files)
        assert {n: i.partitions for n, i in ckpt.variables.items()} == {"emb": 3, "grid": 3, "mask": 2, "whole": 0}
    with open_checkpoint(checkpoints("all_dtypes")) as ckpt:
        for name, info in ckpt.variables.items():
            if info.dtype == "string":
                with pytest.raises(UnsupportedError, match="string tensor"):
                    list(ckpt.iter_chunks(name))
                continue
            for size in (1, 7, 64, 1 << 20):
                chunks = list(ckpt.iter_chunks(name, chunk_bytes=size))
                assert b"".join(bytes(c) for c in chunks) == ckpt.read(name).tobytes(), (name, size)
                assert all(0 < len(c) <= size for c in chunks)


@pytest.mark.parametrize("name", [n for n in sorted(FIXTURES) if n != "frozen_graph"])
def test_backend_tf_lists_what_native_lists(name, checkpoints, tf):
    """Both backends agree on names, shapes, dtypes, roles, readable names and values."""
    with open_checkpoint(checkpoints(name)) as native, open_checkpoint(checkpoints(name), backend="tf") as via_tf:
        assert list(native.variables) == list(via_tf.variables)
        for var, a in native.variables.items():
            b = via_tf.variables[var]
            assert (a.shape, a.dtype, a.role, a.role_reason, a.readable_name, a.slot_of, a.slot_name) == \
                   (b.shape, b.dtype, b.role, b.role_reason, b.readable_name, b.slot_of, b.slot_name), var
            assert a.dtype == "string" or a.nbytes == b.nbytes, var
            assert _same_values(native.read(var), np.asarray(via_tf.read(var), dtype=native.read(var).dtype)), var
        assert [p.name for p in native.files] == [p.name for p in via_tf.files]


def test_backend_tf_errors_are_typed(example, tmp_path):
    pytest.importorskip("tensorflow")
    prefix = copy_bundle(open_checkpoint(example).prefix, tmp_path / "f")
    name = "HighRes3DNet/conv_2_bn/conv_/w"
    with open_checkpoint(prefix) as ckpt:
        offset = ckpt._entries[name].offset
    flip_byte(prefix + ".data-00000-of-00001", offset + 3)
    with open_checkpoint(prefix, backend="tf") as ckpt:
        with pytest.raises(CorruptCheckpointError, match="TensorFlow reports variable 'HighRes3DNet/conv_2_bn/conv_/w' corrupt"):
            ckpt.read(name)
        with pytest.raises(CheckpointNotFoundError, match="no variable named 'nope'"):
            ckpt.read("nope")


# -- the index table: Snappy blocks (LevelDB allows them; TF bundles are written uncompressed) -


def test_snappy_compressed_index_reads_like_tensorflow(example, tmp_path, tf):
    from tf2pt.read._sstable import read_table

    src = open_checkpoint(example).prefix
    prefix = copy_bundle(src, tmp_path / "snappy")
    write_table(prefix + ".index", read_table(Path(src + ".index").read_bytes()), per_block=7, compress=True)
    assert Path(prefix + ".index").read_bytes() != Path(src + ".index").read_bytes()
    reader = tf.train.load_checkpoint(prefix)
    with open_checkpoint(prefix) as ckpt:
        assert len(ckpt.variables) == 381
        for name in list(ckpt.variables)[::20]:
            assert np.array_equal(reader.get_tensor(name), ckpt.read(name)), name


@pytest.mark.parametrize("stream,want", [
    (b"\x0d\x08abc\x22\x03\x00\x00X", b"abcabcabcabcX"),        # literal, overlapping 2-byte-offset copy
    (b"\x08\x04ab\x09\x02", b"abababab"),                        # 1-byte-offset copy (length 4 + 2)
    (b"\x06\x08xyz\x0b\x03\x00\x00\x00", b"xyzxyz"),            # 4-byte-offset copy
    (b"\x64\xf0\x63" + bytes(range(100)), bytes(range(100))),    # a literal with a 1-byte length
])
def test_snappy_decoder(stream, want):
    from tf2pt.read._sstable import _snappy_decompress

    assert _snappy_decompress(stream) == want


@pytest.mark.parametrize("stream,match", [
    (b"\x04\x01\x00", "bad snappy copy offset"),       # copy before any output
    (b"\x08\x04ab\x09\x03", "bad snappy copy offset"),  # offset past the output
    (b"\x05\x08abc", "wrong size"),
    (b"\x03\x08ab", "truncated snappy literal"),
    (b"\xff\xff\xff\xff\x0f\x00a", "implausible size"),
])
def test_snappy_decoder_rejects_bad_streams(stream, match):
    from tf2pt.read._sstable import TableError, _snappy_decompress

    with pytest.raises(TableError, match=match):
        _snappy_decompress(stream)


def test_v1_checkpoints_are_refused_clearly(tf, tmp_path):
    from tf2pt.testing.tf_fixtures import write_v1_format

    path = write_v1_format(str(tmp_path))
    for form in (path, tmp_path):  # the file, and its directory (whose state file names it)
        with pytest.raises(UnsupportedError, match=r"model.ckpt: a TF V1 checkpoint \(single-file format\)"):
            open_checkpoint(form)


def _index_case(kind, example, tmp_path):
    from tf2pt.read._sstable import read_table

    src = open_checkpoint(example).prefix
    prefix = copy_bundle(src, tmp_path / kind)
    index = Path(prefix + ".index")
    items = read_table(index.read_bytes())
    if kind == "flipped index byte":
        flip_byte(index, 100)
    elif kind == "truncated index":
        truncate(index, index.stat().st_size - 10)
    elif kind == "index block past the end":
        data = bytearray(index.read_bytes())
        data[-48:-8] = (b"\x00\x00" + b"\xff\xff\x03\x10").ljust(40, b"\x00")  # index handle: offset 65535
        index.write_bytes(bytes(data))
    elif kind == "duplicate key":
        write_table(index, items[:5] + [items[4]] + items[5:])
    elif kind == "keys out of order":
        write_table(index, items[:5] + [items[6], items[5]] + items[7:])
    elif kind == "no header":
        write_table(index, items[1:])
    return prefix


@pytest.mark.parametrize("kind,match", [
    ("flipped index byte", r"block at offset \d+ fails its CRC32C check"),
    ("truncated index", "bad table magic"),
    ("index block past the end", r"index block \[65535, 65551\) runs past the end of the file"),
    ("duplicate key", "duplicate key b'HighRes3DNet/"),
    ("keys out of order", "keys out of order"),
    ("no header", "index has no bundle header"),
])
def test_damaged_index(kind, match, example, tmp_path):
    prefix = _index_case(kind, example, tmp_path)
    with pytest.raises(CorruptCheckpointError, match=match) as e:
        open_checkpoint(prefix)
    assert str(e.value).startswith(prefix + ".index: ")


def test_both_crc32c_implementations_agree_on_every_kind_of_buffer(example, monkeypatch):
    """crc32c (the dependency) and google-crc32c (the fallback where only it is installed) give
    the same CRC for bytes and for memoryviews of a memory map, continued or not; the CRC-32C
    check value comes out, and every tensor of the example passes its CRC check with either.
    With neither installed, the CRC asks for crc32c."""
    import mmap

    from tf2pt.read import _crc

    assert _crc.IMPLEMENTATION == "crc32c"
    assert _crc.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    with open_checkpoint(example) as ckpt:
        names = sorted(ckpt.variables)[:20]
        data_file = next(p for p in ckpt.files if ".data-" in str(p))
        fast = [ckpt.read(n).tobytes() for n in names]
    with open(data_file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            for start, stop, seed in [(0, len(mm), 0), (3, 4099, 0), (1000, 70000, 0x12345678), (5, 5, 7)]:
                expected = _crc.crc32c(view[start:stop], seed)
                assert _crc._google(view[start:stop], seed) == expected
                assert _crc._google(bytes(view[start:stop]), seed) == expected
        finally:
            view.release()
    monkeypatch.setattr(_crc, "_fast", None)
    with open_checkpoint(example) as ckpt:  # every CRC checked by google-crc32c now
        assert [ckpt.read(n).tobytes() for n in names] == fast
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    with pytest.raises(DependencyError, match="needs crc32c, which is not installed"):
        _crc.crc32c(b"x")


def test_verify_crc_checks_what_a_read_without_the_check_skipped(checkpoints, tmp_path):
    """The streaming writer converts in its second thread with ``check_crc=False`` and checks in
    the writing thread (``verify_crc``): a flipped byte in one slice of a partitioned variable
    (TF's own) reads unchecked, and the check then names the variable's slice; an intact
    variable passes."""
    prefix = copy_bundle(open_checkpoint(checkpoints("partitioned")).prefix, tmp_path / "copy")
    with open_checkpoint(prefix) as ckpt:
        shard, offset = ckpt.entry_location("embedding")
        data_file = ckpt.files[1 + shard]
    flip_byte(data_file, offset + 2)
    with open_checkpoint(prefix) as ckpt:
        ckpt.verify_crc("bias")
        assert ckpt.read("embedding", check_crc=False).shape == (10, 4)
        with pytest.raises(CorruptCheckpointError, match=r"variable 'embedding' \(slice\) fails its CRC32C check"):
            ckpt.verify_crc("embedding")
        with pytest.raises(CorruptCheckpointError, match=r"variable 'embedding' \(slice\) fails its CRC32C check"):
            ckpt.read("embedding")
        with pytest.raises(CheckpointNotFoundError):
            ckpt.verify_crc("no/such/variable")

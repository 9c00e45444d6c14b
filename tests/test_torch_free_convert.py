"""Converting without importing torch: a target's declared ``spec``, numpy-made tensors, and the
checks that keep the spec honest (it is compared with the model wherever torch is loaded)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

import tf2pt
from tf2pt.plan import Entry
from tf2pt.errors import ConversionError, MappingError
from tf2pt.mapping import Fill
from tf2pt.testing import check_target_spec
from tf2pt.transforms import TRANSFORMS, get_transform
from tf2pt.write.tensors import Scratch, array_bytes, as_array, as_pieces, as_tensor, tensor_bytes

ROOT = Path(__file__).resolve().parents[1]
TRANSPOSED = ROOT / "benchmarks" / "generic_mapping.py"
LAYOUT_KEPT = ROOT / "benchmarks" / "identity_mapping.py"


def tf_values(tf, path):
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("mapping, transposed", [(TRANSPOSED, True), (LAYOUT_KEPT, False)])
def test_convert_with_a_declared_spec_never_imports_torch(run_cli, checkpoints, tf, tmp_path, mapping, transposed):
    ckpt = checkpoints("bench_blocks")
    out = tmp_path / "x.safetensors"
    r = run_cli("convert", ckpt, "-m", mapping, "-o", out, block=("torch",))
    assert r.returncode == 0, r.stderr
    assert "checked against: the target's declared spec (torch not loaded)" in r.stderr
    got = load_file(str(out))
    want = tf_values(tf, ckpt)
    assert len(got) == len(want) == 8
    for name, value in want.items():
        key = name.replace("/", ".")
        np.testing.assert_array_equal(got[key], value.T if transposed else value)
    meta = safe_open(str(out), "np").metadata()
    assert set(json.loads(meta["source_fingerprint"])["sha256"]) == {Path(ckpt).name + ".index"}


def test_pth_output_checks_the_spec_against_the_model(cli_run, checkpoints, tmp_path):
    ckpt = checkpoints("bench_blocks")
    r = cli_run("convert", ckpt, "-m", TRANSPOSED, "-o", tmp_path / "x.pth")
    assert r.returncode == 0, r.stderr
    assert "checked against: the target's declared spec and the model" in r.stderr
    r = cli_run("convert", ckpt, "-m", TRANSPOSED, "-o", tmp_path / "x.safetensors")
    assert r.returncode == 0, r.stderr
    pth = torch.load(tmp_path / "x.pth", weights_only=True)
    st = load_file(str(tmp_path / "x.safetensors"))
    assert pth.keys() == st.keys()
    for k in st:
        assert torch.equal(pth[k], torch.from_numpy(st[k]))


def test_the_benchmark_specs_equal_their_models(checkpoints):
    for mapping in (TRANSPOSED, LAYOUT_KEPT):
        check_target_spec(str(mapping), checkpoint=checkpoints("bench_blocks"))


def _wrong_spec_mapping(tmp_path, spec_body):
    path = tmp_path / "wrong_spec.py"
    path.write_text("\n".join([
        "import sys",
        f"sys.path.insert(0, {str(TRANSPOSED.parent)!r})",
        "from dataclasses import replace",
        "from generic_mapping import MAPPING as BASE",
        "def spec(shapes=None):",
        textwrap.indent(spec_body, "    "),
        "MAPPING = replace(BASE, name='wrong_spec', targets=[replace(BASE.targets[0], spec=spec)])",
    ]) + "\n")
    return path


def test_a_spec_that_disagrees_with_the_model_fails_where_torch_is_loaded(checkpoints, tmp_path):
    ckpt = checkpoints("bench_blocks")
    # the spec claims float64 for the first block and omits the last: the model says otherwise
    mapping = _wrong_spec_mapping(tmp_path, textwrap.dedent("""\
            keys = sorted(shapes)
            out = {k: (s, "float32") for k, s in shapes.items() if k != keys[-1]}
            out[keys[0]] = (shapes[keys[0]], "float64")
            return out"""))
    with pytest.raises(ConversionError) as err:
        tf2pt.convert(ckpt, mapping=str(mapping))
    text = "\n".join(err.value.problems)
    assert "'block_0000.kernel': spec [" in text and "float64, model [" in text
    assert "'block_0007.kernel'" in text and "is in the model but not in the spec" in text
    with pytest.raises(AssertionError, match="spec and model differ"):
        check_target_spec(str(mapping), checkpoint=ckpt)


def test_a_malformed_spec_is_a_mapping_error(checkpoints, tmp_path, cli_run):
    mapping = _wrong_spec_mapping(tmp_path, 'return {k: (s, "float33") for k, s in shapes.items()}')
    with pytest.raises(MappingError, match="unknown dtype 'float33'"):
        tf2pt.convert(checkpoints("bench_blocks"), mapping=str(mapping))
    r = cli_run("convert", checkpoints("bench_blocks"), "-m", mapping, "-o", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "unknown dtype 'float33'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.safetensors").exists()


class _Arrays:
    """The slice of the Checkpoint interface that making a tensor uses."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.variables = {k: type("Info", (), {"dtype": v.dtype.name})() for k, v in arrays.items()}

    def read(self, name):
        return self.arrays[name]


SHAPES = {"identity": (3, 4), "conv": (2, 3, 4, 5), "conv1d": (3, 4, 5), "conv2d": (2, 3, 4, 5),
          "conv3d": (2, 3, 2, 4, 5), "conv_transpose": (3, 2, 4, 5), "conv_transpose1d": (3, 4, 5),
          "conv_transpose2d": (2, 3, 4, 5), "conv_transpose3d": (2, 3, 2, 4, 5), "dense": (6, 7),
          "depthwise2d": (3, 3, 4, 2), "scalar": (1,), "depthwise1d": (3, 4, 2), "gru_kernel": (4, 6), "gru_bias": (6,),
          "gru_bias_ih": (2, 6), "gru_bias_hh": (2, 6), "tf1_lstm_kernel_ih": (7, 8), "tf1_lstm_kernel_hh": (7, 8),
          "tf1_lstm_bias": (8,), "tf1_gru_gates_kernel_ih": (5, 4), "tf1_gru_gates_kernel_hh": (5, 4),
          "tf1_gru_candidate_kernel_ih": (5, 2), "tf1_gru_candidate_kernel_hh": (5, 2),
          # parametrised ones
          "dense_after_flatten:3x4x5": (60, 7), "tf1_lstm_bias:0.25": (8,), "tf1_lstm_kernel_hh:3": (8, 16)}


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "uint8", "bool", "complex64"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_numpy_and_torch_make_the_same_bytes(name, dtype):
    assert set(TRANSFORMS) <= set(SHAPES), "add the new transform to SHAPES"
    rng = np.random.default_rng(3)
    value = (rng.standard_normal(SHAPES[name]) * 50).astype(dtype)
    ckpt = _Arrays({"v": value})
    transform = get_transform(name)
    entry = Entry("k", transform.out_shape(value.shape), dtype, source="v", transform=transform)
    made = as_array(entry, ckpt, Scratch())
    assert made is not None and made.shape == entry.shape
    assert bytes(array_bytes(made)) == bytes(tensor_bytes(as_tensor(entry, ckpt)))


@pytest.mark.parametrize("name, shape", [("dense", (700, 900)), ("dense", (1024, 300)), ("conv3d", (3, 3, 3, 96, 160)),
                                         ("conv2d", (5, 5, 64, 130)), ("conv_transpose1d", (9, 200, 150))])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "complex64"])
def test_large_tensors_are_permuted_in_tiles_with_torchs_bytes(name, shape, dtype):
    """Above 1 MiB numpy permutes in cache-sized tiles; the bytes stay torch's, ragged edges too."""
    value = (np.random.default_rng(5).standard_normal(shape) * 50).astype(dtype)
    ckpt = _Arrays({"v": value})
    entry = Entry("k", TRANSFORMS[name].out_shape(shape), dtype, source="v", transform=TRANSFORMS[name])
    assert bytes(array_bytes(as_array(entry, ckpt, Scratch()))) == bytes(tensor_bytes(as_tensor(entry, ckpt)))


@pytest.mark.parametrize("shape, axes, path", [
    ((1024, 1024), (1, 0), "buffer"),  # a Dense kernel whose rows are 4 KiB apart
    ((300, 7, 2048), (2, 0, 1), "buffer"),  # a swap of two blocks of axes is a 2-D transpose too
    ((1030, 700), (1, 0), "numpy"),  # rows that do not compete for cache sets
    ((40, 50, 300), (1, 2, 0), "numpy"), ((3, 3, 3, 64, 1000), (4, 3, 0, 1, 2), "tiles"),
    ((200, 9, 300), (0, 2, 1), "tiles"), ((6, 300, 7, 200), (1, 3, 0, 2), "tiles")])
def test_permuted_copy_equals_numpys_on_each_path(shape, axes, path, monkeypatch):
    from tf2pt.write import tensors

    value = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    view = value.transpose(axes)
    calls = []
    copyto = np.copyto
    monkeypatch.setattr(tensors.np, "copyto", lambda dst, src: (calls.append(1), copyto(dst, src)))
    buffered = []
    through = tensors._transpose_through_buffer
    monkeypatch.setattr(tensors, "_transpose_through_buffer", lambda o, s: (buffered.append(1), through(o, s)))
    out = np.empty(view.shape, view.dtype)
    tensors.blocked_copy(out, view)
    assert bool(buffered) == (path == "buffer")
    assert (len(calls) > 1) == (path != "numpy")  # it tiled, or numpy copied it whole
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("dtype", ["int8", "float16", "float32", "float64", "complex128", "bool"])
@pytest.mark.parametrize("shape", [(1024, 256), (333, 2048), (2048, 1030)])
def test_two_dimensional_transposes_and_their_slabs_equal_numpys(dtype, shape):
    """Ragged blocks, every item size, and slabs (the first axis of the transposed view cut up,
    as :func:`as_pieces` does): the buffer path gives numpy's values exactly."""
    from tf2pt.write import tensors

    value = (np.random.default_rng(2).standard_normal(shape) * 50).astype(dtype)
    view = value.T
    for start, stop in [(0, view.shape[0]), (0, 129), (65, 1000), (view.shape[0] - 3, view.shape[0])]:
        piece = view[start:stop]
        assert tensors._transposed_source(piece) is not None
        out = np.empty(piece.shape, piece.dtype)
        tensors.blocked_copy(out, piece, min_bytes=0)
        np.testing.assert_array_equal(out, piece)
        through = np.empty(piece.shape, piece.dtype)
        source = tensors._transposed_source(piece)
        tensors._transpose_through_buffer(through, source)  # the buffer itself, whatever the stride rule
        np.testing.assert_array_equal(through, piece)


def test_only_a_swap_of_two_blocks_of_axes_is_a_two_dimensional_transpose():
    from tf2pt.write import tensors

    value = np.zeros((4, 5, 6, 7), np.float32)
    for axes, is_2d in [((1, 0, 2, 3), False), ((2, 3, 0, 1), True), ((3, 0, 1, 2), True), ((1, 2, 3, 0), True),
                        ((3, 2, 0, 1), False), ((0, 1, 2, 3), False)]:
        view = value.transpose(axes)
        assert (tensors._transposed_source(view) is not None) == is_2d, axes


def test_numpy_declines_what_only_torch_does_exactly():
    ckpt = _Arrays({"v": np.ones((2, 3), np.float64)})
    ident = TRANSFORMS["identity"]
    assert as_array(Entry("k", (2, 3), "float32", source="v", transform=ident), ckpt) is None  # a dtype change
    assert as_array(Entry("k", (2, 3), "bfloat16", source="v", transform=ident), ckpt) is None
    assert as_array(Entry("k", (), "int64", fill=Fill("k", lambda s, d: torch.ones(s, dtype=d), "x")), ckpt) is None
    assert as_array(Entry("k", (), "int64", fill=Fill("k", 0.5, "inexact")), ckpt) is None
    filled = Entry("k", (), "int64", fill=Fill("k", 1, "counter"))
    assert bytes(array_bytes(as_array(filled, ckpt))) == bytes(tensor_bytes(as_tensor(filled, ckpt)))


def test_no_hash_sources_is_the_default_kept_as_an_alias(cli_run, checkpoints, tmp_path):
    """--no-hash-sources (the old opt-out) still works and writes what the default writes."""
    outs = []
    for flag in ((), ("--no-hash-sources",)):
        out = tmp_path / f"x{len(outs)}.safetensors"
        r = cli_run("convert", checkpoints("bench_blocks"), "-m", LAYOUT_KEPT, "-o", out, *flag, "--report",
                    tmp_path / f"r{len(outs)}.json")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    metas = [safe_open(str(out), "np").metadata() for out in outs]
    assert metas[0] == metas[1] and "source_sha256" not in metas[0] and metas[0]["mapping"] == "bench_blocks_identity"
    assert outs[0].read_bytes() == outs[1].read_bytes()
    rows = json.loads((tmp_path / "r1.json").read_text())["files"]
    assert [("sha256" in f) for f in rows] == [True, False]  # the index hashed, not the data


def test_a_dtype_change_loads_torch_midway_and_converts_exactly(run_cli, checkpoints, tf, tmp_path):
    """A float64 target of float32 variables: numpy declines the cast, torch makes it."""
    mapping = tmp_path / "float64.py"
    mapping.write_text("\n".join([
        "import sys",
        f"sys.path.insert(0, {str(TRANSPOSED.parent)!r})",
        "from dataclasses import replace",
        "from generic_mapping import MAPPING as BASE, build as build32",
        "def build(shapes=None):",
        "    return build32(shapes).double()",
        "def spec(shapes=None):",
        "    return {k: (s, 'float64') for k, s in shapes.items()}",
        "MAPPING = replace(BASE, name='f64', targets=[replace(BASE.targets[0], build=build, spec=spec)])",
    ]) + "\n")
    ckpt = checkpoints("bench_blocks")
    out = tmp_path / "x.safetensors"
    r = run_cli("convert", ckpt, "-m", mapping, "-o", out)
    assert r.returncode == 0, r.stderr
    got = load_file(str(out))
    for name, value in tf_values(tf, ckpt).items():
        assert got[name.replace("/", ".")].dtype == np.float64
        np.testing.assert_array_equal(got[name.replace("/", ".")], value.T.astype(np.float64))
    check_target_spec(str(mapping), checkpoint=ckpt)


@pytest.mark.parametrize("cores", [2, 4])
def test_source_hashes_in_parallel_match_hashlib(tmp_path, monkeypatch, cores):
    """One hashing thread on 2 cores; on more, one per file up to cores - 1 (here 3)."""
    import hashlib
    import os

    from tf2pt.write.provenance import BackgroundHashes
    from tf2pt.errors import CheckpointNotFoundError

    files = []
    for i, size in enumerate([(9 << 20) + 3, 10, 0, 1 << 20, 5]):  # the first spans 3 chunks
        f = tmp_path / f"f{i}"
        f.write_bytes(np.random.default_rng(i).bytes(size))
        files.append(f)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    hashes = BackgroundHashes(files)
    assert len(hashes._threads) == cores - 1
    assert hashes.busy == 1  # only the first file is over 1 MiB: the others take no core for long
    got = hashes.result()
    assert list(got) == [str(f) for f in files]  # the callers' order, whatever order they were hashed in
    assert got == {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    with pytest.raises(CheckpointNotFoundError, match="cannot read for hashing"):
        BackgroundHashes(files + [tmp_path / "gone"]).result()


@pytest.mark.parametrize("name, shape", [("dense", (300, 1000)), ("conv3d", (3, 3, 3, 20, 700)), ("dense", (5, 0))])
@pytest.mark.parametrize("piece_bytes", [1, 4096, 200_000, 1 << 30])
def test_pieces_are_the_array_in_slabs(name, shape, piece_bytes):
    """Slabs of 128 rows at least where that keeps them under 4 pieces' size, a ragged last slab,
    empty tensors: the same bytes as one array."""
    value = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    ckpt = _Arrays({"v": value})
    entry = Entry("k", TRANSFORMS[name].out_shape(shape), "float32", source="v", transform=TRANSFORMS[name])
    scratch = Scratch()
    pieces = [bytes(array_bytes(p)) for p in as_pieces(entry, ckpt, scratch, piece_bytes)]
    whole = as_array(entry, ckpt)
    assert b"".join(pieces) == bytes(array_bytes(whole))
    row = whole[:1].nbytes
    assert all(len(p) <= max(row, 4 * piece_bytes) for p in pieces)
    if piece_bytes >= whole.nbytes:
        assert len(pieces) == (1 if whole.size else 0)
    elif piece_bytes == 1:
        assert len(pieces) == whole.shape[0]  # a row each: a slab is never under one row
    elif 128 * row <= 4 * piece_bytes:
        assert all(len(p) >= 128 * row for p in pieces[:-1]) and len(pieces) > 1


def test_large_converted_tensors_are_written_in_slabs_within_bounded_memory(checkpoints, tmp_path, monkeypatch):
    """Above ``tensors.SLAB_BYTES`` a converted tensor is made slab by slab into one reused
    buffer: the file is the same, and the buffer never holds more than a slab."""
    from tf2pt import conversion, write
    from tf2pt.write import tensors

    ckpt = checkpoints("bench_blocks")
    checkpoint, entries, _ = conversion.prepare(ckpt, str(TRANSPOSED))
    with checkpoint:
        write.write_entries(checkpoint, entries, tmp_path / "whole.safetensors", prefetch=False)
        sizes = []
        scratch_array = tensors.Scratch.array

        def spy(self, shape, dtype):
            sizes.append(write.nbytes(shape, np.dtype(dtype).name))
            return scratch_array(self, shape, dtype)

        monkeypatch.setattr(tensors.Scratch, "array", spy)
        monkeypatch.setattr(tensors, "SLAB_BYTES", 1024)
        monkeypatch.setattr(tensors, "SLAB_MIN_ROWS", 4)
        write.write_entries(checkpoint, entries, tmp_path / "slabs.safetensors", prefetch=False)
    assert (tmp_path / "whole.safetensors").read_bytes() == (tmp_path / "slabs.safetensors").read_bytes()
    tensor = max(write.nbytes(e.shape, e.dtype) for e in entries)
    row = tensor // entries[0].shape[0]
    assert len(sizes) > len(entries) and max(sizes) == 4 * row < tensor

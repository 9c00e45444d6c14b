"""Hostile input, round two (#16): crafted files with valid CRCs that once cost gigabytes, minutes
or a destroyed checkpoint, and environments that once gave exit 3. Each is built here.

Complexity is bounded without wall-clock assertions: memory by ``tracemalloc`` (deterministic),
time by the CPU-time *ratio* between an input and one 8 times larger (linear code: about 8x;
the old quadratic code: about 64x), which a loaded machine does not change much.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from bundle_tools import entry_proto, f_bytes, f_varint, header_proto, slices_proto, varint, write_bundle, write_table
from conftest import EXAMPLE
from tf2pt.cli import cli
from tf2pt.errors import CheckpointError, CorruptCheckpointError, UnsupportedError
from tf2pt.read import open_checkpoint
from tf2pt.read._crc import crc32c, mask
from tf2pt.read.slices import slice_key

F32 = 1


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_exit_2(r):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tf2pt: error: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def cpu_ratio(build, run, n):
    """CPU seconds of ``run(build(8 n))`` over those of ``run(build(n))`` (best of two each)."""
    def cost(size):
        data = build(size)
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            run(data)
            best = min(best, time.process_time() - start)
        return max(best, 1e-4)
    return cost(8 * n) / cost(n)


def string_entry_bytes(value: bytes):
    """A scalar string tensor's data bytes and masked CRC32C, as TF writes them."""
    length = varint(len(value))
    length_crc = crc32c(len(value).to_bytes(4, "little"))
    raw = length + mask(length_crc).to_bytes(4, "little") + value
    crc = crc32c(value, crc32c(mask(length_crc).to_bytes(4, "little"), length_crc))
    return raw, mask(crc)


def bundle_with_object_graph(prefix, graph: bytes) -> str:
    raw, crc = string_entry_bytes(graph)
    var = np.arange(4, dtype=np.float32).tobytes()
    items = [(b"", header_proto()),
             (b"_CHECKPOINTABLE_OBJECT_GRAPH", entry_proto(dtype=7, shape=[], offset=0, size=len(raw), crc=crc)),
             (b"x", entry_proto(dtype=F32, shape=[4], offset=len(raw), size=16, crc=mask(crc32c(var))))]
    write_table(f"{prefix}.index", items)
    with open(f"{prefix}.data-00000-of-00001", "wb") as fh:
        fh.write(raw + var)
    return str(prefix)


def _ref(node_id, name):
    return f_bytes(1, f_varint(1, node_id) + f_bytes(2, name.encode()))


def _attr(full_name, key):
    return f_bytes(2, f_bytes(1, b"VARIABLE_VALUE") + f_bytes(2, full_name.encode()) + f_bytes(3, key.encode()))


# -- object graphs ---------------------------------------------------------------------------------


def chain_graph(n):
    """A chain of ``n`` nodes, each the only child of the one before, the last holding ``x``."""
    nodes = [f_bytes(1, _ref(i + 1, "a")) for i in range(n - 1)] + [f_bytes(1, _attr("", "x"))]
    return b"".join(nodes)


def test_a_long_object_graph_chain_costs_memory_linear_in_its_size(tmp_path):
    from tf2pt.read.objgraph import MAX_PATH_DEPTH, decode

    data = chain_graph(100_000)  # 0.8 MB: the old decoder built 100k paths of up to 100k parts
    assert len(data) < 2 << 20
    tracemalloc.start()
    keys = decode(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * len(data)  # the old decoder: about 10 GB here
    name = keys["x"].readable_name
    assert name.startswith("<...>/") and name.count("/") == MAX_PATH_DEPTH
    prefix = bundle_with_object_graph(tmp_path / "c", data)
    with open_checkpoint(prefix) as ckpt:
        assert ckpt.variables["x"].readable_name == name


def test_many_slot_references_to_many_attributes_are_linear():
    from tf2pt.read.objgraph import decode

    def build(n):
        # node 0 holds n slot references, all to node 1, which holds n attributes
        slot = f_bytes(3, f_varint(1, 2) + f_bytes(2, b"m") + f_varint(3, 1))
        root = _ref(1, "slot") + _ref(2, "var") + slot * n
        holder = b"".join(_attr(f"s{i}", f"k{i}") for i in range(n))
        return f_bytes(1, root) + f_bytes(1, holder) + f_bytes(1, _attr("v", "v"))

    assert cpu_ratio(build, decode, 2000) < 30


def test_an_optimizer_name_of_many_underscores_is_linear():
    from tf2pt.read.objgraph import decode

    def build(n):
        model = _ref(1, "model")
        opt = _ref(2, "optimizer")
        return (f_bytes(1, model + opt) + f_bytes(1, _attr("dense/kernel", "m"))
                + f_bytes(1, _attr("adam/" + "_" * n + "x", "o")))

    assert cpu_ratio(build, decode, 20_000) < 30


# -- the index -------------------------------------------------------------------------------------


def growing_keys_index(path, n):
    """An index whose keys each repeat the one before plus one byte (prefix compression): a
    tiny file of ever-longer keys."""
    block = bytearray()
    key = b""
    for i in range(n):
        block += varint(len(key)) + varint(1) + varint(0) + b"a"
        key += b"a"
    block += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    from bundle_tools import _with_trailer  # noqa: PLC2701  (the block trailer with its CRC)

    from tf2pt.read._sstable import MAGIC

    header = bytearray()
    header += varint(0) + varint(len(header_proto())) + varint(0) + header_proto()
    header += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    out = bytearray()
    handles = []
    for b in (bytes(header), bytes(block)):
        stored = _with_trailer(b)
        handles.append(varint(len(out)) + varint(len(stored) - 5))
        out += stored
    index = bytearray()
    index += varint(0) + varint(1) + varint(len(handles[0])) + b"\x00" + handles[0]
    index += varint(0) + varint(n) + varint(len(handles[1])) + b"a" * n + handles[1]
    index += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    meta = bytes([0, 0, 0, 0, 1, 0, 0, 0])
    for b in (meta, bytes(index)):
        stored = _with_trailer(b)
        handles.append(varint(len(out)) + varint(len(stored) - 5))
        out += stored
    out += (handles[2] + handles[3]).ljust(40, b"\x00") + MAGIC.to_bytes(8, "little")
    path.write_bytes(bytes(out))


def test_prefix_compressed_keys_cannot_claim_gigabytes(tmp_path):
    from tf2pt.read._sstable import TableError, read_table

    path = tmp_path / "grow.index"
    growing_keys_index(path, 60_000)  # 240 KB: 1.8 GB of keys decoded, the old reader's cost
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(TableError, match="keys decode to more than"):
        read_table(path.read_bytes())
    assert tracemalloc.get_traced_memory()[1] < 200 << 20
    tracemalloc.stop()
    (tmp_path / "grow.data-00000-of-00001").write_bytes(b"")
    r = invoke("inspect", tmp_path / "grow")
    assert "keys decode to more than" in one_line_exit_2(r)


def test_the_decoded_budget_bounds_many_long_keys():
    from tf2pt.read import _sstable

    assert _sstable.decoded_budget(1 << 20) == 64 * (1 << 20) + (64 << 20)
    # a real index decodes to a few times its size, far below the budget
    raw = (EXAMPLE / "model.ckpt-33000.index").read_bytes()
    decoded = sum(len(k) + len(v) for k, v in _sstable.read_table(raw))
    assert decoded < 8 * len(raw) < _sstable.decoded_budget(len(raw))


def partitioned(prefix, n):
    """A variable of ``n`` one-element slices along axis 0."""
    data = bytearray()
    items = [(b"", header_proto())]
    slices = [[(i, 1)] for i in range(n)]
    items.append((b"p", entry_proto(dtype=F32, shape=[n]) + slices_proto(slices)))
    parts = []
    for i in range(n):
        raw = np.float32(i).tobytes()
        parts.append((slice_key("p", [(i, 1)]), entry_proto(dtype=F32, shape=[1], offset=len(data), size=4,
                                                           crc=mask(crc32c(raw)))))
        data += raw
    items += sorted(parts)
    write_table(f"{prefix}.index", sorted(items), per_block=1024)
    with open(f"{prefix}.data-00000-of-00001", "wb") as fh:
        fh.write(bytes(data))
    return str(prefix)


def test_many_slices_are_checked_in_n_log_n(tmp_path):
    counter = iter(range(100))

    def build(n):
        return partitioned(tmp_path / f"p{next(counter)}", n)

    def run(prefix):
        with open_checkpoint(prefix) as ckpt:
            assert ckpt.variables["p"].partitions > 0

    assert cpu_ratio(build, run, 2000) < 30
    with open_checkpoint(build(50)) as ckpt:
        np.testing.assert_array_equal(ckpt.read("p"), np.arange(50, dtype=np.float32))


def test_entries_sharing_the_same_data_are_refused(tmp_path):
    """Two variables (or slices) pointing at the same bytes would let a small file write a huge
    output; TF never writes that."""
    raw = np.ones(1024, np.float32).tobytes()
    crc = mask(crc32c(raw))
    prefix = write_bundle(tmp_path / "dup", [(b"a", F32, [1024], raw)],
                          entry_overrides={})
    items = [(b"", header_proto())] + [(bytes([97 + i]), entry_proto(dtype=F32, shape=[1024], offset=0, size=len(raw),
                                                                     crc=crc)) for i in range(8)]
    write_table(prefix + ".index", items)
    with pytest.raises(CorruptCheckpointError, match="some share the same data"):
        open_checkpoint(prefix)
    out = tmp_path / "out.safetensors"
    one_line_exit_2(invoke("dump", prefix, "--state-dict", out))
    assert not out.exists()


def test_the_output_budget_bounds_what_a_small_checkpoint_may_write(tmp_path):
    prefix = write_bundle(tmp_path / "s", [(b"v", F32, [256], np.ones(256, np.float32).tobytes())])
    out = tmp_path / "o.safetensors"
    line = one_line_exit_2(invoke("dump", prefix, "--state-dict", out, "--max-output-bytes", 100))
    assert "more than the 100 allowed" in line and not out.exists()
    assert invoke("dump", prefix, "--state-dict", out).exit_code == 0


# -- frozen graphs ---------------------------------------------------------------------------------


def splat_graph(path, dtype, shape, value_field):
    """A GraphDef with one Const filled from a single value."""
    tensor = f_varint(1, dtype) + f_bytes(2, b"".join(f_bytes(2, f_varint(1, d)) for d in shape)) + value_field
    attr = f_bytes(1, b"value") + f_bytes(2, f_bytes(8, tensor))
    node = f_bytes(1, b"big") + f_bytes(2, b"Const") + f_bytes(5, attr)
    path.write_bytes(f_bytes(1, node))
    return str(path)


@pytest.mark.parametrize("dtype, shape, field", [(F32, [1 << 31], b"\x2d" + b"\x00\x00\x80\x3f"),  # float_val 1.0
                                                 (7, [1 << 40], f_bytes(8, b"x"))])  # one string for 2**40
def test_constants_filled_from_one_value_cannot_claim_gigabytes(tmp_path, dtype, shape, field):
    path = splat_graph(tmp_path / "splat.pb", dtype, shape, field)
    assert os.path.getsize(path) < 100
    with pytest.raises(CorruptCheckpointError, match="would expand to"):
        open_checkpoint(path)
    out = tmp_path / "o.safetensors"
    one_line_exit_2(invoke("dump", path, "--all", "--state-dict", out))
    assert not out.exists()


def test_shapes_of_absurd_rank_or_extent_are_refused_cleanly(tmp_path):
    for name, shape in (("rank", [1] * 65), ("extent", [1 << 62, 0])):  # numpy allows 64 dimensions
        prefix = write_bundle(tmp_path / name, [(b"v", F32, shape, b"")])
        r = invoke("inspect", prefix)
        assert "shape" in one_line_exit_2(r)
    prefix = write_bundle(tmp_path / "dtype", [(b"v", 250, [1], b"\x00")])
    r = invoke("inspect", prefix, "--all", "--stats")
    assert "unknown (enum 250)" in one_line_exit_2(r)


# -- files that are not files ----------------------------------------------------------------------


def test_an_index_that_is_dev_zero_or_a_fifo_is_refused_at_once(tmp_path):
    d = tmp_path / "zero"
    d.mkdir()
    os.symlink("/dev/zero", d / "m.index")
    assert "no checkpoint in this directory" in one_line_exit_2(invoke("inspect", d))  # the scan skips it
    assert "a character device, not a regular file" in one_line_exit_2(invoke("inspect", d / "m.index"))
    fifo = tmp_path / "f"
    fifo.mkdir()
    os.mkfifo(fifo / "m.index")
    assert "a FIFO, not a regular file" in one_line_exit_2(invoke("inspect", fifo / "m.index"))  # no hang


def test_a_data_file_truncated_while_read_is_an_error_not_a_crash(tmp_path):
    prefix = write_bundle(tmp_path / "t", [(b"v", F32, [4096], np.ones(4096, np.float32).tobytes())])
    with open_checkpoint(prefix) as ckpt:
        ckpt.read("v")
        os.truncate(prefix + ".data-00000-of-00001", 100)  # another process rewrites it
        with pytest.raises(CorruptCheckpointError, match="changed size while it was read"):
            ckpt.read("v")


# -- outputs that clobber --------------------------------------------------------------------------


def test_no_output_may_be_another_output_or_a_source(tmp_path):
    from bundle_tools import copy_bundle

    prefix = copy_bundle(str(EXAMPLE / "model.ckpt-33000"), tmp_path / "ck")
    index = prefix + ".index"
    before = open(index, "rb").read()
    out = tmp_path / "m.safetensors"
    for args in (["convert", prefix, "-m", "highresnet", "-o", out, "--report", out],
                 ["convert", prefix, "-m", "highresnet", "-o", out, "--report", index, "--force"],
                 ["convert", prefix, "-m", "highresnet", "-o", out, "--report", prefix + ".meta", "--force"],
                 ["dump", prefix, "--csv", out, "--state-dict", out],
                 ["dump", prefix, "--csv", index, "--force"]):
        line = one_line_exit_2(invoke(*args))
        assert "same file" in line or "a file of the checkpoint" in line, line
        assert not out.exists() and open(index, "rb").read() == before


# -- the environment -------------------------------------------------------------------------------


def test_memory_and_os_errors_are_exit_2_not_3(tmp_path, monkeypatch):
    import errno

    from tf2pt.write import safetensors

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.safetensors"))

    monkeypatch.setattr(safetensors.Sink, "write", full)
    line = one_line_exit_2(invoke("convert", EXAMPLE, "-m", "highresnet", "-o", tmp_path / "x.safetensors"))
    assert "No space left on device" in line and "free some disk space" in line
    assert list(tmp_path.iterdir()) == []

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(safetensors.Sink, "write", no_memory)
    line = one_line_exit_2(invoke("convert", EXAMPLE, "-m", "highresnet", "-o", tmp_path / "x.safetensors"))
    assert "out of memory" in line and str(EXAMPLE) in line


def test_many_shards_under_a_low_open_file_limit(tmp_path):
    """A bundle of more shards than the open-file limit allows maps at once: idle shards are
    closed and the dump completes (it once ended in exit 3)."""
    n = 60
    data = [np.full(4, i, np.float32).tobytes() for i in range(n)]
    items = [(b"", header_proto(n))]
    for i in range(n):
        items.append((f"v{i:03d}".encode(), entry_proto(dtype=F32, shape=[4], shard=i, offset=0, size=16,
                                                        crc=mask(crc32c(data[i])))))
        (tmp_path / f"m.data-{i:05d}-of-{n:05d}").write_bytes(data[i])
    write_table(tmp_path / "m.index", items)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40));"
            "from tf2pt.cli import main; main(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", code, "dump", str(tmp_path / "m"), "--state-dict",
                        str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from safetensors.numpy import load_file

    got = load_file(str(tmp_path / "o.safetensors"))
    assert len(got) == n and all(np.array_equal(got[f"v{i:03d}"], np.full(4, i, np.float32)) for i in range(n))


@pytest.mark.parametrize("code, hint", [("ENOSPC", "free some disk space"), ("EROFS", "writable directory"),
                                        ("EACCES", "permissions")])
def test_environment_errors_name_the_file_and_what_to_do(tmp_path, monkeypatch, code, hint):
    import errno

    from tf2pt.write import safetensors

    def fail(self, data):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(tmp_path / "x.safetensors"))

    monkeypatch.setattr(safetensors.Sink, "write", fail)
    line = one_line_exit_2(invoke("convert", EXAMPLE, "-m", "highresnet", "-o", tmp_path / "x.safetensors"))
    assert str(tmp_path / "x.safetensors") in line and hint in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_remove_the_temporary_file(tmp_path, sig):
    """Sent while the output is being written: the command stops, and no file is left."""
    code = ("import sys, os, signal\n"
            "from tf2pt.write import safetensors\n"
            "write = safetensors.Sink.write\n"
            "calls = []\n"
            "def slow(self, data):\n"
            "    calls.append(1)\n"
            "    if len(calls) == 3:\n"
            f"        os.kill(os.getpid(), signal.{sig})\n"
            "    write(self, data)\n"
            "safetensors.Sink.write = slow\n"
            "from tf2pt.cli import main\n"
            "main(sys.argv[1:])\n")
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", code, "convert", str(EXAMPLE), "-m", "highresnet", "-o",
                        str(out / "m.safetensors")], capture_output=True, text=True)
    assert r.returncode == 128 + getattr(signal, sig), r.stderr
    assert "no output was written" in r.stderr and list(out.iterdir()) == []


def test_ctrl_c_during_a_pth_write_exits_130(tmp_path, monkeypatch):
    """torch.save turns a KeyboardInterrupt into a RuntimeError; the interrupt is held until the
    write is done, then the command stops as for any Ctrl-C."""
    import torch

    real_save = torch.save

    def save(obj, fh, *a, **k):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C mid-write
            time.sleep(0.01)
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed") from None
        return real_save(obj, fh, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    r = invoke("convert", EXAMPLE, "-m", "highresnet", "-o", tmp_path / "m.pth")
    assert r.exit_code == 130, r.output
    assert list(tmp_path.iterdir()) == []


# -- verify's inputs -------------------------------------------------------------------------------


def test_npy_and_npz_headers_claiming_huge_arrays_are_refused(tmp_path):
    from tf2pt.errors import InputError
    from tf2pt.verify.arrays import check_npz, load_npy

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (1 << 40,)
    path = tmp_path / "v.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\x00" * 16)
    with pytest.raises(InputError, match="claims"):
        load_npy(str(path), "volume")
    import zipfile

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("output.npy", "w", force_zip64=True) as fh:
            big = dict(header, shape=(1 << 26,))
            np.lib.format.write_array_header_1_0(fh, big)
            chunk = b"\x00" * (1 << 24)
            for _ in range(16):  # 256 MiB of zeros, about 256 KB compressed
                fh.write(chunk)
    assert bomb.stat().st_size < 4 << 20
    tracemalloc.start()
    with pytest.raises(InputError, match="zip bomb"):
        check_npz(str(bomb), "reference", slack=64 << 20)
    assert tracemalloc.get_traced_memory()[1] < 32 << 20
    tracemalloc.stop()
    r = invoke("verify", EXAMPLE, "-m", "highresnet", "--reference", path)
    one_line_exit_2(r)


# -- a wrong mapping -------------------------------------------------------------------------------


def test_a_wrong_mapping_is_said_to_be_wrong_first(tmp_path, checkpoints):
    """An unrelated checkpoint under -m highresnet: the first line says so, at most 20 problems
    follow with a count of the rest, and --no-strict writes no empty file."""
    ckpt = checkpoints("many_1000")
    r = invoke("convert", ckpt, "-m", "highresnet", "-o", tmp_path / "x.safetensors")
    assert r.exit_code == 2
    first = r.stderr.strip().splitlines()[0]
    assert "0 of 1000 inference variables match mapping 'highresnet': this checkpoint is probably not a " \
           "NiftyNet HighRes3DNet" in first and "tf2pt inspect" in first
    listed = [l for l in r.stderr.splitlines() if l.startswith("  - ")]
    assert len(listed) == 20 and "more (--report FILE lists them all)" in r.stderr
    r = invoke("convert", ckpt, "-m", "highresnet", "-o", tmp_path / "x.safetensors", "--no-strict")
    assert r.exit_code == 2 and not (tmp_path / "x.safetensors").exists()


# -- the save path that ends in "/" ----------------------------------------------------------------


def test_a_bundle_named_dot_index_with_a_foreign_state_file(tmp_path):
    """TF1's Saver given ``/elsewhere/run_17/`` writes ``.index`` and ``.data-00000-of-00001``
    and a state file naming that directory; both the state file and the directory scan find it."""
    d = tmp_path / "run"
    d.mkdir()
    for name in ("index", "data-00000-of-00001"):
        (d / f".{name}").write_bytes((EXAMPLE / f"model.ckpt-33000.{name}").read_bytes())
    r = invoke("inspect", d)
    assert r.exit_code == 0 and "named '.index'" in r.output
    (d / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/run_17/"\n'
                                  'all_model_checkpoint_paths: "/elsewhere/run_17/"\n')
    r = invoke("inspect", d)
    assert r.exit_code == 0, r.output
    assert "105 variables" in r.output and "save path ending in '/'" in r.output
    out = tmp_path / "m.safetensors"
    r = invoke("convert", d, "-m", "highresnet", "-o", out)
    assert r.exit_code == 0 and out.exists() and "save path ending in '/'" in r.stderr

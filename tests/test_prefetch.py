"""The streaming writer's second thread: the next tensor is read, CRC-checked and converted while
the one before is written. Its output must be the single-threaded output byte for byte, and its
errors the same errors, with nothing left behind."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tf2pt import conversion, write
from tf2pt.write import prefetch, safetensors, tensors
from tf2pt.cli import cli
from tf2pt.errors import CorruptCheckpointError
from tf2pt.read import open_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = {"transposed": ROOT / "benchmarks" / "generic_mapping.py", "layout kept": ROOT / "benchmarks" / "identity_mapping.py"}


@pytest.fixture
def prefetch_all(monkeypatch):
    """Prefetch every tensor (the fixtures' tensors are smaller than the real threshold) and
    record which thread made each one ready."""
    monkeypatch.setattr(prefetch, "PREFETCH_MIN", 0)
    made = []
    entry_bytes = tensors.entry_bytes

    def spy(checkpoint, entry, scratch=None, **kwargs):
        made.append((entry.key, threading.current_thread().name))
        return entry_bytes(checkpoint, entry, scratch, **kwargs)

    monkeypatch.setattr(tensors, "entry_bytes", spy)
    return made


def convert(ckpt, mapping, out, prefetch):
    checkpoint, entries, report = conversion.prepare(ckpt, str(mapping))
    with checkpoint:
        write.write_entries(checkpoint, entries, out, prefetch=prefetch)
    return entries


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
def test_prefetched_output_is_the_single_threaded_output(checkpoints, tmp_path, prefetch_all, kind):
    ckpt = checkpoints("bench_blocks")
    entries = convert(ckpt, MAPPINGS[kind], tmp_path / "one.safetensors", prefetch=False)
    assert {thread for _, thread in prefetch_all} == {threading.current_thread().name}
    prefetch_all.clear()
    convert(ckpt, MAPPINGS[kind], tmp_path / "two.safetensors", prefetch=True)
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    # the first tensor is made ready by the writing thread, every later one by the second thread
    assert len(prefetch_all) == len(entries) == 8
    assert prefetch_all[0][1] == threading.current_thread().name
    assert all(thread.startswith("tf2pt-prefetch") for _, thread in prefetch_all[1:])
    assert not [t for t in threading.enumerate() if t.name.startswith("tf2pt-prefetch")]


def damaged_copy(src, tmp_path, k, at):
    """A copy of the bench_blocks checkpoint ``src`` whose ``k``-th tensor (in file order) has
    a flipped bit in its byte ``at`` (negative: from its end); ``(prefix, that tensor's name)``."""
    src = Path(src)
    damaged = tmp_path / "ckpt"
    damaged.mkdir()
    for f in src.parent.glob(src.name + ".*"):
        shutil.copy(f, damaged / f.name)
    prefix = damaged / src.name
    with open_checkpoint(str(prefix)) as ckpt:
        names = sorted((n for n in ckpt.variables if ckpt.variables[n].role == "inference"), key=ckpt.entry_location)
        shard, offset = ckpt.entry_location(names[k])
        size = ckpt.variables[names[k]].nbytes
    data = next(damaged.glob(src.name + ".data-*"))
    raw = bytearray(data.read_bytes())
    raw[offset + at % size] ^= 0x40
    data.write_bytes(bytes(raw))
    return str(prefix), names[k]


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
def test_a_corrupt_tensor_found_while_prefetching_fails_cleanly(checkpoints, tmp_path, prefetch_all, kind):
    """Kept as stored, the second thread finds the damage as it reads; transposed, the second
    thread converts it unchecked and the writing thread's check finds it before it is written."""
    prefix, name = damaged_copy(checkpoints("bench_blocks"), tmp_path, 3, 10)
    out = tmp_path / "out" / "x.safetensors"
    out.parent.mkdir()
    with pytest.raises(CorruptCheckpointError, match=f"variable '{name}' fails its CRC32C check"):
        convert(prefix, MAPPINGS[kind], out, prefetch=True)
    assert list(out.parent.iterdir()) == []  # no output, no temporary file
    assert any(thread.startswith("tf2pt-prefetch") for key, thread in prefetch_all if key == name.replace("/", "."))
    assert not [t for t in threading.enumerate() if t.name.startswith("tf2pt-prefetch")]


@pytest.mark.parametrize("fixture", ["bench_blocks", "partitioned", "sliced_savev2"])
def test_dump_prefetches_and_writes_what_the_reader_reads(checkpoints, tmp_path, monkeypatch, tf, fixture):
    """Whole variables come from the worker thread; partitioned ones (no single run of bytes to
    hand over) are assembled by the writing thread in between. Both as TF reads them."""
    from safetensors.numpy import load_file

    monkeypatch.setattr(prefetch, "PREFETCH_MIN", 0)
    ckpt = checkpoints(fixture)
    r = CliRunner().invoke(cli, ["dump", ckpt, "--state-dict", str(tmp_path / "d.safetensors")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = load_file(str(tmp_path / "d.safetensors"))
    with open_checkpoint(ckpt) as reader:
        assert sorted(got) == sorted(n for n in reader.variables if reader.variables[n].role == "inference")
        partitioned = any(reader.variables[n].partitions for n in got)
    assert partitioned == (fixture != "bench_blocks")
    tf_reader = tf.train.load_checkpoint(ckpt)
    for name, value in got.items():
        assert value.tobytes() == tf_reader.get_tensor(name).tobytes(), name


@pytest.mark.parametrize("cores, hash_sources, expected", [(2, True, False), (2, False, True), (3, True, True)])
def test_convert_prefetches_only_where_the_hashing_leaves_a_core(checkpoints, tmp_path, monkeypatch, cores, hash_sources,
                                                              expected):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    seen = []
    write_entries = write.write_entries
    monkeypatch.setattr(write, "write_entries", lambda *a, **k: (seen.append(k["prefetch"]), write_entries(*a, **k)))
    args = ["convert", checkpoints("bench_blocks"), "-m", str(MAPPINGS["transposed"]), "-o", str(tmp_path / "x.safetensors"),
            "--quiet", "--hash-sources" if hash_sources else "--no-hash-sources"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert seen == [expected]


def interrupted_convert(checkpoints, tmp_path, monkeypatch, at):
    """``tf2pt convert`` (transposed) with Ctrl-C reaching the writing thread at its ``at``-th
    write (the header is the first): exit 130, and no output, temporary file or thread left."""
    calls = []
    sink_write = safetensors.Sink.write

    def interrupted(self, data):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        sink_write(self, data)

    monkeypatch.setattr(safetensors.Sink, "write", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    args = ["convert", checkpoints("bench_blocks"), "-m", str(MAPPINGS["transposed"]), "-o", str(out / "x.safetensors")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 130 and "interrupted; no output was written" in r.output
    assert list(out.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("tf2pt-prefetch")]


def test_an_interrupt_while_a_tensor_is_in_flight_leaves_nothing(checkpoints, tmp_path, prefetch_all, monkeypatch):
    """Ctrl-C reaches the writing thread while the worker prepares the next tensor: the worker is
    waited for (the checkpoint is not closed under it), and no output or thread is left."""
    interrupted_convert(checkpoints, tmp_path, monkeypatch, at=4)  # the header, then the third tensor
    assert [thread for _, thread in prefetch_all][3].startswith("tf2pt-prefetch")  # the fourth was in flight


@pytest.fixture
def slabs_only(monkeypatch):
    """Every tensor is too large to prefetch and is made in slabs of a few rows (the fixtures'
    tensors are smaller than the real sizes); records which thread made each slab, into
    which buffer."""
    monkeypatch.setattr(prefetch, "PREFETCH_MAX", 0)
    monkeypatch.setattr(tensors, "SLAB_BYTES", 1024)
    monkeypatch.setattr(tensors, "SLAB_MIN_ROWS", 4)
    made = []
    copied = tensors._copied

    def spy(view, scratch):
        out = copied(view, scratch)
        made.append((threading.current_thread().name, out.__array_interface__["data"][0]))
        return out

    monkeypatch.setattr(tensors, "_copied", spy)
    return made


def test_slabs_of_a_large_tensor_are_made_one_ahead_of_the_write(checkpoints, tmp_path, slabs_only):
    """A tensor too large to prefetch is written slab by slab while the worker makes the next
    slab, in a ring of two buffers: the same file as made in one thread."""
    ckpt = checkpoints("bench_blocks")
    entries = convert(ckpt, MAPPINGS["transposed"], tmp_path / "one.safetensors", prefetch=False)
    assert {thread for thread, _ in slabs_only} == {threading.current_thread().name}
    single = len(slabs_only)
    slabs_only.clear()
    convert(ckpt, MAPPINGS["transposed"], tmp_path / "two.safetensors", prefetch=True)
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    assert len(slabs_only) == single > 2 * len(entries)  # several slabs per tensor
    assert all(thread.startswith("tf2pt-prefetch") for thread, _ in slabs_only)
    buffers = [address for _, address in slabs_only]
    assert len(set(buffers)) == 2 and all(a != b for a, b in zip(buffers, buffers[1:]))  # alternating
    assert not [t for t in threading.enumerate() if t.name.startswith("tf2pt-prefetch")]


def test_an_interrupt_while_a_slab_is_in_flight_leaves_nothing(checkpoints, tmp_path, slabs_only, monkeypatch):
    """Ctrl-C while the worker makes the next slab: no output, no temporary file, no thread."""
    interrupted_convert(checkpoints, tmp_path, monkeypatch, at=6)  # the header, then the fifth slab
    assert len(slabs_only) in (5, 6)  # the sixth, in flight, was cancelled or waited for; no later one


@pytest.mark.parametrize("command", ["dump", "convert"])
def test_tensors_above_the_whole_bound_are_copied_in_checked_chunks(checkpoints, tmp_path, monkeypatch, command):
    """A tensor kept as it is stored but larger than ``bundle.WHOLE_BYTES`` is copied chunk by
    chunk, each chunk's pages released once written: the same file; and a flipped byte in its
    last chunk still fails its CRC32C before the file is finished, leaving nothing."""
    from tf2pt.read import bundle

    def run(ckpt, out):
        if command == "dump":
            args = ["dump", ckpt, "--state-dict", str(out), "--quiet"]
        else:
            args = ["convert", ckpt, "-m", str(MAPPINGS["layout kept"]), "-o", str(out), "--quiet"]
        return CliRunner().invoke(cli, args)

    ckpt = checkpoints("bench_blocks")
    assert run(ckpt, tmp_path / "whole.safetensors").exit_code == 0
    monkeypatch.setattr(bundle, "WHOLE_BYTES", 5000)  # the fixture's tensors hold 32 KiB: 7 chunks each
    released = []
    release = bundle.BundleCheckpoint._release_range
    monkeypatch.setattr(bundle.BundleCheckpoint, "_release_range",
                        lambda self, shard, offset, size: (released.append(size), release(self, shard, offset, size)))
    r = run(ckpt, tmp_path / "chunks.safetensors")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "whole.safetensors").read_bytes() == (tmp_path / "chunks.safetensors").read_bytes()
    assert released.count(5000) == 8 * 6 and max(released) <= 32768  # every full chunk, as it was written
    prefix, name = damaged_copy(ckpt, tmp_path, 5, -3)
    out = tmp_path / "out"
    out.mkdir()
    r = run(prefix, out / "x.safetensors")
    assert r.exit_code == 2 and f"variable '{name}' fails its CRC32C check" in r.output, r.output
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
@pytest.mark.parametrize("prefetching", [True, False])
def test_every_converted_tensor_is_crc_checked_once(checkpoints, tmp_path, monkeypatch, prefetch_all, kind, prefetching):
    """Whichever thread converts a tensor, its source's CRC32C is checked exactly once before it
    is written: by the reader where it is copied as stored, by the writing thread where the
    second thread converted it unchecked."""
    from tf2pt.read import bundle

    checked = []
    check = bundle.BundleCheckpoint._check_crc
    monkeypatch.setattr(bundle.BundleCheckpoint, "_check_crc", lambda self, label, entry, data: (
        checked.append((label, threading.current_thread().name)), check(self, label, entry, data)))
    entries = convert(checkpoints("bench_blocks"), MAPPINGS[kind], tmp_path / "x.safetensors", prefetch=prefetching)
    assert sorted(label for label, _ in checked) == sorted(repr(e.key.replace(".", "/")) for e in entries)
    threads = {thread for _, thread in checked}
    if kind == "transposed" or not prefetching:
        assert threads == {threading.current_thread().name}
    else:
        assert any(thread.startswith("tf2pt-prefetch") for thread in threads)

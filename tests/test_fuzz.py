"""Fuzzing the parsers: any exception other than tf2pt's typed errors is a bug.

Runs ``TF2PT_FUZZ_EXAMPLES`` examples per target (default 200, a short run for CI); see
docs/reliability.md for the long run and its result. Seeds come from real TF-written files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_tools import write_table
from conftest import EXAMPLE
from tf2pt.read._proto import ProtoError
from tf2pt.read._sstable import TableError, read_table
from tf2pt.errors import Tf2ptError
from tf2pt.read.graphdef import GraphDefCheckpoint
from tf2pt.read.objgraph import decode as decode_object_graph
from tf2pt.read import open_checkpoint
from tf2pt.read.bundle import BundleCheckpoint

EXAMPLES = int(os.environ.get("TF2PT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TF2PT_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])

EXAMPLE_PREFIX = open_checkpoint(EXAMPLE).prefix
INDEX = Path(EXAMPLE_PREFIX + ".index").read_bytes()
ENTRIES = read_table(INDEX)


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few bytes replaced, and maybe truncated or extended."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut]
    data += draw(st.binary(max_size=16))
    return bytes(data)


@FUZZ
@given(mutated(INDEX))
def test_fuzz_table_parser(data):
    try:
        read_table(data)
    except TableError:
        pass


@st.composite
def forged_entries(draw):
    """The example's index with some entry values (BundleEntryProtos) mutated, or the header,
    re-written with valid block CRCs so the entry decoder itself is exercised."""
    items = list(ENTRIES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(items) - 1))
        key, value = items[i]
        items[i] = (key, draw(mutated(value)))
    if draw(st.booleans()):
        items.append((draw(st.binary(min_size=1, max_size=12)), draw(st.binary(max_size=40))))
        items.sort(key=lambda kv: kv[0])
    return items


@FUZZ
@given(items=forged_entries())
def test_fuzz_bundle_entries(items, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    prefix = str(d / "model.ckpt-33000")
    os.symlink(EXAMPLE_PREFIX + ".data-00000-of-00001", prefix + ".data-00000-of-00001")
    write_table(prefix + ".index", items)
    try:
        with BundleCheckpoint(prefix, prefix) as ckpt:
            for name in list(ckpt.variables)[:40]:
                try:
                    ckpt.read(name)
                except Tf2ptError:
                    pass
    except Tf2ptError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_object_graph_random(data):
    try:
        decode_object_graph(data)
    except ProtoError:
        pass




@pytest.fixture(scope="module")
def object_graph_bytes(checkpoints):
    with open_checkpoint(checkpoints("tf2_keras")) as ckpt:
        return bytes(ckpt.read("_CHECKPOINTABLE_OBJECT_GRAPH").reshape(-1)[0])


def test_fuzz_object_graph_mutated(object_graph_bytes):
    @FUZZ
    @given(mutated(object_graph_bytes))
    def run(data):
        try:
            decode_object_graph(data)
        except ProtoError:
            pass

    run()


@pytest.fixture(scope="module")
def graph_bytes(checkpoints):
    return Path(checkpoints("frozen_graph")).read_bytes()


def test_fuzz_graphdef(graph_bytes, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzgraph")

    @FUZZ
    @given(mutated(graph_bytes))
    def run(data):
        path = d / "g.pb"
        path.write_bytes(data)
        try:
            ckpt = GraphDefCheckpoint(str(path))
            for name in ckpt.variables:
                try:
                    ckpt.read(name)
                except Tf2ptError:
                    pass
        except Tf2ptError:
            pass

    run()


def test_fuzz_data_bytes(tmp_path_factory):
    """Damaged tensor data: reads fail with a CRC error, never with anything else."""
    d = tmp_path_factory.mktemp("fuzzdata")
    data = Path(EXAMPLE_PREFIX + ".data-00000-of-00001").read_bytes()
    with open_checkpoint(EXAMPLE) as ckpt:
        spans = [(n, ckpt._entries[n].offset, ckpt._entries[n].size) for n in ckpt.variables]

    @FUZZ
    @given(st.integers(0, len(spans) - 1), st.integers(0, 10**9), st.integers(1, 255))
    def run(i, where, xor):
        name, offset, size = spans[i]
        if size == 0:
            return
        damaged = bytearray(data[offset:offset + size])
        damaged[where % size] ^= xor
        prefix = str(d / "m")
        Path(prefix + ".index").write_bytes(INDEX)
        blob = bytearray(data)
        blob[offset:offset + size] = damaged
        Path(prefix + ".data-00000-of-00001").write_bytes(bytes(blob))
        with BundleCheckpoint(prefix, prefix) as ckpt:
            with pytest.raises(Tf2ptError, match="CRC32C"):
                ckpt.read(name)

    run()

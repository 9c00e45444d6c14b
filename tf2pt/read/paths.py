"""From what the user typed to a bundle prefix: a prefix, its ``.index``/``.data-*``/``.meta``, a
directory with a ``checkpoint`` state file or one bundle, or a SavedModel directory."""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from ..errors import CheckpointNotFoundError, UnsupportedError
from .files import is_regular

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


_SIMPLE_ESCAPES = {ord("n"): 0x0A, ord("t"): 0x09, ord("r"): 0x0D, ord("a"): 0x07, ord("b"): 0x08, ord("f"): 0x0C,
                   ord("v"): 0x0B}


def _unescape_text_proto(raw: bytes) -> str:
    """A text-format string literal's body (C escapes: \\n, \\", octal \\303, hex \\xc3) as text;
    the bytes are UTF-8 (TF writes non-ASCII paths raw or octal-escaped)."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != 0x5C or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = raw[i + 1]
        if 0x30 <= e <= 0x37:  # up to three octal digits
            j = i + 1
            while j < min(i + 4, n) and 0x30 <= raw[j] <= 0x37:
                j += 1
            out.append(int(raw[i + 1:j], 8) & 0xFF)
            i = j
        elif e in (ord("x"), ord("X")):
            j = i + 2
            while j < min(i + 4, n) and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 2:j], 16) if j > i + 2 else e)
            i = j
        else:
            out.append(_SIMPLE_ESCAPES.get(e, e))
            i += 2
    return out.decode("utf-8", "surrogateescape")


def _parse_state_file(path: str) -> Optional[str]:
    """``model_checkpoint_path`` of a ``checkpoint`` state file (a text ``CheckpointState``)."""
    if not is_regular(path):
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError:
        return None
    m = re.search(rb'^\s*model_checkpoint_path\s*:\s*(["\'])((?:(?!\1)[^\\\n]|\\.)*)\1', data, re.M)
    if not m:
        return None
    return _unescape_text_proto(m.group(2))


def _refuse_v1(path: str) -> None:
    """A V1 checkpoint is one file, itself a table (same magic as an index): say so clearly."""
    try:
        if os.path.isfile(path) and os.path.getsize(path) >= 48:
            with open(path, "rb") as fh:
                fh.seek(-8, os.SEEK_END)
                magic = int.from_bytes(fh.read(8), "little")
        else:
            return
    except OSError:
        return
    if magic == 0xDB4775248B80FB57:
        raise UnsupportedError("a TF V1 checkpoint (single-file format); tf2pt reads V2 bundles (.index + .data)",
                               path=path, hint="load it in TensorFlow and save it again with tf.compat.v1.train.Saver(), "
                                               "which writes V2 by default")


def _indexes_in(directory: str) -> List[str]:
    """The ``*.index`` regular files in ``directory``, a hidden ``.index`` included (glob skips it)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.endswith(".index") and os.path.isfile(os.path.join(directory, n)))


def resolve(path) -> Tuple[str, str, List[str], Optional[str]]:
    """``(prefix, kind, notes, savedmodel_dir)`` for any accepted form of checkpoint path."""
    path = os.fspath(path)
    notes: List[str] = []
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")) and (
            os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))
        ):
            return os.path.join(path, "variables", "variables"), "savedmodel", notes, path
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            named = _parse_state_file(state)
            if named is None:
                raise CheckpointNotFoundError("the 'checkpoint' state file names no model_checkpoint_path", path=state,
                                              hint="pass the checkpoint prefix instead")
            candidate = named if os.path.isabs(named) else os.path.join(path, named)
            if os.path.isfile(candidate + ".index"):
                return candidate, "bundle", notes, None
            if named.endswith(("/", "\\")) and os.path.isfile(os.path.join(path, ".index")):
                # TF1's Saver, given a save path ending in "/", names the bundle ".index" and
                # ".data-*" inside that directory (TensorFlow itself then cannot find it)
                notes.append(f"the 'checkpoint' file names {named!r}, a save path ending in '/', so the bundle is "
                             "named '.index'; using the '.index' in this directory")
                return os.path.join(path, ""), "bundle", notes, None
            _refuse_v1(candidate)
            beside = os.path.join(path, os.path.basename(named.rstrip("/\\")))
            _refuse_v1(beside)
            if os.path.isfile(beside + ".index"):
                notes.append(f"the 'checkpoint' file names {named!r}, which does not exist here; "
                             f"using {os.path.basename(beside)!r} next to it")
                return beside, "bundle", notes, None
            raise CheckpointNotFoundError(
                f"the 'checkpoint' state file names {named!r}, which does not exist, and no bundle "
                f"{os.path.basename(named)!r} is next to it", path=state,
                hint="copy the .index and .data files next to the state file, or pass the prefix")
        indexes = _indexes_in(path)
        if len(indexes) == 1:
            if os.path.basename(indexes[0]) == ".index":
                notes.append("the bundle in this directory is named '.index' (TF1's Saver, given a save path "
                             "ending in '/', writes that)")
            return indexes[0][: -len(".index")], "bundle", notes, None
        if not indexes:
            below = savedmodels_below(path)
            if below:
                names = ", ".join(below[:5]) + (", ..." if len(below) > 5 else "")
                raise CheckpointNotFoundError(
                    f"no checkpoint in this directory, but {len(below)} SavedModel{'s' if len(below) != 1 else ''} "
                    f"one level down ({names})", path=path,
                    hint="pass one of them, e.g. " + os.path.join(path, below[-1]))
            raise CheckpointNotFoundError("no checkpoint in this directory (no *.index, 'checkpoint' file or SavedModel)",
                                          path=path, hint="pass a checkpoint prefix such as DIR/model.ckpt-1000")
        names = ", ".join(os.path.basename(i)[: -len(".index")] for i in indexes[:5])
        raise CheckpointNotFoundError(f"{len(indexes)} checkpoints in this directory ({names}{', ...' if len(indexes) > 5 else ''})",
                                      path=path, hint="pass one prefix, e.g. DIR/" + os.path.basename(indexes[-1])[:-6])
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)], "bundle", notes, None
    if _DATA_SUFFIX.search(path):
        return _DATA_SUFFIX.sub("", path), "bundle", notes, None
    if os.path.isfile(path + ".index"):
        return path, "bundle", notes, None
    if os.path.isfile(path):
        _refuse_v1(path)
        raise CheckpointNotFoundError("not a checkpoint (no PREFIX.index next to it)", path=path,
                                      hint="pass the checkpoint prefix, its .index, or its directory")
    raise CheckpointNotFoundError("no such file or directory", path=path,
                                  hint="pass a checkpoint prefix (e.g. model.ckpt-1000), its .index, or a directory")


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto`` starts with ``ir_version`` (field 1, a varint) and carries
    ``producer_name`` (2), ``graph`` (7) or ``opset_import`` (8); a GraphDef starts with a node
    (field 1, length-delimited), a SavedModel with field 1 as a number too but names no graph."""
    from ._proto import ProtoError, read_varint

    if not head or head[0] != 0x08:
        return False
    seen = set()
    pos, end = 0, len(head)
    try:  # the head is a prefix: a field running past its end is recorded, then the scan stops
        while pos < end:
            key, pos = read_varint(head, pos, end)
            number, wire = key >> 3, key & 7
            seen.add((number, wire))
            if wire == 0:
                _, pos = read_varint(head, pos, end)
            elif wire == 2:
                length, pos = read_varint(head, pos, end)
                pos += length
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                break
    except ProtoError:
        pass
    ir_version = head[1] if len(head) > 1 else 0
    return 1 <= ir_version <= 32 and (1, 0) in seen and ((7, 2) in seen or (8, 2) in seen)


def sniff(path: str) -> Optional[str]:
    """``"keras"`` for a Keras weight file (HDF5, a ``.keras`` zip, a sharded ``.weights.json``);
    ``None`` for what :func:`resolve` and the GraphDef reader handle. Refuses, naming the format,
    the neighbours tf2pt does not read: TensorFlow Lite, ONNX, text GraphDefs."""
    if not os.path.isfile(path):
        return None
    base = os.path.basename(path)
    lower = base.lower()
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    if head[:8] == b"\x89HDF\r\n\x1a\n" or head[:4] == b"PK\x03\x04" or lower.endswith(".keras"):
        return "keras"
    if lower.endswith(".weights.json") or (lower.endswith(".json") and b'"weight_map"' in head):
        return "keras"
    if lower.endswith((".h5", ".hdf5")):
        from . import _h5safe

        if _h5safe.is_hdf5(path):
            return "keras"
        raise CheckpointNotFoundError("named like an HDF5 file but has no HDF5 signature", path=path,
                                      hint="the file is damaged or not a Keras .h5; re-copy or re-save it")
    if head[4:8] == b"TFL3" or lower.endswith(".tflite"):
        raise UnsupportedError("a TensorFlow Lite model (TFL3 flatbuffer), not a checkpoint", path=path,
                               hint="convert from the TF checkpoint, SavedModel or Keras file it was made from; "
                                    "TFLite weights are often quantized and fused")
    # by content only where the path is no part of a bundle (a data shard is arbitrary bytes)
    bundle_part = lower.endswith((".index", ".meta")) or _DATA_SUFFIX.search(path) or os.path.isfile(path + ".index")
    if lower.endswith(".onnx") or (not bundle_part and base != "saved_model.pb" and _looks_like_onnx(head)):
        raise UnsupportedError("an ONNX model (ModelProto), not a TensorFlow checkpoint", path=path,
                               hint="load it with onnx and torch.onnx / onnx2torch, or convert from the TF "
                                    "checkpoint or SavedModel it was exported from")
    if lower.endswith(".pbtxt") and base != "saved_model.pbtxt":
        raise UnsupportedError("a text-format GraphDef (.pbtxt), which holds no weights unless frozen", path=path,
                               hint="pass the checkpoint it belongs to, or a binary frozen graph "
                                    "(tf.io.write_graph(graph, dir, 'g.pb', as_text=False))")
    return None


def savedmodels_below(path: str) -> List[str]:
    """The subdirectories of ``path`` that are SavedModels (one level down), sorted."""
    out = []
    try:
        entries = sorted(os.listdir(path))
    except OSError:
        return out
    for name in entries:
        sub = os.path.join(path, name)
        if os.path.isdir(sub) and (os.path.isfile(os.path.join(sub, "saved_model.pb"))
                                   or os.path.isfile(os.path.join(sub, "saved_model.pbtxt"))):
            out.append(name)
    return out

"""The TensorFlow side of ``tf2pt verify``. Imports TensorFlow, never torch.

It runs in its own process (``python -m tf2pt.verify.tfside REQUEST.json``) when ``verify`` runs both
sides, or in the current one for ``verify --save-reference``. TF reads the weights itself
(``tf.train.load_checkpoint`` / ``Saver.restore``), so the reference does not depend on
tf2pt's reader.

Which TF model runs, strongest evidence first:

1. ``original-graph``: the graph the checkpoint came with -- ``PREFIX.meta`` next to the bundle
   (restored with ``Saver``), a frozen GraphDef ``.pb``, or a SavedModel -- fed the mapping's
   input tensor and fetched at its output tensor.
2. ``reference``: the mapping's forward pass built from ``tf.nn`` ops and the checkpoint's
   variables, when there is no graph or its tensors cannot be found (the reason is reported).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import DependencyError, InputError, Tf2ptError

REQUEST_KEYS = ("checkpoint", "mapping", "input", "output", "tf_input", "tf_output", "per_layer")


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise DependencyError("tensorflow", "running the TF side of verify", extra="tf") from None
    tf.get_logger().setLevel("ERROR")
    return tf


def _session_config(tf):
    return tf.compat.v1.ConfigProto(device_count={"GPU": 0})  # the reference is computed on CPU


class TFVariables:
    """Checkpoint variables as TensorFlow reads them: ``name in v``, ``v[name]``."""

    def __init__(self, tf, prefix: str):
        self._reader = tf.train.load_checkpoint(prefix)

    def __contains__(self, name: str) -> bool:
        return self._reader.has_tensor(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._reader.get_tensor(name)

    def keys(self):
        return self._reader.get_variable_to_shape_map().keys()


class TFGraphConstants:
    """A frozen graph's ``Const`` nodes as TensorFlow decodes them: ``name in c``, ``c[name]``."""

    def __init__(self, tf, path: str):
        graph_def = tf.compat.v1.GraphDef()
        with open(path, "rb") as fh:
            graph_def.ParseFromString(fh.read())
        self._nodes = {n.name: n for n in graph_def.node if n.op == "Const"}
        self._tf = tf

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> np.ndarray:
        return self._tf.make_ndarray(self._nodes[name].attr["value"].tensor)

    def keys(self):
        return self._nodes.keys()


def find_graph(checkpoint) -> Tuple[Optional[str], Optional[str], str]:
    """``(kind, path, why)`` of the original graph next to the checkpoint, if any.

    ``kind`` is ``"meta"``, ``"frozen"`` or ``"savedmodel"``; ``path`` is the file or directory.
    """
    kind = getattr(checkpoint, "kind", "bundle")
    if kind == "graphdef":
        return "frozen", str(checkpoint.path), "frozen GraphDef"
    if kind == "savedmodel":
        return "savedmodel", str(checkpoint.savedmodel_dir), "SavedModel"
    meta = str(checkpoint.prefix) + ".meta"
    if os.path.isfile(meta):
        return "meta", meta, f"graph {os.path.basename(meta)} next to the checkpoint"
    return None, None, f"no graph next to the checkpoint ({os.path.basename(meta)} not found)"


def _to_channels_last(x: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` -> ``(1, D, H, W, C)``."""
    return np.ascontiguousarray(np.moveaxis(x, 0, -1)[None])


def _to_channels_first(y: np.ndarray) -> np.ndarray:
    """``(1, D, H, W, C)`` (or ``(1, D, H, W)``) -> ``(C, D, H, W)``."""
    y = np.asarray(y)
    if y.ndim == 4:
        y = y[..., None]
    return np.ascontiguousarray(np.moveaxis(y[0], -1, 0).astype(np.float32))


def _feed_value(graph, name: str, value):
    tensor = graph.get_tensor_by_name(name)
    return tensor, np.asarray(value, dtype=tensor.dtype.as_numpy_dtype)


def run_graph(tf, kind: str, path: str, prefix: Optional[str], x: np.ndarray, spec, tf_input: str, tf_output: str):
    """Run the original graph. Raises ``KeyError`` when a tensor is not in it."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        sess = v1.Session(graph=graph, config=_session_config(tf))
        try:
            if kind == "meta":
                saver = v1.train.import_meta_graph(path, clear_devices=True)
                saver.restore(sess, prefix)
            elif kind == "frozen":
                graph_def = v1.GraphDef()
                with open(path, "rb") as fh:
                    graph_def.ParseFromString(fh.read())
                tf.graph_util.import_graph_def(graph_def, name="")
            else:  # savedmodel
                tags = _savedmodel_tags(tf, path)
                v1.saved_model.loader.load(sess, tags, path)
            inp = graph.get_tensor_by_name(tf_input)
            out = graph.get_tensor_by_name(tf_output)
            feeds = {inp: _to_channels_last(x).astype(inp.dtype.as_numpy_dtype)}
            for name, value in dict(spec.feeds).items():
                tensor, val = _feed_value(graph, name, value)
                feeds[tensor] = val
            return sess.run(out, feeds)
        finally:
            sess.close()


def _savedmodel_tags(tf, path: str):
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())
    return list(sm.meta_graphs[0].meta_info_def.tags) if sm.meta_graphs else ["serve"]


def compute_reference(checkpoint, mapping, x: np.ndarray, *, tf_input: Optional[str] = None,
                      tf_output: Optional[str] = None, per_layer: bool = False) -> Dict[str, Any]:
    """Run TF on ``x`` (``C, D, H, W``). Returns ``{"output", "layers", "meta"}``, channels-first."""
    tf = import_tf()
    spec = mapping.verify
    tf_input = tf_input or spec.tf_input
    tf_output = tf_output or spec.tf_output
    prefix = str(checkpoint.prefix) if getattr(checkpoint, "prefix", None) else None
    kind, path, why = find_graph(checkpoint)
    meta: Dict[str, Any] = {"tf_version": tf.__version__, "tf_input": tf_input, "tf_output": tf_output,
                            "tf_device": "cpu"}
    timings: Dict[str, float] = {}
    output = None
    if kind is not None:
        start = time.perf_counter()
        try:
            output = run_graph(tf, kind, path, prefix, x, spec, tf_input, tf_output)
            meta.update(tf_side="original-graph", tf_side_reason=f"ran the {why}", tf_graph=path)
        except KeyError as exc:
            why = f"the {why} has no tensor {exc.args[0] if exc.args else ''}".strip()
        timings["tf_seconds"] = time.perf_counter() - start
    layers: Dict[str, np.ndarray] = {}
    if output is None or per_layer:
        if spec.tf_reference is None:
            if output is None:
                raise InputError(f"cannot run TF: {why}, and mapping {mapping.name!r} has no TF reference forward",
                                 path=checkpoint.path)
        else:
            variables = TFGraphConstants(tf, path) if kind == "frozen" else TFVariables(tf, prefix)
            start = time.perf_counter()
            ref_out, ref_layers = spec.tf_reference(variables, _to_channels_last(x))
            timings["tf_reference_seconds"] = time.perf_counter() - start
            if per_layer:
                layers = {k: _to_channels_first(v) for k, v in ref_layers.items()}
            if output is None:
                output = ref_out
                meta.update(tf_side="reference", tf_side_reason=f"{why}; ran the mapping's tf.nn reference forward")
            else:
                ref = _to_channels_first(ref_out)
                meta["reference_vs_graph_max_abs"] = float(np.abs(ref - _to_channels_first(output)).max())
    meta["timings"] = timings
    return {"output": _to_channels_first(output), "layers": layers, "meta": meta}


def main(argv=None) -> int:
    """``python -m tf2pt.verify.tfside REQUEST.json``: compute a reference, write it, exit 0; on a
    typed error print its one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        with open(argv[0]) as fh:
            request = json.load(fh)
        from ..read import open_checkpoint
        from ..registry import from_description
        from .reference import save_reference_file

        mapping = from_description(request["mapping"])
        x = np.load(request["input"], allow_pickle=False)
        with open_checkpoint(request["checkpoint"]) as ckpt:
            result = compute_reference(ckpt, mapping, x, tf_input=request.get("tf_input"),
                                       tf_output=request.get("tf_output"), per_layer=request.get("per_layer", False))
        save_reference_file(request["output"], x, result, request.get("meta", {}))
    except Tf2ptError as exc:
        print(f"tf2pt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

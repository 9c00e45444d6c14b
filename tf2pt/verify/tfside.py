"""The TensorFlow side of ``tf2pt verify``. Imports TensorFlow, never torch.

It runs in its own process (``python -m tf2pt.verify.tfside REQUEST.json``) when ``verify`` runs both
sides, or in the current one for ``verify --save-reference``. TF reads the weights itself
(``tf.train.load_checkpoint``), so the reference does not depend on tf2pt's reader.

Which TF model runs, strongest evidence first:

1. ``original-graph``: the graph the checkpoint came with -- ``PREFIX.meta`` next to the bundle,
   a frozen GraphDef ``.pb``, or a TF1 SavedModel -- fed the mapping's input tensor and fetched
   at its output tensor. Only the ops computing that output run, each checked to be pure
   computation first (:mod:`.graphcheck`); the graph's own restore op never runs: tf2pt
   assigns the variables the values TF's checkpoint reader gives.
2. ``reference``: the mapping's forward pass built from ``tf.nn`` ops and the checkpoint's
   variables, when there is no graph or its tensors cannot be found (the reason is reported).

Models with named inputs of any rank (:class:`TFModel`, run by :func:`run_model`): a TF2
SavedModel's signature (:class:`SignatureModel`) and a Keras file's model (:mod:`.kerasside`:
Keras itself, or the mapping's ``keras_model`` / ``tf_reference`` for a weights-only file).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import DependencyError, InputError, Tf2ptError
from .tfmodels import TFModel, _ReadOnlyArrays

REQUEST_KEYS = ("checkpoint", "mapping", "input", "output", "tf_input", "tf_output", "per_layer", "trust_graph")


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


class TFVariables(_ReadOnlyArrays):
    """Checkpoint variables as TensorFlow reads them (``tf.train.load_checkpoint``), a
    read-only mapping: ``v[name]``, ``name in v``, ``len(v)``, ``list(v)``, ``v.keys()``."""

    def __init__(self, tf, prefix: str):
        self._reader = tf.train.load_checkpoint(prefix)
        self._shapes = dict(self._reader.get_variable_to_shape_map())

    def _names(self):
        return self._shapes

    def _read(self, name: str) -> np.ndarray:
        return self._reader.get_tensor(name)


class TFGraphConstants(_ReadOnlyArrays):
    """A frozen graph's ``Const`` nodes as TensorFlow decodes them, a read-only mapping like
    :class:`TFVariables`."""

    def __init__(self, tf, path: str):
        graph_def = tf.compat.v1.GraphDef()
        with open(path, "rb") as fh:
            graph_def.ParseFromString(fh.read())
        self._nodes = {n.name: n for n in graph_def.node if n.op == "Const"}
        self._tf = tf

    def _names(self):
        return self._nodes

    def _read(self, name: str) -> np.ndarray:
        return self._tf.make_ndarray(self._nodes[name].attr["value"].tensor)


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


def load_graph(tf, kind: str, path: str):
    """``(graph_def, restore_op, slices)`` of the original graph, parsed (nothing runs):
    ``slices`` maps a partitioned variable's node to ``(full name, offsets, shape)``."""
    v1 = tf.compat.v1
    restore_op, meta_graph = "", None
    if kind == "frozen":
        graph_def = v1.GraphDef()
        with open(path, "rb") as fh:
            graph_def.ParseFromString(fh.read())
    elif kind == "meta":
        meta_graph = v1.MetaGraphDef()
        with open(path, "rb") as fh:
            meta_graph.ParseFromString(fh.read())
    else:  # a TF1 SavedModel: the meta graph served, its variables beside it
        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
            sm.ParseFromString(fh.read())
        graphs = list(sm.meta_graphs)
        if not graphs:
            raise InputError("the SavedModel holds no meta graph", path=path)
        meta_graph = next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])
    slices: Dict[str, Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = {}
    if meta_graph is not None:
        graph_def = meta_graph.graph_def
        restore_op = _node_of(meta_graph.saver_def.restore_op_name) if meta_graph.HasField("saver_def") else ""
        from tensorflow.core.framework import variable_pb2

        for raw in meta_graph.collection_def["variables"].bytes_list.value if "variables" in meta_graph.collection_def else ():
            var = variable_pb2.VariableDef.FromString(raw)
            info = var.save_slice_info_def
            if info.full_name:
                slices[_node_of(var.variable_name)] = (info.full_name, tuple(info.var_offset), tuple(info.var_shape))
    return graph_def, restore_op, slices


def _node_of(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


_VARIABLE_OPS = ("VarHandleOp", "VariableV2", "Variable")


class GraphSession:
    """The original graph, imported, checked and given its checkpoint values once; ``run(x)``
    then feeds ``x`` (``C, D, H, W``) and fetches the output, as often as needed (one volume, or
    every window of a windowed verify). Raises ``KeyError`` (:class:`MissingTensor`) when a
    tensor is not in the graph. ``layer_tensors`` (``{layer: tensor name}``, a mapping's
    ``VerifySpec.layer_tensors``): :meth:`run_layers` also fetches those (a layer whose tensor
    the graph lacks is left out).

    Nothing of the graph runs but the ops computing ``tf_output`` from the feeds, each checked
    first (:mod:`.graphcheck`; ``trust_graph`` skips that). Its SaverDef restore op never runs:
    the variables the output reads get their values from TensorFlow's own checkpoint reader,
    assigned by ops tf2pt adds."""

    def __init__(self, tf, kind: str, path: str, prefix: Optional[str], spec, tf_input: str, tf_output,
                 trust_graph: bool = False, notes: Optional[list] = None,
                 layer_tensors: Optional[Dict[str, str]] = None):
        """``tf_output``: a tensor name, or a list of them (:meth:`fetch` returns each)."""
        from . import graphcheck

        v1 = tf.compat.v1
        outputs = [tf_output] if isinstance(tf_output, str) else list(tf_output)
        graph_def, restore_op, slices = load_graph(tf, kind, path)
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")  # builds the graph; runs nothing
            self._inp = _tensor(graph, graph_def, tf_input)
            self._outs = [_tensor(graph, graph_def, o) for o in outputs]
            self._out = self._outs[0]
            self._feeds = {}
            for name, value in dict(spec.feeds).items():
                tensor, val = _feed_value(graph, name, value)
                self._feeds[tensor] = val
            fed = [t.name for t in [self._inp, *self._feeds]]
            self._layers: Dict[str, Any] = {}
            for layer, name in dict(layer_tensors or {}).items():
                try:
                    self._layers[layer] = graph.get_tensor_by_name(name)
                except (KeyError, ValueError):
                    continue
            wanted = outputs + [t.name for t in self._layers.values()]
            ran = graphcheck.closure(graph_def, wanted, fed)
            if not trust_graph:
                graphcheck.check_saver(graph_def, restore_op, path)
                graphcheck.check_run(graph_def, wanted, fed, path)
            if notes is not None:
                notes.extend(graphcheck.io_elsewhere(graph_def, ran))
            assigns, values = _restore_ops(tf, graph, graph_def, ran, slices, prefix, path)
            self._sess = v1.Session(graph=graph, config=_session_config(tf))
            try:
                if assigns:
                    self._sess.run(assigns, values)
            except BaseException:
                self.close()
                raise

    def run(self, x: np.ndarray) -> np.ndarray:
        """TF's output for ``x`` (``C, D, H, W``), channels-last with its batch axis, as fetched."""
        feeds = {self._inp: _to_channels_last(x).astype(self._inp.dtype.as_numpy_dtype), **self._feeds}
        return self._sess.run(self._out, feeds)

    def run_layers(self, x: np.ndarray):
        """``(output, {layer: its tensor})`` for ``x``, in one run, as fetched."""
        feeds = {self._inp: _to_channels_last(x).astype(self._inp.dtype.as_numpy_dtype), **self._feeds}
        return self._sess.run([self._out, self._layers], feeds)

    def fetch(self, value: np.ndarray) -> list:
        """Every output for ``value`` fed as it is (TF's layout, batch axis first), as fetched."""
        feeds = {self._inp: np.asarray(value).astype(self._inp.dtype.as_numpy_dtype), **self._feeds}
        return self._sess.run(self._outs, feeds)

    def fetch_layers(self, value: np.ndarray) -> Dict[str, np.ndarray]:
        """The layer tensors for ``value`` fed as it is (TF's layout, batch axis first), as fetched."""
        feeds = {self._inp: np.asarray(value).astype(self._inp.dtype.as_numpy_dtype), **self._feeds}
        return self._sess.run(self._layers, feeds) if self._layers else {}

    @property
    def input_spec(self):
        """``(numpy dtype, shape with None for unknown sizes, or None for an unknown rank)``."""
        shape = self._inp.shape
        return self._inp.dtype.as_numpy_dtype, None if shape.rank is None else tuple(shape.as_list())

    def close(self) -> None:
        self._sess.close()


class MissingTensor(KeyError):
    """A tensor the graph lacks; ``close`` are the graph's nearest tensor names."""

    def __init__(self, name: str, close):
        super().__init__(name)
        self.name, self.close = name, list(close)


def _tensor(graph, graph_def, name: str):
    try:
        return graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        import difflib

        names = [n.name + ":0" for n in graph_def.node]
        raise MissingTensor(name, difflib.get_close_matches(name, names, n=5, cutoff=0.3)) from None


def _restore_ops(tf, graph, graph_def, ran, slices, prefix, path):
    """Assignments (and their feeds) giving every variable the output reads its checkpoint
    value, read by ``tf.train.load_checkpoint`` (TensorFlow's reader, not tf2pt's: the reference
    must not depend on the reader under test)."""
    variables = [n for n in graph_def.node if n.name in ran and n.op in _VARIABLE_OPS]
    if not variables:
        return [], {}
    if prefix is None:
        raise InputError("the graph reads variables, but no checkpoint holds them", path=path)
    reader = tf.train.load_checkpoint(prefix)
    v1 = tf.compat.v1
    assigns, values, missing = [], {}, []
    for node in variables:
        key, offset, shape = slices.get(node.name, (node.name, None, None))
        if not reader.has_tensor(key):
            missing.append(key)
            continue
        value = reader.get_tensor(key)
        if offset is not None:
            value = value[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
        target = graph.get_tensor_by_name(node.name + ":0")
        dtype = tf.as_dtype(node.attr["dtype"].type)
        feed = v1.placeholder(dtype, name=f"tf2pt_restore/{len(assigns)}")
        if node.op == "VarHandleOp":
            assigns.append(tf.raw_ops.AssignVariableOp(resource=target, value=feed))
        else:
            assigns.append(v1.assign(target, feed))
        values[feed] = value
    if missing:
        raise InputError(f"the graph reads {len(missing)} variable(s) the checkpoint lacks "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})", path=prefix,
                         hint="the .meta and the checkpoint do not belong together")
    return assigns, values



# ------------------------------------------------------------------------------------------------
# TF2 SavedModels: tf.saved_model.load and a signature
# ------------------------------------------------------------------------------------------------

#: the signature keys TF adds that are not a model's
_NOT_SIGNATURES = ("__saved_model_init_op",)


def read_meta_graph(tf, path: str):
    """The SavedModel's first meta graph (TF2 SavedModels have one), parsed; nothing runs."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())
    if not sm.meta_graphs:
        raise InputError("the SavedModel holds no meta graph", path=path)
    return next((g for g in sm.meta_graphs if "serve" in g.meta_info_def.tags), sm.meta_graphs[0])


def _closest(name: str, names) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.3)
    return f"closest: {', '.join(close)}" if close else f"it has: {', '.join(sorted(names)) or 'none'}"


def signature_inputs(tf, meta_graph, signature: str, path: str):
    """``{input key: (numpy dtype, shape with None for unknown sizes)}`` of ``signature``, from
    the proto; a signature the SavedModel lacks is an error naming the ones it has."""
    sigs = {k: v for k, v in meta_graph.signature_def.items() if k not in _NOT_SIGNATURES}
    if signature not in sigs:
        raise InputError(f"--signature {signature!r}: the SavedModel has no such signature", path=path,
                         hint=f"available: {', '.join(sorted(sigs)) or 'none'}")
    out = {}
    for key, info in sorted(sigs[signature].inputs.items()):
        shape = None if info.tensor_shape.unknown_rank else tuple(
            None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        out[key] = (tf.as_dtype(info.dtype).as_numpy_dtype, shape)
    return out, sorted(sigs[signature].outputs)


def fill_shape(shape, sizes, name: str):
    """``shape`` with its ``None`` sizes filled from ``sizes``: one size per ``None``, or one fewer
    when the first (batch) size is ``None`` (the batch is then 1)."""
    unknown = [i for i, d in enumerate(shape) if d is None]
    sizes = list(sizes or ())
    if len(sizes) == len(unknown) - 1 and unknown and unknown[0] == 0:
        sizes = [1] + sizes
    if len(sizes) != len(unknown):
        if not unknown:
            return tuple(shape)
        raise InputError(f"input {name!r} has shape {_shape_text(shape)}: its {len(unknown)} unknown size(s) "
                         f"need --synthetic with {len(unknown)} (or {len(unknown) - 1}, the batch being 1) sizes, "
                         f"got {len(sizes)}" if unknown[0] == 0 else
                         f"input {name!r} has shape {_shape_text(shape)}: give --synthetic with {len(unknown)} sizes")
    filled, it = list(shape), iter(sizes)
    for i in unknown:
        filled[i] = int(next(it))
    return tuple(filled)


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def synthetic_input(shape, dtype, seed: int, high: Optional[int] = 2) -> np.ndarray:
    """Seeded values: standard normal for floats, integers in ``[0, high)`` (token ids; ``None``:
    2) for ints, booleans for bools."""
    rng = np.random.default_rng(seed)
    high = 2 if high is None else int(high)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, high, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise InputError(f"cannot make a synthetic input of dtype {dtype}", hint="give --input FILE")


def read_inputs(path: str, wanted, what: str = "the signature") -> Dict[str, np.ndarray]:
    """``--input FILE`` for a model with named inputs (``what``: "the signature", "the Keras
    model"): ``.npy`` (its one input) or ``.npz`` (one array per input name), read with tf2pt's
    hostile-safe loaders, or an image; shapes and dtypes checked against ``wanted``."""
    from .arrays import check_npz, load_npy

    lower = path.lower()
    if lower.endswith(".npy"):
        if len(wanted) != 1:
            raise InputError(f"{what} takes {len(wanted)} inputs ({', '.join(wanted)}); a .npy holds one",
                             path=path, hint="give an .npz with one array per input name")
        arrays = {next(iter(wanted)): load_npy(path, "input")}
    elif lower.endswith(".npz"):
        check_npz(path, "input")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        missing, extra = sorted(set(wanted) - set(arrays)), sorted(set(arrays) - set(wanted))
        if missing or extra:
            raise InputError(f"the archive's arrays ({', '.join(sorted(arrays))}) are not the signature's inputs "
                             f"({', '.join(sorted(wanted))})", path=path, hint="name each array after its input")
    elif lower.endswith((".png", ".jpg", ".jpeg")):
        arrays = {next(iter(wanted)): read_image(path, wanted, what)} if len(wanted) == 1 else None
        if arrays is None:
            raise InputError(f"{what} takes {len(wanted)} inputs; an image is one", path=path,
                             hint="give an .npz with one array per input name")
    else:
        raise InputError(f"--input takes a .npy, an .npz or a PNG/JPEG image for {what}", path=path)
    out = {}
    for name, value in arrays.items():
        dtype, shape = wanted[name]
        if value.dtype.kind not in "fiub":
            raise InputError(f"input {name!r} has dtype {value.dtype}, expected numbers", path=path)
        if shape is not None and value.ndim == len(shape) - 1:
            value = value[None]  # the batch axis, left out
        if shape is not None and (value.ndim != len(shape) or any(
                d is not None and d != s for d, s in zip(shape, value.shape))):
            raise InputError(f"input {name!r} has shape {list(value.shape)}; {what} takes {_shape_text(shape)}",
                             path=path)
        out[name] = np.ascontiguousarray(value.astype(dtype))
    return out


#: the most pixels an --input image may have (Pillow's own bomb check is a warning below 2x its limit)
MAX_IMAGE_PIXELS = 1 << 26


def read_image(path: str, wanted, what: str = "the signature") -> np.ndarray:
    """A PNG/JPEG through Pillow as ``(H, W, C)``, C from the signature's last size (1: grayscale,
    3: RGB, 4: RGBA), pixel values as they are (0-255): preprocessing belongs to the model."""
    try:
        from PIL import Image
    except ImportError:
        raise DependencyError("pillow", "reading --input images") from None
    (_, shape), = wanted.values()
    channels = shape[-1] if shape else None
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise InputError(f"an image gives 1, 3 or 4 channels; {what}'s input is {_shape_text(shape)}", path=path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InputError(f"the image claims {img.width}x{img.height} pixels, more than {MAX_IMAGE_PIXELS}",
                                 path=path)
            data = np.asarray(img.convert(mode))
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types for bad files
        raise InputError(f"cannot read the image: {type(exc).__name__}: {exc}", path=path) from None
    return data[..., None] if data.ndim == 2 else data


class GraphModel(TFModel):
    """A TF1 graph (a ``.meta`` next to the checkpoint, a frozen ``.pb``, a TF1 SavedModel) as a
    model with one named input, any rank: a :class:`GraphSession` (checked, given its checkpoint
    values) feeding ``tf_input`` (and the mapping's ``feeds``) and fetching ``tf_outputs``,
    arrays in TF's layout. A tensor the graph lacks raises :class:`MissingTensor`."""

    def __init__(self, tf, kind: str, path: str, prefix: Optional[str], spec, tf_input: str, tf_outputs,
                 *, trust_graph: bool = False, notes: Optional[list] = None, why: str = "graph",
                 per_layer: bool = False):
        super().__init__()
        self.path = path
        self.what, self.reason = f"the {why}", f"ran the {why}"
        self.outputs = list(tf_outputs)
        layer_tensors = getattr(spec, "layer_tensors", None) if per_layer else None
        self._session = GraphSession(tf, kind, path, prefix, spec, tf_input, self.outputs, trust_graph, notes,
                                     layer_tensors=layer_tensors)
        self.inputs = {tf_input: self._session.input_spec}
        if kind == "frozen":
            self.variables = TFGraphConstants(tf, path)

    def __call__(self, inputs):
        (x,) = inputs.values()
        return dict(zip(self.outputs, (np.asarray(r) for r in self._session.fetch(x))))

    def layer_outputs(self, inputs, names) -> Dict[str, np.ndarray]:
        """The graph's own tensors for the layers (``VerifySpec.layer_tensors``) it has."""
        (x,) = inputs.values()
        got = self._session.fetch_layers(x)
        return {k: np.asarray(got[k]) for k in names if k in got}

    def close(self) -> None:
        self._session.close()


class SignatureModel(TFModel):
    """A TF2 SavedModel's ``signature``: its inputs and outputs from the proto, the SavedModel
    checked first (:func:`.graphcheck.check_savedmodel`), then loaded with
    ``tf.saved_model.load`` by :meth:`load`."""

    def __init__(self, tf, path: str, signature: str, *, trust_graph: bool = False, notes: Optional[list] = None):
        super().__init__()
        self.tf, self.path, self.signature = tf, path, signature
        self.what = f"signature {signature!r}"
        self.reason = f"ran the TF2 SavedModel's signature {signature!r} through tf.saved_model.load"
        meta_graph = read_meta_graph(tf, path)
        self.inputs, self.outputs = signature_inputs(tf, meta_graph, signature, path)
        self._meta_graph, self._trust, self._notes, self._fn = meta_graph, trust_graph, notes, None

    def check(self) -> None:
        """The SavedModel's functions checked to be pure computation (``--trust-graph`` skips it)."""
        from . import graphcheck

        saver = [] if self._trust else graphcheck.check_savedmodel(self._meta_graph, self.path)
        if self._notes is not None and saver:
            self._notes.append(f"TF's own save/restore functions ({', '.join(saver)}) were checked to hold only a "
                               "Saver's ops; tf.saved_model.load does not run them")

    def load(self) -> None:
        if self._fn is None:
            with self.tf.device("/cpu:0"):
                self._fn = self.tf.saved_model.load(self.path).signatures[self.signature]

    def __call__(self, inputs):
        tf = self.tf
        with tf.device("/cpu:0"):
            result = self._fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: np.asarray(v.numpy()) for k, v in result.items()}


def make_inputs(model: TFModel, *, synthetic=None, input_file: Optional[str] = None, seed: int = 0,
                int_high: Optional[int] = None) -> Dict[str, np.ndarray]:
    """The inputs for ``model``: read from ``input_file`` (checked against the model's specs), or
    seeded synthetic values of the specs' shapes, ``None`` sizes from ``synthetic``."""
    if input_file:
        return read_inputs(input_file, model.inputs, model.what)
    inputs = {}
    for i, (name, (dtype, shape)) in enumerate(model.inputs.items()):
        if shape is None:
            raise InputError(f"input {name!r} of {model.what} has an unknown rank", path=model.path,
                             hint="give --input FILE")
        inputs[name] = synthetic_input(fill_shape(shape, synthetic, name), dtype, seed + i, int_high)
    return inputs


def run_model(model: TFModel, *, synthetic=None, input_file: Optional[str] = None, outputs=None,
              given_outputs: bool = False, seed: int = 0, timings: Optional[Dict[str, float]] = None,
              int_high: Optional[int] = None):
    """Run ``model`` on inputs made from its own input specs (or read from ``input_file``).
    Returns ``(inputs, outputs)``, dicts of arrays in TF's layout (batch axis first), the outputs
    being ``outputs`` (each checked to be the model's: a name it lacks is an error naming the
    closest) or every output of the model. ``int_high``: the mapping's bound for synthetic
    integer inputs, else the model's own, else 2."""
    timings = {} if timings is None else timings
    if outputs:
        unknown = [o for o in outputs if o not in model.outputs]
        if unknown:
            option = "--tf-output" if given_outputs else "the mapping's output"
            raise InputError(f"{option} {unknown[0]!r}: {model.what} has no such output", path=model.path,
                             hint=_closest(unknown[0], model.outputs))
    check = getattr(model, "check", None)
    if check is not None:
        check()
    inputs = make_inputs(model, synthetic=synthetic, input_file=input_file, seed=seed,
                         int_high=int_high if int_high is not None else model.int_high)
    start = time.perf_counter()
    model.load()
    timings["tf_graph_load_seconds"] = timings.get("tf_graph_load_seconds", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    result = model(inputs)
    timings["tf_forward_seconds"] = time.perf_counter() - start
    return inputs, {k: result[k] for k in (outputs or model.outputs)}


def run_signature(tf, path: str, signature: str, *, synthetic=None, input_file: Optional[str] = None,
                  outputs=None, given_outputs: bool = False, trust_graph: bool = False, seed: int = 0,
                  timings: Optional[Dict[str, float]] = None, notes: Optional[list] = None, int_high: int = 2):
    """Run a TF2 SavedModel's ``signature`` (:class:`SignatureModel`, :func:`run_model`)."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    model = SignatureModel(tf, path, signature, trust_graph=trust_graph, notes=notes)
    timings["tf_graph_load_seconds"] = time.perf_counter() - start
    return run_model(model, synthetic=synthetic, input_file=input_file, outputs=outputs, given_outputs=given_outputs,
                     seed=seed, timings=timings, int_high=int_high)


def _tf_request(mapping, tf_input: Optional[str], tf_output: Optional[str]):
    """``(tf, spec, given, tf_input, tf_output, meta)``: TensorFlow imported (timed in
    ``meta["timings"]``), the tensor names (the user's, else the mapping's) and which of
    ``--tf-input``/``--tf-output`` the user gave."""
    start = time.perf_counter()
    tf = import_tf()
    timings: Dict[str, float] = {"tf_import_seconds": time.perf_counter() - start}
    spec = mapping.verify
    given = {n for n, v in (("--tf-input", tf_input), ("--tf-output", tf_output)) if v}
    tf_input, tf_output = tf_input or spec.tf_input, tf_output or spec.tf_output
    meta: Dict[str, Any] = {"tf_version": tf.__version__, "tf_input": tf_input, "tf_output": tf_output,
                            "tf_device": "cpu", "tf_notes": [], "timings": timings}
    return tf, spec, given, tf_input, tf_output, meta


def _reference_variables(tf, kind: Optional[str], path: Optional[str], checkpoint):
    """What the mapping's ``tf_reference`` reads: a frozen graph's constants, else the checkpoint's variables."""
    return TFGraphConstants(tf, path) if kind == "frozen" else TFVariables(tf, str(checkpoint.prefix))


def _no_tf_side(why: str, mapping, checkpoint) -> InputError:
    return InputError(f"cannot run TF: {why}, and mapping {mapping.name!r} has no TF reference forward",
                      path=checkpoint.path)


def open_graph(tf, checkpoint, spec, tf_input: str, tf_output: str, given, trust_graph: bool,
               timings: Dict[str, float], meta: Dict[str, Any], layer_tensors: Optional[Dict[str, str]] = None):
    """``(session, kind, path, why)``: a :class:`GraphSession` on the checkpoint's original
    graph (``meta`` then says so), or ``None`` with ``why`` there is none. A tensor the user named
    (``given`` holds ``--tf-input``/``--tf-output`` when they did) that the graph lacks is an
    error naming the closest; a mapping default that it lacks is a reason to use the reference."""
    prefix = str(checkpoint.prefix) if getattr(checkpoint, "prefix", None) else None
    kind, path, why = find_graph(checkpoint)
    if kind is None:
        return None, kind, path, why
    start = time.perf_counter()
    try:
        session = GraphSession(tf, kind, path, prefix, spec, tf_input, tf_output, trust_graph, meta["tf_notes"],
                               layer_tensors)
    except MissingTensor as exc:
        option = "--tf-input" if exc.name == tf_input else "--tf-output"
        if option in given:  # the user named it: an error, never a silent fallback
            close = f"closest: {', '.join(exc.close)}" if exc.close else "no tensor of a similar name"
            raise InputError(f"{option} {exc.name!r}: the {why} has no such tensor", path=path,
                             hint=close) from None
        return None, kind, path, f"the {why} has no tensor {exc.name}"
    timings["tf_graph_load_seconds"] = time.perf_counter() - start
    meta.update(tf_side="original-graph", tf_side_reason=f"ran the {why}", tf_graph=path)
    return session, kind, path, why


def window_forward(checkpoint, mapping, *, tf_input: Optional[str] = None, tf_output: Optional[str] = None,
                   trust_graph: bool = False):
    """``(forward, close, meta)`` for a windowed verify: ``forward(x)`` runs TF on one window
    ``(C, D, H, W)`` and returns its output channels-first -- the original graph, loaded once,
    or the mapping's reference forward where there is none (``meta`` says which and why)."""
    tf, spec, given, tf_input, tf_output, meta = _tf_request(mapping, tf_input, tf_output)
    session, kind, path, why = open_graph(tf, checkpoint, spec, tf_input, tf_output, given, trust_graph, meta["timings"], meta)
    if session is not None:
        return (lambda x: _to_channels_first(session.run(x))), session.close, meta
    if spec.tf_reference is None:
        raise _no_tf_side(why, mapping, checkpoint)
    variables = _reference_variables(tf, kind, path, checkpoint)
    meta.update(tf_side="reference", tf_side_reason=f"{why}; ran the mapping's tf.nn reference forward")
    return (lambda x: _to_channels_first(spec.tf_reference(variables, _to_channels_last(x))[0])), (lambda: None), meta


def compute_reference(checkpoint, mapping, x: np.ndarray, *, tf_input: Optional[str] = None,
                      tf_output: Optional[str] = None, per_layer: bool = False,
                      trust_graph: bool = False) -> Dict[str, Any]:
    """Run TF on ``x`` (``C, D, H, W``). Returns ``{"output", "layers", "meta"}``, channels-first;
    ``meta["timings"]`` has each phase (TF's import, loading the graph and its weights, the
    forward pass, the reference forward)."""
    tf, spec, given, tf_input, tf_output, meta = _tf_request(mapping, tf_input, tf_output)
    timings = meta["timings"]
    layer_tensors = dict(getattr(spec, "layer_tensors", None) or {}) if per_layer else {}
    session, kind, path, why = open_graph(tf, checkpoint, spec, tf_input, tf_output, given, trust_graph, timings, meta,
                                          layer_tensors)
    output = None
    layers: Dict[str, np.ndarray] = {}
    if session is not None:
        try:
            start = time.perf_counter()
            if layer_tensors:  # the layers' outputs from the original graph itself, in the same run
                output, fetched = session.run_layers(x)
                layers = {k: _to_channels_first(v) for k, v in fetched.items()}
                meta["layers_from"] = "original-graph"
            else:
                output = session.run(x)
            timings["tf_forward_seconds"] = time.perf_counter() - start
        finally:
            session.close()
    if output is None or (per_layer and not layers):
        if spec.tf_reference is None:
            if output is None:
                raise _no_tf_side(why, mapping, checkpoint)
        else:
            variables = _reference_variables(tf, kind, path, checkpoint)
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
    return {"output": _to_channels_first(output), "layers": layers, "meta": meta}


def open_model(tf, checkpoint, spec, *, signature: Optional[str] = None, trust_graph: bool = False,
               notes: Optional[list] = None, tf_input: Optional[str] = None, tf_outputs=None,
               per_layer: bool = False) -> TFModel:
    """The :class:`TFModel` for ``checkpoint``: a Keras file's model (:func:`.kerasside.open_keras`),
    a TF2 SavedModel's signature (``signature``, else the mapping's, else ``serving_default``), or
    a TF1 graph (:class:`GraphModel`: ``tf_input`` / ``tf_outputs``, else the mapping's; a tensor
    the graph lacks is an error naming the closest)."""
    if getattr(checkpoint, "kind", "").startswith("keras"):
        from .kerasside import open_keras

        return open_keras(tf, checkpoint, spec, trust_graph=trust_graph, notes=notes)
    kind, path, why = find_graph(checkpoint)
    if kind == "savedmodel":
        from .savedmodel import savedmodel_version

        if savedmodel_version(path) == "tf2":
            name = signature or getattr(spec, "signature", None) or "serving_default"
            return SignatureModel(tf, path, name, trust_graph=trust_graph, notes=notes)
    if kind is None:  # a TF2 checkpoint without a graph: the mapping's keras_model or tf_reference
        from .kerasside import open_weights

        prefix = str(checkpoint.prefix)
        return open_weights(tf, spec, prefix, TFVariables(tf, prefix), why=why,
                            how="as tf.train.load_checkpoint reads them")
    given_input = tf_input is not None
    tf_input = tf_input or spec.tf_input
    outputs = list(tf_outputs or ()) or list(getattr(spec, "outputs", ()) or ()) or [spec.tf_output]
    try:
        prefix = str(checkpoint.prefix) if getattr(checkpoint, "prefix", None) else None
        return GraphModel(tf, kind, path, prefix, spec, tf_input, outputs, trust_graph=trust_graph, notes=notes,
                          why=why, per_layer=per_layer)
    except MissingTensor as exc:
        if exc.name == tf_input:
            option = "--tf-input" if given_input else "the mapping's tf_input"
        else:
            option = "--tf-output" if tf_outputs else "the mapping's output"
        close = f"closest: {', '.join(exc.close)}" if exc.close else "no tensor of a similar name"
        raise InputError(f"{option} {exc.name!r}: the {why} has no such tensor", path=path, hint=close) from None


def compute_signature_reference(checkpoint, mapping, *, signature: Optional[str] = None, synthetic=None,
                                input_file: Optional[str] = None, tf_outputs=None, trust_graph: bool = False,
                                seed: int = 0, tf_input: Optional[str] = None, per_layer: bool = False) -> Dict[str, Any]:
    """The TF side for a model with named inputs (:func:`open_model`: a TF2 SavedModel's
    signature, a Keras file's model, a TF1 graph whose input is not a 5-D volume) run by TensorFlow. Returns ``{"inputs", "outputs", "meta"}``,
    the arrays in TF's layout; ``meta["signature"]`` has the input and output names in order
    (and the signature's name, for a SavedModel). Where the mapping has a ``tf_reference`` as
    well, ``meta["reference_vs_graph_max_abs"]`` says how far it is from the model.
    ``per_layer``: ``"layers"`` has the outputs of the mapping's ``VerifySpec.layers``, in TF's
    layout: the Keras model's own layers for a Keras file, else the ``tf_reference``'s."""
    start = time.perf_counter()
    tf = import_tf()
    timings: Dict[str, float] = {"tf_import_seconds": time.perf_counter() - start}
    spec = mapping.verify
    given = bool(tf_outputs)
    outputs = list(tf_outputs or getattr(spec, "outputs", ()) or ())
    meta: Dict[str, Any] = {"tf_version": tf.__version__, "tf_device": "cpu", "tf_notes": []}
    start = time.perf_counter()
    model = open_model(tf, checkpoint, spec, signature=signature, trust_graph=trust_graph, notes=meta["tf_notes"],
                       tf_input=tf_input, tf_outputs=tf_outputs, per_layer=per_layer)
    timings["tf_graph_load_seconds"] = time.perf_counter() - start
    layers: Dict[str, np.ndarray] = {}
    try:
        inputs, outs = run_model(model, synthetic=synthetic, input_file=input_file, outputs=outputs or None,
                                 given_outputs=given, seed=seed, timings=timings,
                                 int_high=getattr(spec, "int_high", None))
        if per_layer and hasattr(model, "layer_outputs"):
            start = time.perf_counter()
            layers = model.layer_outputs(inputs, list(spec.layers))
            timings["tf_layers_seconds"] = time.perf_counter() - start
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()
    order = list(getattr(spec, "inputs", ()) or ()) or list(inputs)
    if sorted(order) != sorted(inputs):
        raise InputError(f"the mapping's inputs ({', '.join(order)}) are not {model.what}'s "
                         f"({', '.join(inputs)})", path=model.path, hint="fix VerifySpec.inputs")
    name = getattr(model, "signature", None)
    meta.update(tf_side=model.side, tf_side_reason=model.reason, tf_graph=model.path, tf_input=order,
                tf_output=list(outs), signature={**({"name": name} if name else {}), "inputs": order,
                                                 "outputs": list(outs)})
    if spec.tf_reference is not None and model.side != "reference":
        start = time.perf_counter()
        variables = model.variables if model.variables is not None else TFVariables(tf, str(checkpoint.prefix))
        ref_out, ref_layers = spec.tf_reference(variables, *[inputs[k] for k in order])
        timings["tf_reference_seconds"] = time.perf_counter() - start
        if per_layer and not layers:
            layers = {k: np.asarray(v) for k, v in (ref_layers or {}).items() if k in spec.layers}
        ref_outs = ref_out if isinstance(ref_out, (tuple, list)) else [ref_out]
        diffs = [float(np.abs(np.asarray(r, np.float64) - np.asarray(o, np.float64)).max())
                 for r, o in zip(ref_outs, outs.values()) if np.shape(r) == np.shape(o)]
        if diffs:
            meta["reference_vs_graph_max_abs"] = max(diffs)
    if per_layer and not layers:
        raise InputError(f"--per-layer: neither {model.what} nor the mapping's tf_reference gives the layers "
                         f"{', '.join(spec.layers)}", path=model.path,
                         hint="a Keras model's layer names, VerifySpec.layer_tensors for a graph, or a tf_reference "
                              "returning {layer: output}")
    meta["timings"] = timings
    return {"inputs": {k: inputs[k] for k in order}, "outputs": outs, "layers": layers, "meta": meta}


def main(argv=None) -> int:
    """``python -m tf2pt.verify.tfside REQUEST.json``: compute a reference, write it, exit 0; on a
    typed error print its one line and exit 2; on any other error (TensorFlow's) write its type,
    message and traceback to the request's ``error`` file and exit 3."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the TF side: Keras 3 on TF, whatever the caller's default
    request: Dict[str, Any] = {}
    try:
        with open(argv[0]) as fh:
            request = json.load(fh)
        from ..read import open_checkpoint
        from ..registry import from_description
        from .reference import save_reference_file

        mapping = from_description(request["mapping"])
        from .arrays import load_npy

        if request.get("windowed"):
            from .windowed import serve_windows

            x = load_npy(request["input"], "input")
            # the protocol keeps stdout to itself: whatever TF or Keras print goes to stderr
            protocol = os.fdopen(os.dup(1), "w")
            os.dup2(2, 1)
            with open_checkpoint(request["checkpoint"]) as ckpt:
                forward, close, meta = window_forward(ckpt, mapping, tf_input=request.get("tf_input"),
                                                      tf_output=request.get("tf_output"),
                                                      trust_graph=request.get("trust_graph", False))
                try:
                    serve_windows(forward, x, meta, stdout=protocol)
                finally:
                    close()
            return 0
        if request.get("signature_mode"):
            with open_checkpoint(request["checkpoint"]) as ckpt:
                result = compute_signature_reference(
                    ckpt, mapping, signature=request.get("signature"), synthetic=request.get("synthetic"),
                    input_file=request.get("input_file"), tf_outputs=request.get("tf_outputs"),
                    trust_graph=request.get("trust_graph", False), tf_input=request.get("tf_input"),
                    per_layer=request.get("per_layer", False))
            save_reference_file(request["output"], None, result, request.get("meta", {}))
            return 0
        x = load_npy(request["input"], "input")
        with open_checkpoint(request["checkpoint"]) as ckpt:
            result = compute_reference(ckpt, mapping, x, tf_input=request.get("tf_input"),
                                       tf_output=request.get("tf_output"), per_layer=request.get("per_layer", False),
                                       trust_graph=request.get("trust_graph", False))
        save_reference_file(request["output"], x, result, request.get("meta", {}))
    except Tf2ptError as exc:
        print(f"tf2pt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # TensorFlow's own error: sent back whole, with its traceback
        import traceback

        error_path = request.get("error")
        if error_path:
            with open(error_path, "w") as fh:
                json.dump({"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}, fh)
        else:
            traceback.print_exc()
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

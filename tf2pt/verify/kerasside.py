"""The TF side of ``tf2pt verify`` for Keras files: the model run by Keras itself, in verify's TF
child (:mod:`.tfside`). Imports Keras (with the TensorFlow backend), never torch.

Which model runs, strongest evidence first (the report's ``tf_side``):

1. ``original-graph``: a ``.keras`` or full-model ``.h5`` holds its architecture; Keras loads it
   (``compile=False``) and runs it. Which Keras, by the version the file says wrote it:

   ==================================  =====================================================
   file                                loaded by
   ==================================  =====================================================
   ``.keras`` from Keras 3             ``keras.saving.load_model(path, safe_mode=True)``
   ``.h5`` from Keras 3                ``keras.saving.load_model`` (its legacy HDF5 loader)
   ``.keras`` / ``.h5`` from Keras 2   ``tf_keras.models.load_model(path, safe_mode=True)``
                                       when tf_keras is installed, else Keras 3 (the failure
                                       then says to install tf_keras)
   ==================================  =====================================================

   Measured with Keras 3.15 and tf_keras 2.21: Keras 3 cannot load the Keras 2 files of
   ``tf2pt.testing.keras_fixtures`` (a nested Sequential in an ``.h5`` raises ``IndexError``,
   an LSTM's ``time_major`` is an unknown argument, a ``.keras`` names tf_keras' classes), and
   tf_keras cannot load Keras 3's (``batch_shape``).
2. ``keras-model``: a weights-only file (``save_weights``: ``.weights.h5``, a Keras 2 ``.h5``
   without ``model_config``, a sharded ``.weights.json``) has no architecture: the mapping's
   ``VerifySpec.keras_model()`` builds it in code and Keras' ``load_weights`` loads the file.
3. ``reference``: else the mapping's ``tf_reference``, on the inputs ``VerifySpec.input_specs``
   declares and the file's weights as h5py reads them (:class:`KerasFileVariables`).

Nothing of the file runs before tf2pt's reader has read it (the child opens it with
:func:`tf2pt.read.open_checkpoint`, as the parent did before starting the child): a config with a
``Lambda`` layer or a serialized Python function is refused there, because Keras' ``.h5``
loader runs such code even with ``safe_mode`` (CVE-2025-9905). tf_keras also imports any module
a ``.keras`` config names; a config naming a module outside Keras is refused before tf_keras
sees it (Keras 3 imports only Keras' own packages).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError, MappingError, UnsupportedError
from .tfmodels import TFModel, _ReadOnlyArrays

#: module prefixes a Keras config may name when tf_keras loads it (it imports them)
KERAS_MODULES = ("keras", "tf_keras", "builtins")


def _major(version: Optional[str]) -> Optional[int]:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def _import_keras(which: str):
    """Keras 3 (``"keras"``, always with the TensorFlow backend: this is the TF side) or tf_keras."""
    if which == "tf_keras":
        import tf_keras

        return tf_keras
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    return keras


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_modules(config: Any, path: str) -> None:
    """Refuse a config naming a module outside Keras (tf_keras imports what a ``.keras`` names)."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and module.split(".")[0] not in KERAS_MODULES:
                what = node.get("class_name") or node.get("registered_name") or "an object"
                raise UnsupportedError(
                    f"the model's config names module {module!r} (for {what}): tf_keras imports the modules a "
                    "Keras config names when it loads the model, and tf2pt lets it import only Keras' own",
                    path=path, hint="save the model with Keras' built-in layers, or verify its weights "
                                    "through VerifySpec.keras_model")
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def _np_dtype(dtype) -> np.dtype:
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def _shape(shape) -> Optional[tuple]:
    if shape is None:
        return None
    try:
        dims = list(shape)
    except (TypeError, ValueError):  # a TensorShape of unknown rank
        return None
    return tuple(None if d is None else int(d) for d in dims)


def embedding_high(model) -> Optional[int]:
    """The smallest ``input_dim`` of the model's Embedding layers (nested models included): token
    ids below it are valid for every one of them; ``None`` without Embedding layers."""
    dims: List[int] = []
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if type(layer).__name__ == "Embedding" and getattr(layer, "input_dim", None):
            dims.append(int(layer.input_dim))
        stack.extend(getattr(layer, "layers", None) or [])
        inner = getattr(layer, "layer", None)  # TimeDistributed, Bidirectional
        if inner is not None:
            stack.append(inner)
    return min(dims) if dims else None


def _declared_inputs(spec, path: str) -> Dict[str, Any]:
    specs = dict(getattr(spec, "input_specs", None) or {})
    out = {}
    for name, value in specs.items():
        try:
            shape, dtype = value
            out[str(name)] = (np.dtype(dtype), None if shape is None else tuple(None if d is None else int(d)
                                                                                  for d in shape))
        except (TypeError, ValueError) as exc:
            raise MappingError(f"VerifySpec.input_specs[{name!r}] is not (shape, dtype): {exc}") from None
    return out


class KerasModel(TFModel):
    """A Keras model (loaded from the file, or built by the mapping and given the file's
    weights): its inputs and outputs by name, run with ``training=False``."""

    def __init__(self, tf, model, *, path: str, side: str, reason: str, spec=None, variables=None):
        super().__init__()
        self.tf, self.model, self.path, self.side, self.reason = tf, model, path, side, reason
        self.what = f"the Keras model in {os.path.basename(path)}"
        self.variables = variables
        self.int_high = embedding_high(model)
        try:
            struct = model.input
        except (AttributeError, ValueError):  # a Sequential built without an Input
            struct = None
        self._dict_input = isinstance(struct, dict)
        if struct is None:
            self.inputs = _declared_inputs(spec, path)
            if not self.inputs:
                raise InputError(f"{self.what} declares no inputs (a Sequential built without an Input?)", path=path,
                                 hint="give the model an Input, or declare VerifySpec.input_specs")
        else:
            tensors = list(struct.values()) if self._dict_input else list(model.inputs)
            names = list(struct) if self._dict_input else list(getattr(model, "input_names", None) or
                                                                [t.name for t in tensors])
            self.inputs = {str(n): (_np_dtype(t.dtype), _shape(t.shape)) for n, t in zip(names, tensors)}
        out_struct = getattr(model, "output", None)
        self.outputs = [str(n) for n in (list(out_struct) if isinstance(out_struct, dict) else model.output_names)]

    def _run(self, model, inputs):
        tf = self.tf
        with tf.device("/cpu:0"):
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            if self._dict_input:
                arg = tensors
            elif len(tensors) == 1:
                (arg,) = tensors.values()
            else:
                arg = [tensors[k] for k in self.inputs]
            return model(arg, training=False)

    def layer_outputs(self, inputs, names) -> Dict[str, np.ndarray]:
        """The outputs of the model's layers ``names`` (top-level Keras layer names) on
        ``inputs``, in TF's layout: a Keras model from the model's inputs to those layers' outputs."""
        layers = {layer.name: layer for layer in self.model.layers}
        missing = [n for n in names if n not in layers]
        if missing:
            import difflib

            close = difflib.get_close_matches(missing[0], list(layers), n=5, cutoff=0.3)
            raise InputError(f"--per-layer: {self.what} has no layer {missing[0]!r} (VerifySpec.layers)",
                             path=self.path, hint=f"closest: {', '.join(close)}" if close else
                             f"its layers: {', '.join(layers)}")
        import importlib

        keras = importlib.import_module(type(self.model).__module__.split(".")[0])  # the Keras that built it
        probe = keras.Model(self.model.input, [layers[n].output for n in names])
        result = self._run(probe, inputs)
        flat = list(result) if isinstance(result, (list, tuple)) else [result]
        return {n: np.asarray(v) for n, v in zip(names, flat)}

    def __call__(self, inputs):
        result = self._run(self.model, inputs)
        if isinstance(result, dict):
            return {str(k): np.asarray(v) for k, v in result.items()}
        flat = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(flat) != len(self.outputs):
            raise InputError(f"{self.what} returned {len(flat)} outputs; it declares {len(self.outputs)} "
                             f"({', '.join(self.outputs)})", path=self.path)
        return {k: np.asarray(v) for k, v in zip(self.outputs, flat)}


class ReferenceModel(TFModel):
    """The mapping's ``tf_reference`` as the TF side of a weights-only Keras file: inputs from
    ``VerifySpec.input_specs``, the file's weights as h5py reads them."""

    side = "reference"

    def __init__(self, spec, variables, *, path: str, reason: str):
        super().__init__()
        self.spec, self.variables, self.path, self.reason = spec, variables, path, reason
        self.what = "the mapping's tf_reference"
        self.inputs = _declared_inputs(spec, path)
        if not self.inputs:
            raise MappingError(f"{os.path.basename(path)} holds weights only, and the mapping's VerifySpec declares "
                               "no input_specs for its tf_reference",
                               hint="declare VerifySpec.input_specs={name: (shape, dtype)}, or VerifySpec.keras_model")
        self.outputs = list(spec.outputs) or ["output"]

    def layer_outputs(self, inputs, names) -> Dict[str, np.ndarray]:
        """The layer outputs the last call's ``tf_reference`` returned, of ``names``."""
        return {k: v for k, v in self._layers.items() if k in names}

    def __call__(self, inputs):
        out, layers = self.spec.tf_reference(self.variables, *[inputs[k] for k in self.inputs])
        self._layers = {k: np.asarray(v) for k, v in (layers or {}).items()}
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not self.spec.outputs and len(outs) > 1:
            self.outputs = [f"output_{i}" for i in range(len(outs))]
        if len(outs) != len(self.outputs):
            raise MappingError(f"tf_reference returned {len(outs)} outputs; VerifySpec.outputs names "
                               f"{len(self.outputs)}")
        return {k: np.asarray(v) for k, v in zip(self.outputs, outs)}


class KerasFileVariables(_ReadOnlyArrays):
    """A Keras file's weights as h5py reads them, a read-only mapping keyed by the HDF5 dataset
    paths (the names ``tf2pt inspect`` lists: ``layers/conv2d/vars/0``,
    ``model_weights/conv/conv/kernel:0``). A ``.keras`` archive's ``model.weights.h5`` is
    inflated to a temporary file by tf2pt's zip checks; a sharded ``.weights.json``'s shards are
    read together. tf2pt's reader has read (and vetted) the file first; the values here do not
    depend on its naming."""

    def __init__(self, checkpoint):
        self._path = os.fspath(checkpoint.path)
        self._paths = [os.fspath(p) for p in checkpoint.files]
        self._files: List[Any] = []
        self._datasets: Optional[Dict[str, Any]] = None

    def _open(self) -> Dict[str, Any]:
        """Opened on first use, after Keras has loaded the model (HDF5 refuses a second open of a
        file with other locking flags in one process)."""
        if self._datasets is not None:
            return self._datasets
        import h5py

        from ..read._zipsafe import SafeZip, is_zip

        sources: List[Any] = []
        if is_zip(self._path):
            z = SafeZip(self._path)
            try:
                if not z.has("model.weights.h5"):
                    raise UnsupportedError("the .keras archive holds no model.weights.h5", path=self._path)
                tmp = z.extract_temp("model.weights.h5")
            finally:
                z.close()
            self._files.append(tmp)
            sources.append(tmp)
        else:
            sources.extend(p for p in self._paths if h5py.is_hdf5(p))
        datasets: Dict[str, Any] = {}
        for source in sources:
            f = h5py.File(source, "r")
            self._files.append(f)

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    datasets.setdefault(name, obj)

            f.visititems(visit)
        self._datasets = datasets
        return datasets

    def _names(self):
        return self._open()

    def _read(self, name: str) -> np.ndarray:
        return np.asarray(self._open()[name][()])


def _full_model(checkpoint) -> bool:
    return checkpoint.kind in ("keras", "keras_h5") and checkpoint.model_config is not None


def load_keras_file(checkpoint, notes: Optional[list] = None):
    """``(Keras model, description)``: a ``.keras`` or full-model ``.h5`` loaded by the Keras that
    fits the version the file names (see the module's table), ``compile=False``."""
    path = os.fspath(checkpoint.path)
    version = getattr(checkpoint, "keras_version", None)
    major = _major(version)
    which = "tf_keras" if major == 2 and _has("tf_keras") else "keras"
    keras = _import_keras(which)
    label = f"{'tf_keras' if which == 'tf_keras' else 'Keras'} {keras.__version__}"
    if which == "tf_keras":
        check_modules(checkpoint.model_config, path)
        load = keras.models.load_model
    else:
        load = keras.saving.load_model
    try:
        model = load(path, safe_mode=True, compile=False)
    except Exception as exc:
        if major == 2 and which == "keras":
            message = " ".join(str(exc).split())[:300]
            raise InputError(f"the file was written by Keras {version}, and Keras 3 cannot load it "
                             f"({type(exc).__name__}: {message})", path=path,
                             hint="pip install tf_keras (Keras 2), which verify then uses for Keras 2 files") from None
        raise
    how = ("keras.saving.load_model, safe_mode=True" if which == "keras" and checkpoint.kind == "keras" else
           "keras.saving.load_model (its HDF5 loader; Python code in the file was refused by tf2pt's reader)"
           if which == "keras" else "tf_keras.models.load_model, safe_mode=True" if checkpoint.kind == "keras" else
           "tf_keras.models.load_model (Python code in the file was refused by tf2pt's reader)")
    if notes is not None and version and major == 2 and which == "keras":
        notes.append(f"the file was written by Keras {version}; tf_keras is not installed, so Keras 3 loaded it")
    return model, f"{label} through {how}"


def open_keras(tf, checkpoint, spec, *, trust_graph: bool = False, notes: Optional[list] = None) -> TFModel:
    """The :class:`~.tfside.TFModel` of a Keras file (already read by tf2pt's reader: Python code
    in it refused): its own model, else the mapping's ``keras_model`` with its weights, else the
    mapping's ``tf_reference`` (see the module's docstring)."""
    path = os.fspath(checkpoint.path)
    base = os.path.basename(path)
    checkpoint.close()  # tf2pt's reader is done with the file; Keras opens it its own way
    variables = KerasFileVariables(checkpoint) if spec.tf_reference is not None else None
    if _full_model(checkpoint):
        model, how = load_keras_file(checkpoint, notes)
        if notes is not None and getattr(spec, "keras_model", None) is not None:
            notes.append("the file holds its model's architecture: the mapping's keras_model was not used")
        return KerasModel(tf, model, path=path, side="original-graph", spec=spec, variables=variables,
                          reason=f"ran the Keras model in {base}, loaded by {how}")
    return open_weights(tf, spec, path, variables, why=f"{base} holds weights only (no architecture)",
                        how="as h5py reads them")


def open_weights(tf, spec, path: str, variables, *, why: str, how: str) -> TFModel:
    """Weights without an architecture (a weights-only Keras file, a TF2 checkpoint with no graph)
    as a :class:`~.tfside.TFModel`: the mapping's ``keras_model`` with them loaded by Keras'
    ``load_weights(path)``, else the mapping's ``tf_reference`` on ``variables`` (read ``how``)."""
    if getattr(spec, "keras_model", None) is not None:
        model = spec.keras_model()
        model.load_weights(path)
        return KerasModel(tf, model, path=path, side="keras-model", spec=spec, variables=variables,
                          reason=f"{why}; ran the mapping's keras_model with the weights, loaded by Keras' load_weights")
    if spec.tf_reference is not None:
        return ReferenceModel(spec, variables, path=path,
                              reason=f"{why}; ran the mapping's tf_reference on the weights, {how}")
    raise InputError(f"cannot run TF: {why}, and the mapping has neither a keras_model nor a tf_reference",
                     path=path, hint="save the whole model (model.save('m.keras')), or give the mapping's VerifySpec "
                                     "a keras_model (a function building the Keras model)")

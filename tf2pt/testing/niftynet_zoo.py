"""NiftyNet 0.6.0's own network code under TensorFlow 2's ``tf.compat.v1``, and a checkpoint
writer for its networks (test support: the package itself never imports this module).

NiftyNet 0.6.0 (``pip install --no-deps niftynet==0.6.0``) was written for TF 1.x. Its network
classes (``niftynet.network.*``) build and run in ``tf.compat.v1`` graph mode after a few shims,
which :func:`niftynet_modules` applies while it imports them:

* ``import tensorflow`` inside NiftyNet gets a module that answers from ``tf.compat.v1`` first
  and from TF 2 after, with ``contrib`` a stub (the network code this module uses only reaches
  ``tf.contrib`` on paths it does not take; any use raises).
* NumPy's removed aliases (``np.int``, ``np.float``, ``np.bool``, ``np.object``, ...) are put back.
* ``niftynet/__init__.py`` is skipped: it imports the engine, the CLI and their dependencies.
  An empty package object stands in for it, so ``niftynet.network.x`` imports directly.

``sys.modules['tensorflow']`` is the shim only while NiftyNet's modules import (they keep their
reference to it); afterwards the real TensorFlow is put back, so the rest of the process is
unaffected.

:func:`write_niftynet_checkpoint` builds one of the networks in :data:`NETWORKS` the way
NiftyNet's segmentation application trains it -- training graph (``is_training=True``, BN
moving averages with zero-debiasing), ``AdamOptimizer`` under ``ApplyGradients``, an
``ExponentialMovingAverage`` of the trainable variables (the 2017 engine's) -- optionally runs
training steps, then sets every inference variable to random, non-trivial values and saves a
checkpoint, with a ``.meta`` of the network in inference mode at a fixed input shape:
feed ``images:0`` (N x D x H x W x C), fetch ``logits:0``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import importlib.util
import os
import sys
import types
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

INPUT_TENSOR = "images:0"
OUTPUT_TENSOR = "logits:0"

#: name -> (module, class, extra keyword arguments of the class)
NETWORKS: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    "highres3dnet": ("niftynet.network.highres3dnet", "HighRes3DNet", {}),
    "highres3dnet_small": ("niftynet.network.highres3dnet_small", "HighRes3DNetSmall", {}),
    "highres3dnet_large": ("niftynet.network.highres3dnet_large", "HighRes3DNetLarge", {}),
    "dense_vnet": ("niftynet.network.dense_vnet", "DenseVNet", {}),
    "vnet": ("niftynet.network.vnet", "VNet", {}),
    "unet": ("niftynet.network.unet", "UNet3D", {}),
}

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str, "complex": complex,
                  "long": int, "unicode": str}


def niftynet_available() -> bool:
    return importlib.util.find_spec("niftynet") is not None


class _ContribStub(types.ModuleType):
    """``tf.contrib`` is gone in TF 2: any attribute is another stub, and calling one raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _ContribStub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self.__name__} does not exist in TensorFlow 2 (NiftyNet shim)")


class _TF1(types.ModuleType):
    """``tensorflow`` as NiftyNet 0.6.0 expects it: ``tf.compat.v1`` first, then TF 2."""

    def __init__(self, tf):
        super().__init__("tensorflow")
        self._tf = tf
        self._v1 = tf.compat.v1
        self.__path__ = tf.__path__  # so that ``tensorflow.python...`` submodules still import
        self.contrib = _ContribStub("tensorflow.contrib")
        self.__version__ = tf.__version__

    def __getattr__(self, name):
        if name.startswith("__") and name not in ("__version__",):
            raise AttributeError(name)
        try:
            return getattr(self._v1, name)
        except AttributeError:
            return getattr(self._tf, name)


_cache: Dict[str, Any] = {}


class _ContribFinder:
    """Serves ``tensorflow.contrib.*`` imports (``from tensorflow.contrib.framework import
    list_variables``) from the stub while the shim is installed."""

    def find_spec(self, name, path=None, target=None):
        if name.startswith("tensorflow.contrib."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        module = _ContribStub(spec.name)
        module.__path__ = []
        if spec.name == "tensorflow.contrib.framework":
            module.list_variables = _cache["tf"].train.list_variables
        return module

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def _shimmed_tensorflow(tf):
    saved = {k: sys.modules.get(k) for k in ("tensorflow", "tensorflow.contrib")}
    shim = _TF1(tf)
    shim.contrib.__path__ = []
    sys.modules["tensorflow"] = shim
    sys.modules["tensorflow.contrib"] = shim.contrib
    finder = _ContribFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield shim
    finally:
        sys.meta_path.remove(finder)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def niftynet_modules():
    """``(tf, {network name: class})``: real TF 2 and NiftyNet's network classes, imported under
    the shims (once per process)."""
    if "classes" in _cache:
        return _cache["tf"], _cache["classes"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    for alias, value in _NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, value)
    spec = importlib.util.find_spec("niftynet")
    if spec is None:
        raise ImportError("niftynet is not installed (pip install --no-deps niftynet==0.6.0)")
    if "niftynet" not in sys.modules or getattr(sys.modules["niftynet"], "__file__", None):
        package = types.ModuleType("niftynet")
        package.__path__ = list(spec.submodule_search_locations)
        package.__version__ = "0.6.0"
        sys.modules["niftynet"] = package
    classes = {}
    _cache["tf"] = tf
    with _shimmed_tensorflow(tf):
        for name, (module, cls, _) in NETWORKS.items():
            classes[name] = getattr(importlib.import_module(module), cls)
    _cache["classes"] = classes
    # DenseVNet.__init__ updates its class-level __hyper_params__ in place; keep the defaults
    _cache["dense_vnet_defaults"] = dict(classes["dense_vnet"].__hyper_params__)
    return tf, classes


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------


def random_inference_values(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Non-trivial values: a swapped mean/variance, a wrong permutation or two same-shaped
    kernels swapped changes the output."""
    from .niftynet import statistic_values

    leaf = name.rsplit("/", 1)[-1]
    shape = list(shape)
    value = statistic_values(leaf, shape, rng)
    if value is not None:
        return value
    if leaf == "b":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if leaf == "prior":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)  # the log of it is added to the logits
    if len(shape) == 5:
        fan_in = int(np.prod(shape[:3]) * shape[3])
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return rng.normal(0.0, 0.3, shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------


def _network(classes, name: str, num_classes: int, acti_func: Optional[str], hyperparams: Optional[dict],
             attributes: Optional[dict] = None):
    module, cls, kwargs = NETWORKS[name]
    kwargs = dict(kwargs)
    if acti_func is not None:
        kwargs["acti_func"] = acti_func
    if name == "dense_vnet":
        # DenseVNet.__init__ updates its class-level defaults in place: start from NiftyNet's own
        classes[name].__hyper_params__ = dict(_cache["dense_vnet_defaults"])
        kwargs["hyperparams"] = dict(hyperparams or {})
    elif hyperparams:
        raise ValueError(f"{name} takes no hyperparameters")
    net = classes[name](num_classes=num_classes, **kwargs)
    if name == "dense_vnet":  # and leave NiftyNet's defaults as they were
        net.hyperparams = dict(net.hyperparams)
        classes[name].__hyper_params__ = dict(_cache["dense_vnet_defaults"])
    for key, value in (attributes or {}).items():  # e.g. VNet's n_features, set in its __init__
        if not hasattr(net, key):
            raise AttributeError(f"{type(net).__name__} has no attribute {key!r} to override")
        setattr(net, key, value)
    return net


def _call(net, name: str, images, is_training: bool):
    kwargs = {"is_training": is_training}
    if name in ("dense_vnet", "highres3dnet_large"):
        kwargs["keep_prob"] = 0.5 if is_training else 1.0  # the application's inference value
    return net(images, **kwargs)


def write_niftynet_checkpoint(
    out_dir,
    network: str,
    *,
    input_shape: Sequence[int],
    num_classes: int = 3,
    in_channels: int = 1,
    acti_func: Optional[str] = None,
    hyperparams: Optional[dict] = None,
    attributes: Optional[dict] = None,
    train_shape: Optional[Sequence[int]] = None,
    train_steps: int = 1,
    seed: int = 0,
    global_step: int = 2000,
    prefix: str = "model.ckpt",
) -> str:
    """Build NiftyNet's ``network`` (a key of :data:`NETWORKS`), create its training variables,
    run ``train_steps`` training steps on ``train_shape`` volumes (0: create the variables
    without running a step, for networks too big to train here), set the inference variables
    to random non-trivial values, and save ``<out_dir>/<prefix>-<global_step>`` with a ``.meta``
    of the inference graph for ``input_shape`` (D, H, W). Returns the checkpoint prefix.

    ``hyperparams`` updates DenseVNet's hyperparameters; ``attributes`` overrides attributes a
    network sets in its ``__init__`` (VNet's ``n_features``: its default, 16 to 256 channels,
    makes a 70M-parameter network whose checkpoint with Adam and EMA is over 1 GB).
    """
    tf, classes = niftynet_modules()
    v1 = tf.compat.v1
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_shape = list(train_shape or input_shape)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        gstep = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [1, *train_shape, in_channels], name="train_images")
        net = _network(classes, network, num_classes, acti_func, hyperparams, attributes)
        with v1.name_scope("worker_0"), contextlib.redirect_stdout(io.StringIO()):  # NiftyNet prints its layers
            logits = _call(net, network, x, True)
            y = v1.placeholder(tf.int32, logits.shape.as_list()[:-1], name="train_labels")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        trainable = v1.trainable_variables()
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            with v1.name_scope("ApplyGradients"):
                optimizer = v1.train.AdamOptimizer(1e-4)
                grads = optimizer.compute_gradients(loss, var_list=trainable)
                train_op = optimizer.apply_gradients(grads, global_step=gstep)
        ema = v1.train.ExponentialMovingAverage(0.9)
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(trainable)

        model_vars = [v for v in v1.global_variables() if v.op.name.startswith(net.layer_scope().name + "/")]
        inference = [v for v in model_vars if not any(s in v.op.name for s in ("/biased", "/local_step"))]
        feeds = {v.op.name: v1.placeholder(tf.float32, v.shape, name="set_value") for v in inference}
        set_values = tf.group(*[v.assign(feeds[v.op.name]) for v in inference], gstep.assign(global_step))
        values = {v.op.name: random_inference_values(v.op.name, v.shape.as_list(), rng) for v in inference}

        saver = v1.train.Saver(v1.global_variables(), max_to_keep=1)
        with v1.Session(graph=graph, config=v1.ConfigProto(device_count={"GPU": 0})) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(train_steps):
                feed = {x: rng.standard_normal(x.shape.as_list()).astype(np.float32),
                        y: rng.integers(0, num_classes, y.shape.as_list()).astype(np.int32)}
                sess.run(train_op, feed)
            sess.run(set_values, {feeds[name]: value for name, value in values.items()})
            path = saver.save(sess, os.path.join(out_dir, prefix), global_step=global_step, write_meta_graph=False)
        all_vars = [(v.op.name, v.shape.as_list(), v.dtype.base_dtype) for v in v1.global_variables()]
    export_inference_meta(path + ".meta", network, all_vars, input_shape=input_shape, num_classes=num_classes,
                          in_channels=in_channels, acti_func=acti_func, hyperparams=hyperparams, attributes=attributes)
    return path


def export_inference_meta(meta_path, network: str, all_vars, *, input_shape, num_classes: int, in_channels: int = 1,
                          acti_func: Optional[str] = None, hyperparams: Optional[dict] = None,
                          attributes: Optional[dict] = None) -> None:
    """The ``.meta``: NiftyNet's network in inference mode, ``images:0`` (fixed shape: several
    NiftyNet layers need static sizes) -> ``logits:0``, and a Saver over every checkpoint
    variable (training-only ones as placeholders variables, so ``restore`` finds them all)."""
    tf, classes = niftynet_modules()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [1, *input_shape, in_channels], name=INPUT_TENSOR.split(":")[0])
        net = _network(classes, network, num_classes, acti_func, hyperparams, attributes)
        with v1.name_scope("worker_0"), contextlib.redirect_stdout(io.StringIO()):
            out = _call(net, network, images, False)
        tf.identity(out, name=OUTPUT_TENSOR.split(":")[0])
        existing = {v.op.name for v in v1.global_variables()}
        for name, shape, dtype in all_vars:
            if name not in existing:
                var = tf.Variable(tf.zeros(shape, dtype), name=name, trainable=False)
                assert var.op.name == name, (var.op.name, name)
        saver = v1.train.Saver(v1.global_variables())
        saver.export_meta_graph(meta_path, clear_devices=True, strip_default_attrs=True)


def run_meta(prefix: str, x: np.ndarray, fetch: Sequence[str] = (OUTPUT_TENSOR,)):
    """Run the exported graph on ``x`` (N, D, H, W, C); returns the fetched arrays."""
    tf, _ = niftynet_modules()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        saver = v1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
        saver.restore(sess, prefix)
        return sess.run([graph.get_tensor_by_name(t) for t in fetch], {graph.get_tensor_by_name(INPUT_TENSOR): x})

"""Keras weight files written by real Keras, for tests: Keras 3 (``keras``, as TensorFlow 2.21
ships it) and Keras 2 (``tf_keras``), each after one step of training (optimizer state saved).

Two small models, both with non-trivial weights (seeded random, BatchNormalization moving
variances away from 1 and means away from 0):

* ``cnn``: Conv2D (stride 2, ``padding="same"``), BatchNormalization, Flatten, and a nested
  Sequential model of two Dense layers;
* ``rnn``: Embedding, Bidirectional LSTM, GRU (``reset_after=True``), Dense;
* ``sep`` (for ``tf2pt map``, not in :func:`all_cases`): DepthwiseConv2D (multiplier 2, no
  bias), BatchNormalization, ReLU, SeparableConv2D, BatchNormalization, global average pooling,
  Dense. Both depthwise kernels become ``[6, 1, 3, 3]`` torch weights: only the torch modules'
  ``groups`` (3 against 6) tell them apart.

:func:`write` saves one in one format and returns the path a user would pass to tf2pt:

=============  =========================================================================
``h5``         full model, Keras 2 layout (``model.save('m.h5')``; Keras 3 writes it too)
``weights_h5`` weights only, Keras 2 layout (``save_weights('w.h5')``; Keras 2 only)
``keras``      Keras 3 ``.keras`` zip (config.json, metadata.json, model.weights.h5)
``weights``    Keras 3 ``.weights.h5`` (Keras 3 only)
``sharded``    Keras 3 sharded ``.weights.json`` + shards (Keras 3 only)
=============  =========================================================================

:func:`expected` loads the file back with Keras and returns what Keras holds: the model's
weights per layer (readable name, array) in the model's order, and the optimizer's variables.
Keras is imported inside the functions.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

FORMATS = {"3": ("h5", "keras", "weights", "sharded"), "2": ("h5", "weights_h5", "keras")}
SUFFIX = {"h5": "model.h5", "weights_h5": "weights.h5", "keras": "model.keras", "weights": "model.weights.h5",
          "sharded": "model.weights.json"}


def keras_module(version: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if version == "2":
        import tf_keras as keras
    else:
        import keras
    return keras


def build(keras, kind: str, seed: int = 0):
    """The ``kind`` model, compiled (Adam, MSE), with seeded random weights."""
    L = keras.layers
    if kind == "cnn":
        inp = keras.Input((8, 8, 2))
        x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
        x = L.BatchNormalization(name="bn")(x)
        x = L.Flatten()(x)
        inner = keras.Sequential([L.Dense(6, activation="tanh"), L.Dense(3)], name="head")
        out = inner(x)
        model = keras.Model(inp, out, name="cnn")
    elif kind == "rnn":
        inp = keras.Input((5,), dtype="int32")
        x = L.Embedding(11, 4)(inp)
        x = L.Bidirectional(L.LSTM(3, return_sequences=True))(x)
        x = L.GRU(2, reset_after=True)(x)
        out = L.Dense(2)(x)
        model = keras.Model(inp, out, name="rnn")
    elif kind == "sep":
        inp = keras.Input((8, 8, 3))
        x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, name="dw")(inp)
        x = L.BatchNormalization(name="dw_bn")(x)
        x = L.ReLU()(x)
        x = L.SeparableConv2D(8, 3, padding="same", name="sep")(x)
        x = L.BatchNormalization(name="sep_bn")(x)
        x = L.GlobalAveragePooling2D()(x)
        out = L.Dense(3, name="fc")(x)
        model = keras.Model(inp, out, name="sep")
    else:
        raise ValueError(kind)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape = tuple(w.shape)
            name = w.name.split(":")[0]
            if name.endswith("moving_variance"):
                value = rng.uniform(0.5, 2.0, shape)
            else:
                value = rng.standard_normal(shape) * 0.5
            w.assign(value.astype(np.float32))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def data(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    if kind == "cnn":
        return rng.standard_normal((4, 8, 8, 2)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    if kind == "sep":
        return rng.standard_normal((4, 8, 8, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    return rng.integers(0, 11, (4, 5)).astype(np.int32), rng.standard_normal((4, 2)).astype(np.float32)


def write(out_dir, kind: str = "cnn", fmt: str = "keras", version: str = "3", seed: int = 0) -> str:
    """Train ``kind`` one step with Keras ``version`` and save it as ``fmt``; returns the path."""
    keras = keras_module(version)
    model = build(keras, kind, seed)
    x, y = data(kind, seed)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(os.fspath(out_dir), SUFFIX[fmt])
    with open(os.path.join(os.fspath(out_dir), "writer-names.json"), "w") as fh:
        json.dump(weight_names(model, version, "h5" if fmt in ("h5", "weights_h5") else "layers"), fh)
    if fmt in ("h5", "keras"):
        model.save(path)
    elif fmt == "sharded":
        model.save_weights(path, max_shard_size=0.001)  # in GB: a few KiB per shard
    else:
        model.save_weights(path)
    return path


def expected(path: str, kind: str, fmt: str, version: str) -> Tuple[List[Tuple[str, np.ndarray]], Optional[List[np.ndarray]]]:
    """What Keras loads from ``path``: ``[(readable name, array)]`` of the model's weights, layer
    by layer in the model's order, and the optimizer's variables in its own order."""
    keras = keras_module(version)
    if fmt in ("h5", "keras"):
        # Keras 3 cannot compile a model it saved as .h5 ("Could not deserialize 'keras.metrics.mse'")
        model = keras.models.load_model(path, compile=not (version == "3" and fmt == "h5"))
    else:
        model = build(keras, kind, seed=99)  # other values: loading must overwrite them
        if version == "3":  # Keras 3 restores the optimizer's state into a built optimizer
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
    names = weight_names(model, version, "h5" if fmt in ("h5", "weights_h5") else "layers")
    if fmt not in ("h5", "keras") or (version, fmt) == ("3", "h5"):
        # weights only: the names in the file are the writer's; Keras 3's .h5 stores each
        # variable's path, which depends on where the layer was built (the writer's model)
        with open(os.path.join(os.path.dirname(path), "writer-names.json")) as fh:
            names = json.load(fh)
    arrays = [np.asarray(w.numpy()) for layer in model.layers for w in layer.weights]
    weights = list(zip(names, arrays))
    if fmt == "weights_h5":  # Keras 2's save_weights keeps no optimizer state
        return weights, []
    opt = getattr(model, "optimizer", None)
    if opt is None:  # Keras did not restore an optimizer (Keras 3 from .h5): nothing to compare
        return weights, None
    variables = opt.variables() if callable(opt.variables) else opt.variables
    return weights, [np.asarray(v.numpy()) for v in variables]


def weight_names(model, version: str, style: str) -> List[str]:
    """The readable names of ``model``'s weights, layer by layer. ``style="h5"`` (the Keras 2
    ``.h5`` layout): Keras 2's own variable names (``weight_names``; Keras 3 writes them as
    ``<layer>/<name>``); ``"layers"`` (``.keras``, ``.weights.h5``): the path of layer names
    down to the variable, the model's own name left out (``head/dense_1/kernel``)."""
    out = []
    for layer in model.layers:
        for w in layer.weights:
            if version == "2":
                name = w.name.split(":")[0]
            else:
                name = w.path
                if name.startswith(model.name + "/"):
                    name = name[len(model.name) + 1:]
            if style == "layers" and not name.startswith(layer.name + "/"):
                name = f"{layer.name}/{name}"
            out.append(name)
    return out


def all_cases() -> List[Tuple[str, str, str]]:
    """``(version, kind, fmt)`` for every fixture."""
    return [(v, k, f) for v in ("3", "2") for k in ("cnn", "rnn") for f in FORMATS[v]]


def case_id(case: Tuple[str, str, str]) -> str:
    return f"keras{case[0]}_{case[1]}_{case[2]}"


def write_case(out_dir, case: Tuple[str, str, str]) -> str:
    version, kind, fmt = case
    return write(out_dir, kind, fmt, version)


def by_id() -> Dict[str, Tuple[str, str, str]]:
    return {case_id(c): c for c in all_cases()}

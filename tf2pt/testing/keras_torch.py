"""Plain torch models for the Keras fixtures of :mod:`tf2pt.testing.keras_fixtures`, and the
mappings that fill them from any of the fixture's files through the reader's layer table.

* ``cnn``: :class:`KerasCNN` -- ``tf2pt.nn.Conv2dSame`` (Keras' stride-2 ``padding="same"``
  pads asymmetrically, ``nn.Conv2d`` cannot), ReLU, ``nn.BatchNorm2d`` (Keras' eps), a plain
  ``nn.Flatten`` of the NCHW map (the Dense kernel's rows are permuted by
  ``dense_after_flatten``), ``nn.Linear``, Tanh, ``nn.Linear``;
* ``rnn``: :class:`KerasText` -- ``nn.Embedding``, ``nn.LSTM(bidirectional=True)``, ``nn.GRU``
  (or ``tf2pt.nn``'s where :func:`~tf2pt.keras_rules.recurrent_module` says torch's cannot
  compute the layer), ``nn.Linear``.

:func:`layer_table` reads a checkpoint's layers -- weight-owning Keras layers in the model's
order, with the name the rules match, the class and the config the file records, and the
weights' shapes -- and :func:`keras_mapping` turns such a table (plain JSON data, so a mapping
file can hold it) into a :class:`~tf2pt.mapping.Mapping` built from
:func:`~tf2pt.keras_rules.keras_layer_rules`. Weights-only Keras 2 files record no classes or
configs; :data:`ARCHITECTURE` (what the fixture's code builds) fills those in, as a user who
knows the model would. No TensorFlow or Keras is imported here.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence

from ..errors import MappingError
from ..keras_rules import Rules, keras_activation, keras_layer_rules, recurrent_module, torch_kwargs
from ..mapping import Mapping, Source, Target

#: per fixture kind: ``(torch module, Keras class, the config the fixture's code gives it)``, one
#: row per weight-owning Keras layer, in the model's order (the nested ``head`` is two Dense rows)
ARCHITECTURE = {
    "cnn": (("conv", "Conv2D", {"strides": [2, 2], "padding": "same", "activation": "relu"}),
            ("bn", "BatchNormalization", {"epsilon": 1e-3}),
            ("fc1", "Dense", {"activation": "tanh"}),
            ("fc2", "Dense", {"activation": "linear"})),
    "rnn": (("embedding", "Embedding", {}),
            ("lstm", "Bidirectional", {"layer": {"class_name": "LSTM", "config": {}}, "merge_mode": "concat"}),
            ("gru", "GRU", {"reset_after": True}),
            ("dense", "Dense", {"activation": "linear"})),
}
#: the CNN's input, height x width (not in the weights; the user knows it)
CNN_INPUT_HW = (8, 8)

_RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def _rule_name(readable: str, layer_class: Optional[str]) -> str:
    """The layer name :func:`keras_layer_rules` matches ``readable`` under (``gru`` of
    ``gru/gru_cell/kernel``, ``bidirectional`` of ``bidirectional/forward_lstm/lstm_cell/bias``)."""
    if layer_class == "Bidirectional" or layer_class is None:
        m = re.fullmatch(r"(.+?)/(?:forward|backward)_[^/]+/.+", readable)
        if m:
            return m.group(1)
    if layer_class in _RECURRENT or layer_class is None:
        m = re.fullmatch(r"(.+?)/[^/]*cell/[^/]+", readable)
        if m:
            return m.group(1)
    return readable.rpartition("/")[0]


def layer_table(checkpoint) -> List[Dict[str, Any]]:
    """The weight-owning layers of a Keras checkpoint (an open :class:`~tf2pt.read.Checkpoint`),
    in the model's order: ``{"name", "class", "config", "shapes"}``, JSON data. ``name`` is what
    the rules match in the readable names; ``class`` and ``config`` are the file's (``None`` in a
    weights-only file); ``shapes`` maps each weight's readable name to its shape."""
    rows: List[Dict[str, Any]] = []
    variables = sorted(checkpoint.variables.values(), key=lambda v: (v.order is None, v.order or 0))
    for v in variables:
        if v.role != "inference":
            continue
        if not v.readable_name:
            raise MappingError(f"variable {v.name!r} has no readable name: not a Keras file tf2pt can name")
        name = _rule_name(v.readable_name, v.layer_class)
        if not rows or rows[-1]["name"] != name:
            rows.append({"name": name, "class": v.layer_class, "config": v.layer_config, "shapes": {}})
        rows[-1]["shapes"][v.readable_name] = list(v.shape)
    return rows


def _shape(row, suffix: str) -> List[int]:
    for name, shape in row["shapes"].items():
        if name == suffix or name.endswith("/" + suffix):
            return shape
    raise MappingError(f"layer {row['name']!r} has no weight {suffix!r}", hint=", ".join(row["shapes"]))


def resolve(kind: str, table: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``table``'s rows joined with :data:`ARCHITECTURE`: each with its torch module (``module``),
    its class (the file's, which must be the architecture's) and a config (the file's, else the
    architecture's)."""
    arch = ARCHITECTURE[kind]
    if len(table) != len(arch):
        raise MappingError(f"the file has {len(table)} weight-owning layers ({', '.join(r['name'] for r in table)}); "
                           f"the {kind} model has {len(arch)}")
    out = []
    for row, (module, cls, default) in zip(table, arch):
        if row["class"] is not None and row["class"] != cls:
            raise MappingError(f"layer {row['name']!r} is a {row['class']}; the {kind} model's {module} takes a {cls}")
        out.append(dict(row, module=module, **{"class": cls, "config": row["config"] if row["config"] else default}))
    return out


def _act(config, default="linear"):
    from torch import nn

    name = keras_activation((config or {}).get("activation", default))
    modules = {"linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in modules:
        raise MappingError(f"activation {name!r}: the fixture models know {', '.join(modules)}")
    return modules[name]()


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def cnn_geometry(rows) -> Dict[str, Any]:
    conv, bn, fc1, fc2 = rows
    kh, kw, cin, cout = _shape(conv, "kernel")
    stride = _pair(conv["config"].get("strides", 1))
    padding = conv["config"].get("padding", "valid")
    h, w = CNN_INPUT_HW
    if padding == "same":
        oh, ow = math.ceil(h / stride[0]), math.ceil(w / stride[1])
    else:
        oh, ow = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    return {"in_channels": cin, "filters": cout, "kernel": (kh, kw), "stride": stride, "padding": padding,
            "feature_map": (oh, ow, cout), "hidden": _shape(fc1, "kernel")[1], "classes": _shape(fc2, "kernel")[1]}


def build_cnn(rows):
    """The torch CNN for ``resolve("cnn", ...)``'s rows."""
    from torch import nn

    from .. import nn as tfnn

    g = cnn_geometry(rows)
    conv_cfg, bn_row, fc1, fc2 = rows[0]["config"], rows[1], rows[2], rows[3]

    class KerasCNN(nn.Module):
        """Conv2D(stride 2, same) -> ReLU -> BatchNormalization -> Flatten -> Dense(tanh) -> Dense, NCHW in."""

        def __init__(self):
            super().__init__()
            k, s = g["kernel"], g["stride"]
            if g["padding"] == "same" and s != (1, 1):
                self.conv = tfnn.Conv2dSame(g["in_channels"], g["filters"], k, stride=s)
            else:
                self.conv = nn.Conv2d(g["in_channels"], g["filters"], k, stride=s,
                                      padding="same" if g["padding"] == "same" else 0)
            self.conv_act = _act(conv_cfg)
            self.bn = nn.BatchNorm2d(g["filters"], **torch_kwargs("BatchNormalization", bn_row["config"]))
            self.flatten = nn.Flatten()
            oh, ow, c = g["feature_map"]
            self.fc1 = nn.Linear(oh * ow * c, g["hidden"])
            self.fc1_act = _act(fc1["config"])
            self.fc2 = nn.Linear(g["hidden"], g["classes"])
            self.fc2_act = _act(fc2["config"])

        def forward(self, x):
            x = self.bn(self.conv_act(self.conv(x)))
            return self.fc2_act(self.fc2(self.fc1_act(self.fc1(self.flatten(x)))))

    return KerasCNN()


def _with_units(config, row) -> Dict[str, Any]:
    cfg = dict(config or {})
    if "units" not in cfg:  # a weights-only file: the units from the recurrent kernel [units, gates * units]
        cfg["units"] = _shape(row, "recurrent_kernel")[0]
    return cfg


def build_text(rows):
    """The torch text model for ``resolve("rnn", ...)``'s rows."""
    from torch import nn

    emb, bi, gru, dense = rows
    vocab, dim = _shape(emb, "embeddings")
    inner = bi["config"].get("layer") or {}
    inner_cfg = _with_units(inner.get("config"), bi)
    gru_cfg = _with_units(gru["config"], gru)

    class KerasText(nn.Module):
        """Embedding -> Bidirectional(LSTM, sequences) -> GRU (last state) -> Dense; int64 ids in."""

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim)
            self.lstm = recurrent_module(inner.get("class_name", "LSTM"), inner_cfg, dim, bidirectional=True)
            self.gru = recurrent_module("GRU", gru_cfg, 2 * int(inner_cfg["units"]))
            self.dense = nn.Linear(*reversed(_shape(dense, "kernel")))
            self.dense_act = _act(dense["config"])

        def forward(self, ids):
            y, _ = self.lstm(self.embedding(ids))
            y, _ = self.gru(y)
            return self.dense_act(self.dense(y[:, -1]))

    return KerasText()


def rules_for(kind: str, rows) -> Rules:
    rules = Rules()
    feature_map = cnn_geometry(rows)["feature_map"] if kind == "cnn" else None
    for i, row in enumerate(rows):
        extra: Dict[str, Any] = {}
        if kind == "cnn" and i == 2:  # the Dense right after the Flatten
            extra["feature_map"] = feature_map
        rules = rules + keras_layer_rules(row["name"], row["class"], row["module"], row["config"], **extra)
    return rules


def keras_mapping(kind: str, table: Sequence[Dict[str, Any]]) -> Mapping:
    """A mapping from the Keras file whose :func:`layer_table` is ``table`` onto the ``kind``
    model: rules from :func:`~tf2pt.keras_rules.keras_layer_rules`, optimizer state dropped by
    ``TRAINING_ONLY`` (the default ignore)."""
    rows = resolve(kind, table)
    rules = rules_for(kind, rows)
    build = {"cnn": build_cnn, "rnn": build_text}[kind]
    target = Target("default", f"the Keras {kind} fixture as plain torch modules", lambda: build(rows),
                    list(rules.rename), list(rules.fill))
    return Mapping(f"keras_{kind}", f"Keras fixture {kind}", Source("tf2pt.testing.keras_fixtures", framework="Keras"),
                   [target])

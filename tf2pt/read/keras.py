"""Keras weight files as a checkpoint source, without TensorFlow or Keras (h5py only).

Layouts (see ``docs/format.md``, "Keras files"):

* **Keras 2 full model** ``.h5``: ``model_weights/<layer>/`` with the attribute ``layer_names``
  (the model's layer order) and, per layer, ``weight_names`` (``conv2d/kernel:0``), each the
  path of a dataset under the layer's group; attributes longer than HDF5's 64 KiB limit are
  split into ``layer_names0``, ``layer_names1``, ... The model's JSON config is the root
  attribute ``model_config``; optimizer state is under ``optimizer_weights`` (training-only).
* **Keras 2 weights only** (``save_weights`` to ``.h5``/``.hdf5``): the same tree at the root.
* **Keras 3** ``.weights.h5``: ``layers/<snake_case class>[_N]/vars/<i>``; nested models
  repeat the pattern (``layers/functional/layers/dense/vars/0``), RNN cells and wrapped layers
  are attributes (``layers/lstm/cell/vars/0``, ``layers/bidirectional/forward_layer/cell/...``);
  the optimizer is ``optimizer/vars/<i>``. Each ``vars`` group carries the layer's own name
  (attribute ``name``, Keras 3.9 and later); variable names are not stored, so tf2pt names them
  from the layer class (Dense: kernel, bias; BatchNormalization: gamma, beta, moving_mean,
  moving_variance; ...) where the count fits, else by index.
* **Keras 3** ``.keras``: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``
  (or ``model.weights.npz``); ``config.json`` gives each layer's class and config.
* **Keras 3 sharded** ``.weights.json``: ``weight_map`` from each ``vars`` group to the
  ``.weights.h5`` shard holding it, in the model's order.

Variables are listed in the model's order: ``layer_names`` / ``weight_names`` for Keras 2, the
order Keras wrote the data (which is the model's layer order) for Keras 3. Nothing from the file
is ever run: a config with a ``Lambda`` layer or a serialized Python function is refused (Keras'
``.h5`` loader runs such code even with ``safe_mode``, CVE-2025-9905). HDF5 links, external
storage, virtual datasets and plugin filters are refused (:mod:`._h5safe`); zip members are
checked for traversal and bombs (:mod:`._zipsafe`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .. import dtypes
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from . import _h5safe
from ._zipsafe import SafeZip, is_zip
from .base import Checkpoint, VariableInfo, np

_INDEX_SUFFIX = re.compile(r":\d+$")
_COUNTER = re.compile(r"_\d+$")
MAX_ATTR_CHUNKS = 100_000

#: numpy dtype name -> tf2pt dtype name
_NP_TO_NAME = {"float16": "float16", "float32": "float32", "float64": "float64", "int8": "int8", "int16": "int16",
               "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
               "uint64": "uint64", "bool": "bool", "complex64": "complex64", "complex128": "complex128"}


def snake_case(name: str) -> str:
    """Keras 3's group name for a class (``BatchNormalization`` -> ``batch_normalization``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _flag(config: Optional[dict], key: str) -> Optional[bool]:
    if not config or key not in config:
        return None
    return bool(config[key])


def _with_optional(required: List[str], optional: List[Tuple[str, Optional[bool]]], count: int) -> Optional[List[str]]:
    """Names with a trailing optional one (``bias``): the config decides where it says,
    otherwise the count."""
    (name, flag), = optional
    if flag is None:
        flag = count == len(required) + 1
    return required + [name] if flag else list(required)


def keras3_variable_names(snake: str, config: Optional[dict], count: int) -> Optional[List[str]]:
    """The names of a Keras 3 layer's own variables, in ``save_own_variables`` order, from its
    class (snake case) and config; ``None`` when the class is unknown or the count does not fit."""
    bias = _flag(config, "use_bias")
    if snake in ("dense", "einsum_dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
                 "conv3d_transpose", "depthwise_conv1d", "depthwise_conv2d"):
        names = _with_optional(["kernel"], [("bias", bias)], count)
    elif snake in ("separable_conv1d", "separable_conv2d"):
        names = _with_optional(["depthwise_kernel", "pointwise_kernel"], [("bias", bias)], count)
    elif snake in ("lstm_cell", "gru_cell", "simple_rnn_cell"):
        names = _with_optional(["kernel", "recurrent_kernel"], [("bias", bias)], count)
    elif snake in ("batch_normalization",):
        scale, center = _flag(config, "scale"), _flag(config, "center")
        opts = [n for n, f in (("gamma", scale), ("beta", center)) if f is not False]
        names = None
        if len(opts) + 2 == count:
            names = opts + ["moving_mean", "moving_variance"]
        elif count == 2:
            names = ["moving_mean", "moving_variance"]
    elif snake in ("layer_normalization", "group_normalization"):
        scale, center = _flag(config, "scale"), _flag(config, "center")
        opts = [n for n, f in (("gamma", scale), ("beta", center)) if f is not False]
        names = opts if len(opts) == count else None
    elif snake == "embedding":
        names = ["embeddings"] if count == 1 else None
    elif snake == "p_re_lu":
        names = ["alpha"] if count == 1 else None
    else:
        names = None
    return names if names is not None and len(names) == count else None


def find_lambda(node: Any, where: str = "") -> Optional[str]:
    """Where a Keras config holds code (a ``Lambda`` layer, a serialized ``__lambda__`` or a
    marshalled function); ``None`` when it holds none."""
    stack = [(node, where)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            cls = node.get("class_name")
            if cls in ("Lambda", "__lambda__"):
                cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
                name = node.get("name") or cfg.get("name")
                return f"a {cls} {'layer ' + repr(name) if name else 'object'}" + (f" in {where}" if where else "")
            if node.get("function_type") == "lambda" or "__lambda__" in node:
                return "a serialized Python function" + (f" in {where}" if where else "")
            for k, v in node.items():
                if isinstance(v, (dict, list)):
                    stack.append((v, where))
        elif isinstance(node, list):
            stack.extend((v, where) for v in node if isinstance(v, (dict, list)))
    return None


def _custom_layers(config) -> List[str]:
    """The registered names of layers Keras 3 would import from outside Keras (``pkg>Class``)."""
    out: List[str] = []
    stack = [config]
    while stack:
        node = stack.pop()
        for entry in _layer_entries(node):
            reg = entry.get("registered_name")
            if isinstance(reg, str) and ">" in reg:
                out.append(reg)
            stack.append(entry)
    return out


def _parse_json(raw, label: str, what: str):
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(f"{what} is not UTF-8 text", path=label) from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{what} is not valid JSON ({str(exc)[:80]})", path=label,
                                     hint="the file is damaged; re-save it with Keras") from None


def _refuse_code(config, label: str, what: str) -> None:
    found = find_lambda(config)
    if found:
        raise UnsupportedError(
            f"the {what} holds {found}: Python code stored in the file, which Keras runs when it loads the model "
            "(its .h5 loader even with safe_mode, CVE-2025-9905); tf2pt never runs code from a file", path=label,
            hint="build the model in your own code and save only its weights (model.save_weights('x.weights.h5'))")


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


#: no attribute tf2pt reads (names, JSON configs) may declare more than this
MAX_ATTR_BYTES = 256 << 20


def _bounded_attr(obj, name: str, label: str):
    """An attribute's value, after checking that its declared size is sane: h5py allocates
    the declared shape before HDF5 reads a byte."""
    aid = obj.attrs.get_id(name)
    n = 1
    for d in aid.shape or ():
        n *= int(d)
    if n * max(int(aid.dtype.itemsize), 1) > MAX_ATTR_BYTES:
        raise CorruptCheckpointError(f"attribute {name!r} declares {n} elements", path=label,
                                     hint="the file is damaged or crafted")
    return obj.attrs[name]


def _attr_list(group, name: str, label: str) -> Optional[List[str]]:
    """A list-valued attribute, also in Keras' chunked form ``name0``, ``name1``, ..."""
    attrs = group.attrs
    try:
        if name in attrs:
            values = _bounded_attr(group, name, label)
        elif f"{name}0" in attrs:
            values = []
            i = 0
            while f"{name}{i}" in attrs:
                if i >= MAX_ATTR_CHUNKS:
                    raise CorruptCheckpointError(f"attribute {name!r} has more than {MAX_ATTR_CHUNKS} chunks", path=label)
                values.extend(list(np.asarray(_bounded_attr(group, f"{name}{i}", label)).reshape(-1)))
                i += 1
        else:
            return None
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"attribute {name!r} cannot be read ({exc})", path=label) from None
    arr = np.asarray(values)
    if arr.size == 0:
        return []
    if arr.dtype.kind not in "SUO":
        raise CorruptCheckpointError(f"attribute {name!r} is not a list of names", path=label)
    return [_text(v) for v in arr.reshape(-1)]


def _attr_text(obj, name: str, label: str = "") -> Optional[str]:
    try:
        if name not in obj.attrs:
            return None
        v = _bounded_attr(obj, name, label)
    except (OSError, RuntimeError, TypeError, ValueError, KeyError):
        return None
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bytes, str)):
        return _text(v)
    return None


def _layer_entries(config) -> List[dict]:
    if not isinstance(config, dict):
        return []
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if isinstance(layers, dict):  # old Sequential configs are the list itself
        layers = layers.get("layers")
    if layers is None and isinstance(inner, list):
        layers = inner
    return [e for e in layers or [] if isinstance(e, dict)]


def _entry_name(entry: dict) -> Optional[str]:
    cfg = entry.get("config")
    return entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)


def _trimmed(cfg) -> Optional[dict]:
    if not isinstance(cfg, dict):
        return None
    return {k: v for k, v in cfg.items() if k != "layers"}


class _Var:
    __slots__ = ("name", "store", "where", "dtype", "shape", "nbytes", "role", "reason", "readable", "slot_of",
                 "slot_name", "layer", "layer_class", "layer_config")


class KerasCheckpoint(Checkpoint):
    """A Keras 2 ``.h5``, a Keras 3 ``.weights.h5``, ``.keras`` or sharded ``.weights.json``."""

    kind = "keras"

    def __init__(self, path):
        super().__init__(path)
        spath = os.fspath(path)
        self.prefix = spath
        self._open: List[Any] = []  # h5py files, temporary files, archives: closed by close()
        self._stores: Dict[str, Tuple[Any, str]] = {}  # variable -> (dataset or npz loader, where)
        self.model_config: Optional[dict] = None
        #: the Keras version that wrote the file, as the file says (``None`` where it does not)
        self.keras_version: Optional[str] = None
        if not os.path.exists(spath):
            raise CheckpointNotFoundError("no such file", path=spath)
        self.files = [Path(spath)]
        try:
            if spath.endswith(".json"):
                self._open_sharded(spath)
            elif is_zip(spath):
                self._open_archive(spath)
            else:
                f = self._h5(spath, spath)
                self._read_h5(f, spath)
        except BaseException:
            self.close()
            raise

    # -- files -------------------------------------------------------------------------------
    def _h5(self, source, label: str):
        f = _h5safe.open_file(source, label)
        self._open.append(f)
        return f

    def _scan(self, f, label: str, size: int):
        groups: Dict[str, Any] = {}
        datasets = _h5safe.scan(f, label, size, on_group=lambda where, g: groups.__setitem__(where, g))
        groups[""] = f
        return datasets, groups

    def _read_h5(self, f, label: str, config=None) -> None:
        size = os.path.getsize(label) if isinstance(label, str) and os.path.isfile(label) else 1 << 62
        datasets, groups = self._scan(f, label, size)
        root_attrs = set(f.attrs.keys())
        if "model_weights" in groups:
            self.kind = "keras_h5"
            self._read_keras2(f, label, datasets, groups, "model_weights")
        elif "layer_names" in root_attrs or "layer_names0" in root_attrs:
            self.kind = "keras_weights_h5"
            self._read_keras2(f, label, datasets, groups, "")
        elif "layers" in groups or "vars" in groups or "optimizer" in groups:
            self.kind = "keras3_weights_h5"
            self._read_keras3([(label, datasets, groups)], config)
        else:
            raise UnsupportedError("an HDF5 file that is not a Keras weight file (no model_weights, layer_names or "
                                   "layers/ group)", path=label,
                                   hint="tf2pt reads Keras .h5/.weights.h5/.keras files and TF checkpoints")

    def _open_archive(self, path: str) -> None:
        z = SafeZip(path)
        self._open.append(z)
        self.kind = "keras"
        config = None
        if z.has("config.json"):
            config = _parse_json(z.read_small("config.json"), path, "config.json")
            _refuse_code(config, path, "config.json")
            self.model_config = config if isinstance(config, dict) else None
            custom = _custom_layers(config)
            if custom:
                self.notes.append(f"{len(custom)} layer{'s' if len(custom) != 1 else ''} of custom classes "
                                  f"({', '.join(sorted(set(custom))[:3])}): their code is not in the file and is never "
                                  "run; tf2pt reads their weights only")
        if z.has("metadata.json"):
            meta = _parse_json(z.read_small("metadata.json"), path, "metadata.json")
            if isinstance(meta, dict) and meta.get("keras_version"):
                self.keras_version = str(meta["keras_version"])
                self.notes.append(f"written by Keras {meta['keras_version']}")
        if z.has("model.weights.h5"):
            tmp = z.extract_temp("model.weights.h5")
            self._open.append(tmp)
            f = self._h5(tmp, path)
            size = z.members["model.weights.h5"].file_size
            datasets, groups = self._scan(f, path, size)
            self._read_keras3([(path, datasets, groups)], config)
        elif z.has("model.weights.npz"):
            self._read_npz(z, path, config)
        else:
            raise UnsupportedError("a zip archive without model.weights.h5 or model.weights.npz: not a Keras .keras file",
                                   path=path, hint="pass a Keras 3 .keras file, a Keras .h5 or a TF checkpoint")

    def _open_sharded(self, path: str) -> None:
        try:
            if os.path.getsize(path) > (64 << 20):
                raise UnsupportedError("the shard index is larger than 64 MiB", path=path)
            with open(path, "rb") as fh:
                doc = _parse_json(fh.read(), path, "the shard index")
        except OSError as exc:
            raise CheckpointNotFoundError(f"cannot read: {exc.strerror}", path=path) from None
        wmap = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wmap, dict):
            raise UnsupportedError("a JSON file without a weight_map: not a Keras sharded .weights.json", path=path,
                                   hint="pass the .weights.json Keras wrote with save_weights(..., max_shard_size=...)")
        self.kind = "keras3_sharded"
        shard_names: List[str] = []
        for group, shards in wmap.items():
            for s in shards if isinstance(shards, list) else [shards]:
                if not isinstance(s, str) or os.path.basename(s) != s or s in ("", ".", ".."):
                    raise UnsupportedError(f"the weight_map names shard {s!r}, which is not a file next to the index",
                                           path=path, hint="the index is crafted; tf2pt reads only shards beside it")
                if s not in shard_names:
                    shard_names.append(s)
        base = os.path.dirname(path)
        parts = []
        for s in shard_names:
            shard = os.path.join(base, s)
            if not os.path.isfile(shard):
                raise CheckpointNotFoundError(f"the weight_map names shard {s!r}, which is missing", path=path)
            self.files.append(Path(shard))
            f = self._h5(shard, shard)
            datasets, groups = self._scan(f, shard, os.path.getsize(shard))
            parts.append((shard, datasets, groups))
        self._read_keras3(parts, None)

    # -- Keras 2 ---------------------------------------------------------------------------------
    def _read_keras2(self, f, label: str, datasets, groups, root: str) -> None:
        prefix = f"{root}/" if root else ""
        raw = _attr_text(f, "model_config")
        configs: Dict[str, dict] = {}
        if raw is not None:
            config = _parse_json(raw, label, "the model_config attribute")
            _refuse_code(config, label, "model_config attribute")
            self.model_config = config if isinstance(config, dict) else None
            for entry in _layer_entries(config):
                name = _entry_name(entry)
                if name:
                    configs[name] = entry
        training = _attr_text(f, "training_config")
        if training is not None:
            _refuse_code(_parse_json(training, label, "the training_config attribute"), label, "training_config attribute")
        version = _attr_text(f, "keras_version") or _attr_text(groups.get(root, f), "keras_version")
        if version:
            self.keras_version = version
            self.notes.append(f"written by Keras {version}")
        layer_names = _attr_list(groups[root], "layer_names", label)
        if layer_names is None:
            raise CorruptCheckpointError(f"{'model_weights' if root else 'the file'} has no layer_names attribute",
                                         path=label, hint="the file is damaged; re-save it with Keras")
        vars_: List[_Var] = []
        listed = set()
        for layer in layer_names:
            where = f"{prefix}{layer}"
            if not layer or layer.startswith("/") or where not in groups:
                raise CorruptCheckpointError(f"layer_names lists {layer!r}, which the file has no group for", path=label)
            weight_names = _attr_list(groups[where], "weight_names", label) or []
            entry = configs.get(layer)
            sub = {(_entry_name(e) or ""): e for e in _layer_entries(entry)} if entry else {}
            for wn in weight_names:
                path = f"{where}/{wn}"
                dset = datasets.get(path)
                if dset is None:
                    raise CorruptCheckpointError(f"layer {layer!r} lists weight {wn!r}, which the file does not hold",
                                                 path=label, hint="the file is damaged; re-save it with Keras")
                listed.add(path)
                readable = _INDEX_SUFFIX.sub("", wn)
                owner, owner_name = entry, layer
                parts = readable.split("/")
                parts = parts[1:] if parts[0] == layer and len(parts) > 2 else parts
                if parts[0] in sub and parts[0] != layer:
                    owner, owner_name = sub[parts[0]], f"{layer}/{parts[0]}"
                v = self._var(path, dset, path, readable, "inference", "model variable")
                v.layer = owner_name
                if owner is not None:
                    v.layer_class = owner.get("class_name")
                    v.layer_config = _trimmed(owner.get("config"))
                vars_.append(v)
        readable_names = {v.readable for v in vars_}
        if root and "optimizer_weights" in groups:
            names = _attr_list(groups["optimizer_weights"], "weight_names", label) or []
            for wn in names:
                path = f"optimizer_weights/{wn}"
                dset = datasets.get(path)
                if dset is None:
                    raise CorruptCheckpointError(f"optimizer_weights lists {wn!r}, which the file does not hold", path=label)
                listed.add(path)
                readable = _INDEX_SUFFIX.sub("", wn)
                v = self._var(path, dset, path, readable, "training", "optimizer state (optimizer_weights)")
                v.slot_of, v.slot_name = _keras2_slot(readable, readable_names)
                vars_.append(v)
        unlisted = [p for p in datasets if p not in listed]
        if unlisted:
            self.notes.append(f"{len(unlisted)} dataset{'s' if len(unlisted) != 1 else ''} not listed in weight_names "
                              f"(Keras ignores them too), e.g. {unlisted[0]!r}")
        self._publish(vars_)

    # -- Keras 3 ---------------------------------------------------------------------------------
    def _read_keras3(self, parts, config) -> None:
        """``parts``: ``(label, datasets, groups)`` per HDF5 file, in the order to list them."""
        owners = _keras3_config_paths(config) if config else {}
        collected: List[Tuple[Tuple, _Var]] = []
        group_first: Dict[Tuple[int, str], Optional[int]] = {}
        for si, (label, datasets, groups) in enumerate(parts):
            by_group: Dict[str, List[Tuple[str, Any]]] = {}
            for where, dset in datasets.items():
                head, _, leaf = where.rpartition("/")
                if head != "vars" and not head.endswith("/vars"):
                    raise UnsupportedError(f"dataset {where!r} is not in a Keras 3 vars group", path=label,
                                           hint="this is not a Keras 3 weights file")
                by_group.setdefault(head, []).append((leaf, dset))
            for head, members in by_group.items():
                owner = head[: -len("/vars")] if head != "vars" else ""
                members.sort(key=lambda m: (not m[0].isdigit(), int(m[0]) if m[0].isdigit() else 0, m[0]))
                offsets = [_offset(d) for _, d in members]
                first = min((o for o in offsets if o is not None), default=None)
                readable_prefix = _keras3_readable(owner, groups, owners)
                cfg_path = _longest_prefix(owner, owners)
                entry = owners.get(cfg_path) if cfg_path is not None else None
                snake = _owner_snake(owner, groups, owners)
                layer_cfg = entry.get("config") if isinstance(entry, dict) and isinstance(entry.get("config"), dict) else None
                names = keras3_variable_names(snake, layer_cfg if cfg_path == owner or owner.endswith("/cell") else None,
                                              len(members)) if snake else None
                role, reason = _keras3_role(owner)
                # the layer is the model's (an RNN, a Bidirectional), not its cell or wrapped copies,
                # as in a Keras 2 .h5: same layer, class and config whichever format holds the model
                layer_owner = _model_layer(owner)
                layer_name = _keras3_readable(layer_owner, groups, owners) if layer_owner != owner else readable_prefix
                layer_path = _longest_prefix(layer_owner, owners)
                layer_entry = owners.get(layer_path) if layer_path is not None else None
                for i, (leaf, dset) in enumerate(members):
                    key = f"{head}/{leaf}"
                    if key in self._stores:
                        raise CorruptCheckpointError(f"variable {key!r} is in two shards", path=label)
                    var_name = names[i] if names else leaf
                    readable = f"{readable_prefix}/{var_name}" if readable_prefix else (var_name if names else None)
                    v = self._var(key, dset, key, readable if role == "inference" or names else None, role, reason)
                    v.layer = layer_name or None
                    if layer_entry is not None:
                        v.layer_class = layer_entry.get("class_name")
                        v.layer_config = _trimmed(layer_entry.get("config"))
                    collected.append(((si, head), v))
                group_first[(si, head)] = first
        # Keras writes a model's layers in order, but a layer's attributes alphabetically
        # (backward_layer before forward_layer): order the top-level layers by where their data
        # lies, and the parts of one layer as Keras lists its weights (forward before backward)
        top_first: Dict[Tuple[int, str], float] = {}
        for (si, head), first in group_first.items():
            top = (si, _top_layer(head))
            if first is not None:
                top_first[top] = min(top_first.get(top, first), first)

        def order(item):
            si, head = item[0]
            first = group_first[(si, head)]
            top = _top_layer(head)
            rest = head[len(top):]
            return (si, top_first.get((si, top), float("inf")), top, "/backward_layer" in rest,
                    first if first is not None else float("inf"), head)

        collected.sort(key=order)  # stable: a group's variables keep their index order
        self._publish([v for _, v in collected])

    def _read_npz(self, z: SafeZip, label: str, config) -> None:
        raise UnsupportedError("the .keras archive stores its weights as model.weights.npz, whose entries Keras "
                               "writes as pickled Python objects; tf2pt never unpickles", path=label,
                               hint="re-save with Keras' default weights format (model.weights.h5)")

    # -- shared ----------------------------------------------------------------------------------
    def _var(self, key, dset, where, readable, role, reason) -> _Var:
        v = _Var()
        v.name = key
        v.store = dset
        v.where = where
        dt = dset.dtype
        name = _NP_TO_NAME.get(dt.newbyteorder("=").name if dt.byteorder in "<>" else dt.name)
        if name is None:
            raise UnsupportedError(f"dataset {where!r} has dtype {dt}, which tf2pt does not read", path=self.path)
        v.dtype = name
        v.shape = tuple(int(s) for s in (dset.shape or ()))
        n = 1
        for s in v.shape:
            n *= s
        v.nbytes = n * dtypes.BY_NAME[name].itemsize
        v.role, v.reason, v.readable = role, reason, readable
        v.slot_of = v.slot_name = v.layer = v.layer_class = v.layer_config = None
        return v

    def _publish(self, vars_: List[_Var]) -> None:
        for i, v in enumerate(vars_):
            if v.name in self.variables:
                raise CorruptCheckpointError(f"variable {v.name!r} is listed twice", path=self.path)
            self._stores[v.name] = (v.store, v.where)
            self.variables[v.name] = VariableInfo(
                name=v.name, dtype=v.dtype, shape=v.shape, nbytes=v.nbytes, role=v.role, role_reason=v.reason,
                readable_name=v.readable, slot_of=v.slot_of, slot_name=v.slot_name, layer=v.layer,
                layer_class=v.layer_class, layer_config=v.layer_config, order=i)

    def read(self, name: str, check_crc: bool = True) -> np.ndarray:
        try:
            dset, where = self._stores[name]
        except KeyError:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.path) from None
        a = _h5safe.read_dataset(dset, where, self.path)
        if a.shape != self.variables[name].shape:
            raise CorruptCheckpointError(f"dataset {where!r} read as shape {list(a.shape)}", path=self.path)
        return a

    def close(self) -> None:
        while self._open:
            obj = self._open.pop()
            try:
                obj.close()
            except Exception:  # closing is best effort
                pass


def _offset(dset) -> Optional[int]:
    try:
        return dset.id.get_offset()
    except Exception:  # chunked or unallocated data has no single offset
        return None


def _keras2_slot(readable: str, model_names) -> Tuple[Optional[str], Optional[str]]:
    """``Adam/m/conv2d/kernel`` (Keras 2.11+) or ``Adam/conv2d/kernel/m`` (legacy) -> (variable, slot)."""
    parts = readable.split("/")
    for start in (2, 1):
        if len(parts) > start and "/".join(parts[start:]) in model_names:
            return "/".join(parts[start:]), parts[start - 1]
    for start in (1, 2):
        if len(parts) > start + 1 and "/".join(parts[start:-1]) in model_names:
            return "/".join(parts[start:-1]), parts[-1]
    if len(parts) == 2:  # Keras 3: adam/<variable path with / as _>_<slot> (adam/head_dense_kernel_momentum)
        flat = {n.replace("/", "_"): n for n in model_names}
        head, sep, slot = parts[1].rpartition("_")
        while sep:
            if head in flat:
                return flat[head], slot
            head, sep, rest = head.rpartition("_")
            slot = f"{rest}_{slot}"
    return None, None


def _model_layer(owner: str) -> str:
    """The group of the model layer that owns ``owner``'s variables: an RNN's ``cell`` and a
    Bidirectional's ``forward_layer`` / ``backward_layer`` (and their cells) belong to the RNN
    or the Bidirectional (``layers/bidirectional`` of ``layers/bidirectional/forward_layer/cell``)."""
    while True:
        head, _, last = owner.rpartition("/")
        if not head or last not in ("cell", "forward_layer", "backward_layer"):
            return owner
        owner = head


def _top_layer(head: str) -> str:
    """The outermost layer's group of a ``vars`` group (``layers/bidirectional`` of
    ``layers/bidirectional/forward_layer/cell/vars``; nested models count as layers)."""
    parts = head.split("/")
    if len(parts) >= 2 and parts[0] == "layers":
        return "/".join(parts[:2])
    return parts[0]


def _keras3_role(owner: str) -> Tuple[str, str]:
    parts = owner.split("/") if owner else []
    if parts[:1] == ["optimizer"]:
        return "training", "optimizer variable"
    if parts[:1] and parts[0] in ("metrics", "compile_metrics", "loss", "compile_loss", "_metrics"):
        return "training", "Keras metric"
    if any(p == "seed_generator" or p.startswith("seed_generator_") for p in parts):
        return "training", "random seed state (SeedGenerator)"
    return "inference", "model variable"


_CELLS = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}


def _cell_name(owner: str, owners: Dict[str, dict]) -> Optional[str]:
    """The cell's snake-case class for an RNN's ``cell`` attribute, from the RNN's class."""
    parent = owner.rpartition("/")[0]
    entry = owners.get(parent)
    if isinstance(entry, dict) and entry.get("class_name") in _CELLS:
        return _CELLS[entry["class_name"]]
    snake = _COUNTER.sub("", parent.rsplit("/", 1)[-1]) if parent else ""
    return f"{snake}_cell" if snake in ("lstm", "gru", "simple_rnn") else None


def _keras3_readable(owner: str, groups, owners: Dict[str, dict]) -> Optional[str]:
    """The layer path of a Keras 3 ``vars`` group's owner: the ``name`` attribute Keras 3.9+
    writes on each ``vars`` group, else the name in config.json, else the group's own name (the
    model's own name left out)."""
    if not owner:
        return None
    parts = owner.split("/")
    names = []
    for i in range(len(parts)):
        if parts[i] == "layers":
            continue
        prefix = "/".join(parts[: i + 1])
        vg = groups.get(f"{prefix}/vars")
        name = _attr_text(vg, "name") if vg is not None else None
        if not name and prefix in owners:
            name = _entry_name(owners[prefix])
        if not name and parts[i] == "cell":
            name = _cell_name(prefix, owners)
        names.append(name or parts[i])
    return "/".join(names) or None


def _owner_snake(owner: str, groups, owners: Dict[str, dict]) -> Optional[str]:
    if not owner:
        return None
    entry = owners.get(owner)
    if isinstance(entry, dict) and isinstance(entry.get("class_name"), str):
        return snake_case(entry["class_name"])
    last = owner.rsplit("/", 1)[-1]
    if last == "cell":
        vg = groups.get(f"{owner}/vars")
        name = _attr_text(vg, "name") if vg is not None else None
        return _COUNTER.sub("", name) if name else _cell_name(owner, owners)
    return _COUNTER.sub("", last)


def _longest_prefix(owner: str, owners: Dict[str, dict]) -> Optional[str]:
    p = owner
    while p:
        if p in owners:
            return p
        p = p.rpartition("/")[0]
    return None


def _keras3_config_paths(config, base: str = "") -> Dict[str, dict]:
    """``{group path: layer config entry}``: Keras 3 names each layer's group after its class
    (snake case, ``_N`` for the N-th repeat), in the model's layer order."""
    out: Dict[str, dict] = {}
    counts: Dict[str, int] = {}
    for entry in _layer_entries(config):
        cls = entry.get("class_name")
        if not isinstance(cls, str):
            continue
        snake = snake_case(cls)
        n = counts.get(snake, -1) + 1
        counts[snake] = n
        path = f"{base}layers/{snake}" + (f"_{n}" if n else "")
        out[path] = entry
        cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        if _layer_entries(entry):
            out.update(_keras3_config_paths(entry, f"{path}/"))
        for attr, key in (("forward_layer", "layer"), ("backward_layer", "backward_layer")):
            sub = cfg.get(key) or (cfg.get("layer") if attr == "backward_layer" else None)
            if isinstance(sub, dict) and cls == "Bidirectional" and isinstance(sub.get("config"), dict):
                # Bidirectional renames its two copies forward_<name> and backward_<name>
                side = attr.split("_")[0] + "_"
                name = sub["config"].get("name") or ""
                out[f"{path}/{attr}"] = dict(sub, config=dict(sub["config"], name=name if name.startswith(side)
                                                             else side + name))
        if cls not in ("Bidirectional",) and isinstance(cfg.get("layer"), dict):  # TimeDistributed & co
            out[f"{path}/layer"] = cfg["layer"]
    return out

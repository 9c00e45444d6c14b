"""Matching TF layers to torch modules: by kind, by exact shape after the layout transform, by
order within each kind (graph order against execution order), with names as a hint only.

A module's shapes fix the TF shapes that can fill it (the transform is the module kind's), so
every module fits at most one TF *signature* (kind and shapes). Matching therefore splits into
one class per signature: its TF layers, in TF order, pair up with the modules that fit them, in
the model's order. Every TF layer and every module with state must end up in a pair, or nothing
is proposed and :class:`~tf2pt.errors.NoCorrespondenceError` names the first TF layer (in TF
order) without a counterpart and the model's next unmatched module. Names (token overlap after
stripping the common scope) are only a hint: where a class has more fitting modules than TF
layers, they say which modules to leave out, so that the message points at the right one.

A pick is a *tie* when another TF layer of the same kind has the very same shapes: shape alone
could not tell them apart, order did (or running both frameworks did; see :mod:`.ties`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import NoCorrespondenceError
from ..transforms import get_transform
from .kinds import TORCH_KINDS, describe_shapes
from .tflayers import TFLayer
from .torchmodules import TorchModule


@dataclass
class Pair:
    tf: TFLayer
    module: TorchModule
    rows: List[Tuple[str, str, str]]  # (TF variable, torch key, transform)
    fills: List[Tuple[str, object, str]]  # (torch key, value, reason)
    #: the other modules this TF layer could have gone to by shape alone (empty: shape decided)
    tie: List[str] = field(default_factory=list)
    decided_by: str = "shape"  # "shape", "order", or "running"
    #: for ties settled by running: module path -> max abs error of this layer's output there
    evidence: Dict[str, float] = field(default_factory=dict)

    @property
    def ambiguous(self) -> bool:
        return bool(self.tie) and self.decided_by == "order"


def compatible(layer: TFLayer, module: TorchModule):
    """``(rows, fills)`` when ``module`` can hold ``layer`` exactly, else ``None``."""
    if module.kind is None or layer.kind is None:
        return None
    tk = TORCH_KINDS[module.kind]
    if tk.tf_kind != layer.kind:
        return None
    rows, fills, used = [], [], set()
    for local, shape in module.keys.items():
        if local in tk.params:
            role = tk.params[local]
            if role not in layer.variables:
                return None
            transform = tk.transform(role, layer.shapes[role], layer.layout, key=local,
                                     flatten=module.flatten if layer.kind == "dense" else None)
            try:
                out = get_transform(transform).out_shape(layer.shapes[role])
            except ValueError:
                return None
            if tuple(out) != tuple(shape):
                return None
            rows.append((layer.variables[role], module.key(local), transform))
            used.add(role)
        elif local in tk.fills:
            value, reason = tk.fills[local]
            fills.append((module.key(local), value, reason))
        else:
            return None
    if used != set(layer.variables):
        return None
    if layer.kind == "depthwise" and module.groups is not None and module.groups != layer.shapes["depthwise_kernel"][-2]:
        return None  # [in * multiplier, 1, ...] fits several (in, multiplier): the groups say which
    return rows, fills


def _tokens(text: str) -> set:
    parts = re.split(r"[^A-Za-z0-9]+|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", text.lower())
    return {p for p in parts if p}


def name_similarity(tf_scope: str, torch_path: str, strip: str = "") -> float:
    """Token overlap (Jaccard) of a TF scope (with the common scope stripped) and a module path."""
    a = _tokens(tf_scope[len(strip):] if strip and tf_scope.startswith(strip) else tf_scope)
    b = _tokens(torch_path)
    return len(a & b) / len(a | b) if a | b else 0.0


def tf_words(layer: TFLayer) -> str:
    return describe_shapes(layer.kind, layer.shapes)


def torch_words(module: TorchModule) -> str:
    if module.kind is None:
        return f"{module.cls} with " + ", ".join(f"{k} {list(s)}" for k, s in module.keys.items())
    words = describe_shapes(module.kind, module.keys, torch_layout=True)
    if module.kind == "depthwise" and module.groups:  # the weight [out, 1, ...] does not say the input channels
        words = words.replace(", 1->", f", {module.groups}->", 1)
    return words


def match(layers: List[TFLayer], modules: List[TorchModule], unknown_tf: Sequence[str], checkpoint,
          strip: str = "") -> List[Pair]:
    """Pair every TF layer with one module, or raise :class:`NoCorrespondenceError`."""
    where = getattr(checkpoint, "path", None)
    if unknown_tf:
        name = unknown_tf[0]
        info = checkpoint.variables[name]
        more = f" (and {len(unknown_tf) - 1} more)" if len(unknown_tf) > 1 else ""
        raise NoCorrespondenceError(
            f"TF variable {name} {list(info.shape)} belongs to no layer kind tf2pt can match{more}",
            path=where, hint="write the mapping by hand for it (docs/mappings.md), or extend tf2pt.automap.kinds")
    strange = [m for m in modules if m.kind is None]
    if strange:
        m = min(strange, key=lambda m: m.order)
        raise NoCorrespondenceError(
            f"the model's module {m.path or '(root)'} ({torch_words(m)}) is of a kind tf2pt cannot match",
            path=where, hint="tf2pt matches convolutions, linear, batch- and layer-norm, PReLU, embedding and one-layer "
                 "LSTM/GRU/RNN modules; write the mapping by hand")
    # Shapes after the transform are fixed by the module, so a module fits at most one TF
    # signature (kind + shapes): matching splits into one class per signature, where the TF
    # layers (in TF order) and the modules that fit them (in torch order) pair up in order.
    pairs: List[Pair] = []
    matched_tf, matched_pt = set(), set()
    classes: Dict[Tuple, List[TFLayer]] = {}
    for layer in layers:
        classes.setdefault(layer.signature(), []).append(layer)
    ordered = sorted(modules, key=lambda m: m.order)
    for signature, tf_seq in classes.items():
        fits = [(m, compatible(tf_seq[0], m)) for m in ordered if id(m) not in matched_pt]
        fits = [(m, c) for m, c in fits if c is not None]
        if len(fits) > len(tf_seq) and strip is not None:
            # more modules than TF layers of this shape: names, as a hint, pick which ones
            fits = sorted(fits, key=lambda mc: -max(name_similarity(t.scope, mc[0].path, strip) for t in tf_seq))
            fits = sorted(fits[:len(tf_seq)], key=lambda mc: mc[0].order)
        for layer, (module, _) in zip(tf_seq, fits):
            rows, fills = compatible(layer, module)
            pairs.append(Pair(layer, module, rows, fills))
            matched_tf.add(id(layer))
            matched_pt.add(id(module))
    lonely_tf = [l for l in layers if id(l) not in matched_tf]
    lonely_pt = sorted((m for m in modules if id(m) not in matched_pt), key=lambda m: m.order)
    if lonely_tf:
        first = lonely_tf[0]
        same = [m for m in lonely_pt if TORCH_KINDS[m.kind].tf_kind == first.kind]
        nxt = (same or lonely_pt or [None])[0]
        tail = (f"the model's next unmatched module is {nxt.path} ({torch_words(nxt)})" if nxt is not None
                else "every module of the model is already matched")
        raise NoCorrespondenceError(f"TF layer {first.scope} ({tf_words(first)}) has no counterpart; {tail}",
                                    path=where, hint="the checkpoint and the model do not correspond; no mapping was written")
    if lonely_pt:
        m = lonely_pt[0]
        raise NoCorrespondenceError(
            f"the model's module {m.path} ({torch_words(m)}) has no counterpart in the checkpoint; every TF layer "
            "is already matched", path=where,
            hint="the checkpoint and the model do not correspond; no mapping was written")
    # ties: same kind, same shapes
    by_sig: Dict[Tuple, List[Pair]] = {}
    for p in pairs:
        by_sig.setdefault(p.tf.signature(), []).append(p)
    for group in by_sig.values():
        if len(group) > 1:
            for p in group:
                p.tie = [q.module.path for q in group if q is not p]
                p.decided_by = "order"
    pairs.sort(key=lambda p: p.tf.order)
    return pairs

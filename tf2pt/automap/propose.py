"""``propose_mapping``: a checkpoint and the user's model in, a reviewed-ready mapping file out."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .match import Pair, match
from .tflayers import (SPATIAL_KINDS, graph_channels_first, graph_io, is_keras, keras_layers, read_graph,
                       spatial_multiple, tf_layers)
from .torchmodules import build_model, execution_order, parse_model_kwargs, split_model_spec, torch_modules


@dataclass
class Proposal:
    """What ``tf2pt map`` found. :meth:`render` is the mapping file; :meth:`summary` the report."""

    checkpoint: str
    checkpoint_kind: str
    model: str
    model_args: List[Any]
    model_kwargs: Dict[str, Any]
    pairs: List[Pair]
    scope: str
    inference_variables: int
    roles: List[str]
    tf_order: str
    torch_order: str
    graph_io: Dict[str, Any] = field(default_factory=dict)
    spatial_multiple: int = 1
    notes: List[str] = field(default_factory=list)
    tie_check: Optional[str] = None  # how ties were settled by running, or why they were not
    in_channels: Optional[int] = None  # of the input the model ran on (verify prepares volumes with it)
    mapping_dir: Optional[str] = None  # where the file will be written (relative model paths)
    #: TF variable -> the name the file's rules match (a Keras file's readable names; else itself)
    rule_names: Dict[str, str] = field(default_factory=dict)
    framework: str = "TensorFlow"
    #: the input the model's forward ran on (shape; token ids below ``int_high`` where set)
    input_shape: Optional[List[int]] = None
    int_high: Optional[int] = None
    #: a Keras file that holds its model (``.keras``, a full-model ``.h5``): verify runs it
    #: through Keras itself, so the mapping needs no tensor names
    keras_model_file: bool = False

    def rule_name(self, tf_name: str) -> str:
        return self.rule_names.get(tf_name, tf_name)

    @property
    def layer_pairs(self) -> List[Pair]:
        """The pairs whose TF layer has a graph tensor (for ``verify --per-layer``)."""
        return [p for p in self.pairs if p.tf.tensors.get("output") and p.module.path]

    def layer_names(self) -> List[str]:
        """A name for each of :attr:`layer_pairs`, for ``verify --per-layer``: the TF scope with
        ``/`` as ``.`` (a reference file stores each layer as an archive member of that name)."""
        names: List[str] = []
        for i, p in enumerate(self.layer_pairs):
            name = re.sub(r"[^A-Za-z0-9_.\-]+", ".", p.tf.scope).strip(".") or f"layer{i}"
            while name in names:
                name += f"_{i}"
            names.append(name)
        return names

    @property
    def ties(self) -> List[Pair]:
        return [p for p in self.pairs if p.tie]

    @property
    def ambiguous(self) -> List[Pair]:
        return [p for p in self.pairs if p.ambiguous]

    def summary(self) -> str:
        keys = sum(len(p.rows) for p in self.pairs)
        fills = sum(len(p.fills) for p in self.pairs)
        lines = [f"tf2pt map: {self.checkpoint} -> {self.model}",
                 f"  TF order:     {self.tf_order}",
                 f"  torch order:  {self.torch_order}",
                 f"  matched:      {len(self.pairs)} TF layers -> {len(self.pairs)} modules "
                 f"({keys} variables -> keys, {fills} keys filled)"]
        settled = [p for p in self.ties if p.decided_by == "running"]
        if settled:
            lines.append(f"  ties settled by running both frameworks: {len(settled)}")
            for p in settled:
                others = ", ".join(f"{m} {e:.2e}" for m, e in p.evidence.items() if m != p.module.path)
                lines.append(f"    {p.tf.scope} -> {p.module.path} (error {p.evidence.get(p.module.path, 0):.2e}; "
                             + (f"others: {others})" if others else "the last candidate left)"))
        if self.ambiguous:
            lines.append(f"  ambiguous: {len(self.ambiguous)} picks shape alone could not decide, decided by order:")
            for p in self.ambiguous:
                lines.append(f"    {p.tf.scope} -> {p.module.path}  (same shape as {', '.join(p.tie[:3])}"
                             f"{' ...' if len(p.tie) > 3 else ''})")
        if self.tie_check:
            lines.append(f"  running check: {self.tie_check}")
        io = self.graph_io
        if io.get("input") and io.get("output"):
            lines.append(f"  verify facts: input {io['input']}, output {io['output']}")
        else:
            lines.append("  verify facts: not inferred (no graph with one input and one output); add a VerifySpec by hand")
        flat = [p for p in self.pairs if p.module.flatten_note]
        for p in flat:
            lines.append(f"  flatten: {p.module.path} {p.module.flatten_note}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def render(self) -> str:
        from .render import render

        return render(self)


def common_scope(names: Sequence[str]) -> str:
    parts = [n.split("/")[:-1] for n in names]
    if not parts:
        return ""
    prefix = parts[0]
    for p in parts[1:]:
        k = 0
        while k < min(len(prefix), len(p)) and prefix[k] == p[k]:
            k += 1
        prefix = prefix[:k]
    return "/".join(prefix) + "/" if prefix else ""


def _inputs_from_tf(layers, graph) -> List[List[int]]:
    """Input shapes to try, ``[1, C, 16, ...]``, from the TF layers with a kernel (their input
    channels and rank): the first one in graph order first; without a graph every distinct one."""
    out: List[List[int]] = []
    for layer in layers:
        kernel = layer.shapes.get("kernel") or layer.shapes.get("depthwise_kernel")
        if layer.kind == "embedding":
            shape = [1, 5]
        elif kernel is None:
            continue
        elif layer.kind in ("lstm", "gru", "gru_reset_before", "rnn"):
            shape = [1, 5, int(kernel[0])]
        elif layer.kind == "dense":
            shape = [1, int(kernel[0])]
        else:
            cin = kernel[-1] if layer.kind == "conv_transpose" else kernel[-2]
            shape = [1, int(cin)] + [16] * (len(kernel) - 2)
        if shape not in out:
            out.append(shape)
        if graph is not None or len(out) >= 8:
            break
    return out


def _keras_input(facts, layers) -> List[List[int]]:
    """The torch input for a Keras file's model input (``facts.input_shape``, no batch axis):
    channels moved first when the first layer is a convolution or a batch norm; free sizes
    16 (spatial) or 5 (time)."""
    dims = facts.input_shape
    if not dims:
        return []
    spatial = bool(layers) and layers[0].kind in SPATIAL_KINDS and len(dims) >= 2
    if spatial:
        if dims[-1] is None:
            return []
        return [[1, int(dims[-1])] + [16 if d is None else int(d) for d in dims[:-1]]]
    return [[1] + [5 if d is None else int(d) for d in dims]]


def _readable_names(ckpt) -> Dict[str, str]:
    """A Keras file's inference variables by their readable names, where every one has a
    distinct one (the rules then read ``head/dense/kernel``, not ``layers/sequential/...``)."""
    inference = {n: v.readable_name for n, v in ckpt.variables.items() if v.role == "inference"}
    names = list(inference.values())
    if not names or any(not r for r in names) or len(set(names)) != len(names):
        return {}
    stored = set(ckpt.variables)
    if any(r in stored and r != n for n, r in inference.items()):
        return {}
    return dict(inference)


def propose_mapping(checkpoint, model: str, model_kwargs=None, *, input_shape: Optional[Sequence[int]] = None,
                    run_ties: bool = True, mapping_dir: Optional[str] = None) -> Proposal:
    """Match ``checkpoint`` (a path or an open :class:`~tf2pt.read.Checkpoint`) to the torch model
    built by ``model`` (``"MODULE:FACTORY"``; ``MODULE`` an import path or a ``.py`` file) with
    ``model_kwargs`` (a dict, a list of positional arguments, or their JSON text).

    Returns a :class:`Proposal`; ``proposal.render()`` is the mapping file's text. Raises
    :class:`~tf2pt.errors.NoCorrespondenceError` when checkpoint and model do not correspond.
    With ``run_ties`` ties are settled by running the original graph in TensorFlow (a child
    process) where there is one and TF is installed; otherwise they are decided by order and
    flagged ambiguous.
    """
    from ..read import Checkpoint, open_checkpoint

    split_model_spec(model)
    args, kwargs = parse_model_kwargs(model_kwargs)
    own = not isinstance(checkpoint, Checkpoint)
    ckpt = open_checkpoint(checkpoint) if own else checkpoint
    try:
        keras = is_keras(ckpt)
        facts = None
        if keras:
            graph = None
            layers, unknown, facts = keras_layers(ckpt)
            rule_names = _readable_names(ckpt)
        else:
            graph = read_graph(ckpt)
            layers, unknown = tf_layers(ckpt, graph)
            rule_names = {}
        inference = [n for n, v in ckpt.variables.items() if v.role == "inference"]
        scope = common_scope([rule_names.get(n, n) for n in inference])
        torch_model = build_model(model, args, kwargs)
        modules = torch_modules(torch_model)
        exact = _keras_input(facts, layers) if facts is not None else []
        ids_first = (bool(layers) and layers[0].kind == "embedding") or bool(
            facts is not None and facts.input_dtype and facts.input_dtype.startswith(("int", "uint")))
        torch_order, guess, high = execution_order(torch_model, modules, input_shape, _inputs_from_tf(layers, graph),
                                                   exact=exact, ids_first=ids_first,
                                                   input_channels_first=not layers or layers[0].kind in SPATIAL_KINDS)
        if facts is not None:
            tf_order = facts.order
        else:
            tf_order = (f"graph order ({os.path.basename(graph.path)})" if graph is not None
                        else "natural sort of the names (no graph beside the checkpoint)")
        tf_flattens_cf = (not facts.flatten_channels_last) if facts is not None else (
            graph is not None and graph_channels_first(graph))
        if tf_flattens_cf:  # the TF model flattens what nn.Flatten flattens: the kernel needs no permutation
            for m in modules:
                if m.flatten is not None:
                    m.flatten = None
                    m.flatten_note += ("; the TF model flattens channels-first too (Keras' Flatten(data_format="
                                       "'channels_first'), an NCHW graph): plain dense")
        pairs = match(layers, modules, unknown, ckpt, strip=scope)
        proposal = Proposal(
            checkpoint=str(ckpt.path), checkpoint_kind=ckpt.kind, model=model, model_args=args, model_kwargs=kwargs,
            pairs=pairs, scope=scope, inference_variables=len(inference),
            roles=sorted({v.role for v in ckpt.variables.values()}), tf_order=tf_order, torch_order=torch_order,
            graph_io=graph_io(graph) if graph is not None else {},
            spatial_multiple=spatial_multiple(graph) if graph is not None else 1, mapping_dir=mapping_dir,
            in_channels=int(guess[1]) if guess and len(guess) > 2 and layers and layers[0].kind in SPATIAL_KINDS
            else None, rule_names=rule_names,
            framework="Keras" if keras else ("TensorFlow frozen GraphDef" if ckpt.kind == "graphdef" else "TensorFlow"),
            input_shape=list(guess) if guess else None, int_high=high,
            keras_model_file=keras and getattr(ckpt, "model_config", None) is not None)
        if facts is not None:
            proposal.notes.extend(facts.notes)
        if not torch_order.startswith("execution"):
            proposal.notes.append("the model's order is its registration order: check the ambiguous picks")
            if any(p.tf.kind == "dense" for p in pairs):
                proposal.notes.append("no forward ran, so no Linear was checked for reading a flattened feature "
                                      "map (TF flattens channels-last): give --input-shape")
        if run_ties and proposal.ties:
            from .ties import settle_ties

            settle_ties(proposal, ckpt, graph, torch_model, guess)
        elif proposal.ties:
            proposal.tie_check = "not run (asked not to)"
        return proposal
    finally:
        if own:
            ckpt.close()

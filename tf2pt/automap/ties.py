"""Settling ties by running both frameworks.

Where the checkpoint has a graph TensorFlow can run (a ``.meta`` beside a bundle, a frozen
``.pb``) and TensorFlow is installed, the graph runs once on a small random input in a child
process (:mod:`.tfrun`), fetching the output tensor of every tied TF layer (the op that reads
its kernel, or the ``BiasAdd`` after it; a fused batch norm's op). Then, in TF order, each
tied TF layer is tried in each still-open candidate module: the model is loaded with the proposal so far, that layer's
weights put into the candidate (the candidate's own layer moved to the layer's module), and
the candidate's output is compared with TF's. The candidate with the smallest error wins when
that error is small (``1e-3`` of TF's output range); the errors of all candidates are the
evidence, kept in the report and the file. A layer whose TF tensor cannot be compared (no
graph tensor, or a different shape, as inside NiftyNet's ``space_to_batch`` dilation) stays
decided by order and marked ambiguous.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np

from ..transforms import get_transform

REL_TOLERANCE = 1e-3
TIE_SIZE = 8  # spatial size of the tie-settling input (rounded up to the graph's size multiple)


class _Stop(Exception):
    """Raised by the capturing hook: the rest of the forward is not needed."""


def _input_shape(proposal, graph_io, model_input: Optional[List[int]]) -> Optional[List[int]]:
    """``(1, C, *spatial)`` for both sides: the graph's static size where it has one, else the
    torch shape rounded up to the graph's size multiple."""
    if not model_input or len(model_input) < 2:
        return None
    shape = list(model_input)
    if len(shape) > 2:
        if graph_io.get("size") and len(graph_io["size"]) == len(shape) - 2:
            shape[2:] = list(graph_io["size"])
        else:
            m = max(1, proposal.spatial_multiple)
            # small: every trial is a forward (stopped at the candidate's output)
            shape[2:] = [max(TIE_SIZE, m) + (-max(TIE_SIZE, m)) % m for _ in shape[2:]]
    return shape


def settle_ties(proposal, checkpoint, graph, model, input_shape=None) -> None:
    ties = [p for p in proposal.pairs if p.tie]
    if graph is None:
        proposal.tie_check = ("a Keras file: ties decided by the model's layer order" if proposal.framework == "Keras"
                              else "no graph beside the checkpoint to run: ties decided by order")
        return
    io = proposal.graph_io
    if not io.get("input"):
        proposal.tie_check = "the graph's input tensor could not be determined: ties decided by order"
        return
    if importlib.util.find_spec("tensorflow") is None:
        proposal.tie_check = "TensorFlow is not installed (pip install 'tf2pt[tf]'): ties decided by order"
        return
    comparable = [p for p in ties if p.tf.tensors.get("output")]
    if not comparable:
        proposal.tie_check = "no tied layer has a graph tensor to compare: ties decided by order"
        return
    from .torchmodules import _guess_input, torch_modules

    shape = _input_shape(proposal, io, list(input_shape) if input_shape else _guess_input(model, torch_modules(model)))
    if shape is None:
        proposal.tie_check = "no input shape for running both sides (give --input-shape): ties decided by order"
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)  # (1, C, ...) channels-first
    x_tf = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim > 2 else x
    names = [p.tf.tensors["output"] for p in comparable]
    try:
        tf_out = _run_tf(proposal, checkpoint, graph, io, x_tf, names)
    except RuntimeError as exc:
        proposal.tie_check = f"running the TF graph failed ({exc}): ties decided by order"
        return
    settled = _settle(proposal, checkpoint, model, x, comparable, tf_out)
    left = sum(1 for p in ties if p.decided_by == "order")
    proposal.tie_check = (f"ran the TF graph and the model on an input of shape {shape}: {settled} tied layers "
                          f"settled by their activations; {left} left decided by order")


def _run_tf(proposal, checkpoint, graph, io, x_tf, names) -> Dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="tf2pt-map-") as tmp:
        np.save(os.path.join(tmp, "x.npy"), x_tf)
        request = {"kind": graph.kind, "graph": graph.path, "prefix": getattr(checkpoint, "prefix", None),
                   "input": io["input"], "feeds": io.get("feeds", {}), "fetch": names,
                   "x": os.path.join(tmp, "x.npy"), "out": os.path.join(tmp, "out.npz")}
        with open(os.path.join(tmp, "request.json"), "w") as fh:
            json.dump(request, fh)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
                   CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([sys.executable, "-m", "tf2pt.automap.tfrun", os.path.join(tmp, "request.json")],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            raise RuntimeError((lines[-1] if lines else f"exit code {proc.returncode}")[:300])
        with np.load(os.path.join(tmp, "out.npz"), allow_pickle=False) as data:
            return {name: data[f"t{i}"] for i, name in enumerate(names) if f"t{i}" in data.files}


def _settle(proposal, checkpoint, model, x, comparable, tf_out) -> int:
    import torch

    cache: Dict[tuple, np.ndarray] = {}

    def value(tf_name, transform):
        if (tf_name, transform) not in cache:
            cache[(tf_name, transform)] = get_transform(transform)(checkpoint.read(tf_name))
        return cache[(tf_name, transform)]

    # assignment: TF layer scope -> pair; the pair's module can change while ties are settled
    named = dict(model.named_modules())
    groups: Dict[tuple, list] = {}
    for p in proposal.pairs:
        if p.tie:
            groups.setdefault(p.tf.signature(), []).append(p)

    def load_all():
        state = model.state_dict()
        with torch.no_grad():
            for p in proposal.pairs:
                for tf_name, key, transform in p.rows:
                    state[key].copy_(torch.from_numpy(np.array(value(tf_name, transform))))

    def module_output(path):
        """The output of module ``path`` on ``x`` with the weights loaded now (the forward stops there)."""
        captured = {}

        def hook(_m, _i, out):
            captured["out"] = out.detach().numpy()
            raise _Stop

        handle = named[path].register_forward_hook(hook)
        try:
            with torch.no_grad():
                model(inp)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured.get("out")

    was_training = model.training
    model.eval()
    settled = 0
    inp = torch.from_numpy(x)
    try:
        # one forward to learn the shape of every tied module's output
        shapes, handles = {}, []
        def shape_hook(path):
            def hook(_m, _i, out):  # returns None: the output goes on unchanged
                shapes.setdefault(path, tuple(out.shape))

            return hook

        for p in comparable:
            handles.append(named[p.module.path].register_forward_hook(shape_hook(p.module.path)))
        try:
            with torch.no_grad():
                model(inp)
        finally:
            for h in handles:
                h.remove()
        for p in sorted(comparable, key=lambda p: p.tf.order):
            target = tf_out.get(p.tf.tensors["output"])
            if target is None or target.dtype.kind != "f":
                continue
            target = np.moveaxis(target, -1, 1) if target.ndim > 2 else target
            if tuple(target.shape) != shapes.get(p.module.path):
                continue  # TF's tensor is not this module's output (e.g. inside space_to_batch)
            span = float(target.max() - target.min()) or 1.0
            group = groups[p.tf.signature()]
            open_pairs = [q for q in group if q.decided_by != "running" or q is p]
            errors: Dict[str, float] = {}
            for q in open_pairs:  # try p's layer in q's module
                _swap(p, q)
                load_all()
                out = module_output(p.module.path)
                errors[p.module.path] = (float(np.abs(out - target).max()) if out is not None and out.shape == target.shape
                                         else float("inf"))
                _swap(p, q)  # back
            best = min(errors, key=errors.get)
            if errors[best] / span > REL_TOLERANCE:
                continue  # no candidate reproduces TF here: order stands
            q = next(q for q in open_pairs if q.module.path == best)
            _swap(p, q)
            p.decided_by = "running"
            p.evidence = dict(sorted(errors.items(), key=lambda kv: kv[1]))
            settled += 1
    finally:
        model.train(was_training)
    return settled


def _swap(p, q) -> None:
    """Exchange the modules of two tied pairs (their rows' keys follow the modules)."""
    if p is q:
        return
    p.module, q.module = q.module, p.module
    p_keys = [key for _, key, _ in p.rows]
    q_keys = [key for _, key, _ in q.rows]
    p.rows = [(tf, k, t) for (tf, _, t), k in zip(p.rows, q_keys)]
    q.rows = [(tf, k, t) for (tf, _, t), k in zip(q.rows, p_keys)]
    p.fills, q.fills = q.fills, p.fills

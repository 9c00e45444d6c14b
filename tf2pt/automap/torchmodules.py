"""The torch side of matching: the user's model, its state grouped into modules, in execution order.

Execution order comes from forward pre-hooks on a small input (``input_shape`` or one inferred
from the first convolution or linear layer, or a Keras file's own input; integer ids below
``num_embeddings`` for a model with an ``nn.Embedding``); where no forward runs, registration
order stands in and the report says so.

The same forward tells which ``nn.Linear`` reads a flattened feature map, and in which order
(:func:`flatten_orders`): TF flattens channels-last, torch's ``nn.Flatten`` channels-first, so
such a Linear takes ``dense_after_flatten:HxWxC``, not ``dense``; both have the same shape.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import InputError, MappingError
from .kinds import TORCH_KINDS, Shape, classify_torch


@dataclass
class TorchModule:
    path: str
    kind: Optional[str]
    cls: str
    keys: Dict[str, Shape]        # local key -> shape (the module's own state_dict entries)
    order: float
    registration: int
    ran: bool = False
    #: a Linear reading a channels-first map flattened: the map's TF (channels-last) shape
    flatten: Optional[Tuple[int, ...]] = None
    #: how the flatten order was found, for the report
    flatten_note: Optional[str] = None
    #: a convolution's ``groups`` (a depthwise kernel's shape after the transform does not say
    #: how many input channels share it: ``[6, 1, 3, 3]`` is 3 channels x 2 or 6 x 1)
    groups: Optional[int] = None

    def key(self, local: str) -> str:
        return f"{self.path}.{local}" if self.path else local


# ---------------------------------------------------------------------------------------------
# MODULE:FACTORY
# ---------------------------------------------------------------------------------------------


def split_model_spec(spec: str) -> Tuple[str, str]:
    module, sep, factory = spec.rpartition(":")
    if not sep or not module or not factory:
        raise InputError(f"--model {spec!r} is not MODULE:FACTORY",
                         hint="e.g. --model mypkg.models:UNet or --model path/to/model.py:build")
    return module, factory


def is_file_module(module: str) -> bool:
    return module.endswith(".py") or os.sep in module


def load_factory(spec: str, base: Optional[str] = None):
    """The callable named by ``MODULE:FACTORY``; ``MODULE`` is an import path or a ``.py`` file
    (relative paths are taken from ``base`` when given). The module is code the user named."""
    module_name, factory = split_model_spec(spec)
    if is_file_module(module_name):
        path = module_name if base is None or os.path.isabs(module_name) else os.path.join(base, module_name)
        if not os.path.isfile(path):
            raise InputError("model file not found", path=path, hint="--model path/to/model.py:FACTORY")
        name = "tf2pt_user_model_" + os.path.splitext(os.path.basename(path))[0]
        mod = sys.modules.get(name)
        if mod is None or os.path.abspath(getattr(mod, "__file__", "")) != os.path.abspath(path):
            loader_spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = mod
            try:
                loader_spec.loader.exec_module(mod)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise InputError(f"model file failed to load: {type(exc).__name__}: {exc}", path=path) from None
    else:
        try:
            mod = importlib.import_module(module_name)
        except ImportError as exc:
            raise InputError(f"cannot import model module {module_name!r}: {exc}",
                             hint="install it, or give a .py file: --model path/to/model.py:FACTORY") from None
    obj = mod
    for part in factory.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InputError(f"module {module_name!r} has no {factory!r}", hint="--model MODULE:FACTORY")
    if not callable(obj):
        raise InputError(f"{spec} is not callable")
    return obj


def parse_model_kwargs(value) -> Tuple[List[Any], Dict[str, Any]]:
    """``--model-kwargs``: a JSON object (keyword arguments), a list (positional ones), or
    ``{"args": [...], "kwargs": {...}}``; as JSON text or as the Python value."""
    if value is None or value == "":
        return [], {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"--model-kwargs is not JSON: {exc.msg}",
                             hint='e.g. --model-kwargs \'{"classes": 2}\'') from None
    if isinstance(value, (list, tuple)):
        return list(value), {}
        return value, {}
    if isinstance(value, dict) and set(value) <= {"args", "kwargs"} and value:
        return list(value.get("args", [])), dict(value.get("kwargs", {}))
    if isinstance(value, dict):
        return [], value
    raise InputError("--model-kwargs must be a JSON object or list")


def build_model(spec: str, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None):
    factory = load_factory(spec)
    try:
        model = factory(*args, **(kwargs or {}))
    except Exception as exc:
        raise InputError(f"building the model {spec} failed: {type(exc).__name__}: {exc}",
                         hint="check --model-kwargs") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# ---------------------------------------------------------------------------------------------
# modules and their order
# ---------------------------------------------------------------------------------------------


def torch_modules(model) -> List[TorchModule]:
    """Every module that holds state_dict entries of its own, in registration order."""
    named = dict(model.named_modules())
    by_path: Dict[str, Dict[str, Shape]] = {}
    for key, value in model.state_dict().items():
        path, _, local = key.rpartition(".")
        by_path.setdefault(path, {})[local] = tuple(value.shape)
    out = []
    for i, (path, keys) in enumerate(by_path.items()):
        module = named.get(path)
        kind = classify_torch(module) if module is not None else None
        out.append(TorchModule(path, kind, type(module).__name__ if module is not None else "?", keys, float(i), i,
                               groups=getattr(module, "groups", None) if kind in ("conv", "depthwise") else None))
    return out


def _guess_input(model, modules: List[TorchModule]) -> Optional[List[int]]:
    named = dict(model.named_modules())
    for m in sorted(modules, key=lambda m: m.registration):
        mod = named.get(m.path)
        if m.kind == "embedding":
            return [1, 5]
        if m.kind in ("conv", "depthwise", "conv_transpose"):
            rank = len(m.keys["weight"]) - 2
            cin = mod.in_channels
            return [1, cin] + [16] * rank
        if m.kind == "dense":
            return [1, mod.in_features]
    return None


def _recorder(first: Dict[str, int], path: str):
    def hook(_module, _inputs):  # returns None: the input goes through unchanged
        first.setdefault(path, len(first))

    return hook


def int_high(model, modules: List[TorchModule]) -> Optional[int]:
    """The fewest ``num_embeddings`` of the model's ``nn.Embedding`` modules (token ids below it
    fit every one), or ``None`` when it has none."""
    named = dict(model.named_modules())
    sizes = [int(named[m.path].num_embeddings) for m in modules if m.kind == "embedding"]
    return min(sizes) if sizes else None


def random_input(shape: Sequence[int], high: Optional[int], seed: Optional[int] = None):
    """A random float input of ``shape``, or integer ids in ``[0, high)`` when ``high`` is set."""
    import torch

    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if high:
        return torch.randint(0, high, tuple(shape), generator=gen)
    return torch.randn(*shape, generator=gen)


def execution_order(model, modules: List[TorchModule], input_shape: Optional[Sequence[int]] = None,
                    hints: Sequence[Sequence[int]] = (), exact: Sequence[Sequence[int]] = (), ids_first: bool = False,
                    input_channels_first: bool = True) -> Tuple[str, Optional[List[int]], Optional[int]]:
    """Set each module's ``order`` to when it first ran on a small input. Returns how the order
    was found (for the report), the input shape that ran and, for token ids, the bound they
    were drawn below. Tries ``input_shape`` when given, else the ``exact`` shapes (a Keras
    file's own input), then the ``hints`` (shapes read off the TF layers) and one inferred from
    the model's first layer, each at spatial size 16 and 32; a model with an ``nn.Embedding``
    is also tried on token ids (first, with ``ids_first``: the TF model takes integers).
    Modules that never ran keep their registration order after those that did; where no
    forward runs, registration order stands. Then :func:`flatten_orders` on the input that ran
    (``input_channels_first``: whether the model's input is a channels-first map, as for a TF
    model starting with a convolution, or in TF's layout, a sequence ``[N, T, F]`` say)."""
    import torch

    bound = int_high(model, modules)
    if input_shape:
        tried = [list(input_shape)]
    else:
        tried = [list(s) for s in exact]
        own = _guess_input(model, modules)
        for shape in list(hints) + ([own] if own else []):
            for size in (16, 32):
                candidate = list(shape[:2]) + [size] * (len(shape) - 2)
                if candidate not in tried:
                    tried.append(candidate)
    if not tried:
        return "registration order (no input shape could be inferred; give --input-shape)", None, None
    kinds = [None] if bound is None else ([bound, None] if ids_first else [None, bound])
    trials = [(shape, ids) for shape in tried for ids in kinds]
    named = dict(model.named_modules())
    first: Dict[str, int] = {}
    hooks = []
    for m in modules:
        mod = named.get(m.path)
        if mod is not None:
            hooks.append(mod.register_forward_pre_hook(_recorder(first, m.path)))
    was_training = model.training
    error, ran, high = None, None, None
    try:
        model.eval()
        for candidate, ids in trials:
            first.clear()
            try:
                with torch.no_grad():
                    model(random_input(candidate, ids))
                ran, high = candidate, ids
                break
            except Exception as exc:  # the model's own code; any failure means: no order from it
                text = str(exc).splitlines()[0][:200] if str(exc) else ""
                error = error or f"{type(exc).__name__}: {text}"
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if ran is None:
        return (f"registration order (no forward ran on {', '.join(map(str, tried[:4]))}"
                f"{' ...' if len(tried) > 4 else ''}: {error}; give --input-shape)"), None, None
    n = len(first)
    for m in modules:
        m.ran = m.path in first
        m.order = float(first[m.path]) if m.ran else float(n + m.registration)
    if any(m.kind == "dense" for m in modules):
        try:
            model.eval()
            flatten_orders(model, modules, ran, high, input_channels_first)
        finally:
            model.train(was_training)
    kind = f"token ids below {high}, " if high else ""
    return f"execution order (forward hooks on an input of {kind}shape {ran})", ran, high


# ---------------------------------------------------------------------------------------------
# which Linear reads a flattened feature map, and in which order
# ---------------------------------------------------------------------------------------------

def _channels_first_classes():
    from torch import nn
    from torch.nn.modules import batchnorm, conv, instancenorm, padding, pooling

    return (conv._ConvNd, batchnorm._BatchNorm, instancenorm._InstanceNorm, nn.GroupNorm, nn.Upsample,
            pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd, pooling._AdaptiveMaxPoolNd,
            nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, padding._ConstantPadNd, padding._ReflectionPadNd,
            padding._ReplicationPadNd, padding._CircularPadNd, nn.PixelShuffle)


def _elementwise_classes():
    from torch import nn

    return (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
            nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.PReLU,
            nn.Dropout, nn.AlphaDropout, nn.Identity)


def flatten_orders(model, modules: List[TorchModule], shape: Sequence[int], high: Optional[int],
                   input_channels_first: bool = True) -> None:
    """For every ``nn.Linear`` that ran on a 2-D input: whether it reads a feature map flattened,
    and how. The map is the latest tensor (a module's output, or the model's input) of rank 3
    or more with as many values per sample as the Linear has inputs; it is channels-first when
    the module that made it (through elementwise modules) is a convolution, a batch norm, a
    pooling, ... (a recurrent layer's or an embedding's ``[N, T, F]`` is not). Then one forward
    with that tensor replaced by its own positions (increasing values, so that a monotone
    activation in between keeps their order) shows the order the Linear reads them in:
    channels-first flatten (``nn.Flatten``, ``view``): the TF kernel needs
    ``dense_after_flatten`` with the map's channels-last shape; channels-last (a ``permute``
    before flattening, or a map that is channels-last anyway): ``dense``. Any other order is
    left alone and said in ``flatten_note``. The caller puts the model in eval mode."""
    import torch
    from torch import nn

    named = dict(model.named_modules())
    linears = {m.path: m for m in modules if m.kind == "dense" and isinstance(named.get(m.path), nn.Linear)}
    if not linears:
        return
    cf_classes, ew_classes = _channels_first_classes(), _elementwise_classes()
    stateful = {m.path for m in modules}
    events: List[Tuple[str, str, object]] = []  # ("out", path, (module, out shape)) / ("linear", path, in shape)
    hooks = []
    leaves = [(p, m) for p, m in named.items() if p and not list(m.children())]
    for path, mod in leaves:
        if path in linears:
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, inp, path=path: events.append(("linear", path, tuple(inp[0].shape))
                                                         if inp and torch.is_tensor(inp[0]) else None)))
        hooks.append(mod.register_forward_hook(
            lambda m, _i, out, path=path: events.append(("out", path, (m, tuple(out.shape)))
                                                       if torch.is_tensor(out) else None)))
    x = random_input(shape, high, seed=0)
    try:
        with torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 -- the model's own code: no flatten facts from it
        return
    finally:
        for h in hooks:
            h.remove()
    events = [e for e in events if e is not None]
    model_in = ("input", "", (None, tuple(x.shape))) if not high else None
    seen = set()
    for i, (what, path, info) in enumerate(events):
        if what != "linear" or path in seen or len(info) != 2:
            continue
        seen.add(path)
        features = info[1]
        before = [model_in] + events[:i] if model_in else events[:i]
        source = None
        for j in range(len(before) - 1, -1, -1):
            e = before[j]
            if e is None or e[0] == "linear":
                continue
            out_shape = e[2][1]
            if len(out_shape) >= 3 and _prod(out_shape[1:]) == features:
                source = j
                break
        if source is None:
            continue
        src_what, src_path, (src_mod, src_shape) = before[source]
        channels_first = _made_channels_first(before, source, cf_classes, ew_classes, input_channels_first)
        order = _read_order(model, named, src_path, path, x, src_shape)
        m = linears[path]
        where = "the model's input" if src_what == "input" else f"module {src_path}'s output"
        dims = tuple(int(d) for d in src_shape[1:])
        said = f"reads {where} {list(src_shape)} flattened"
        if dims[0] == 1 or _prod(dims[1:]) == 1:
            m.flatten_note = f"{said} (one channel or one position: either order is the same)"
        elif channels_first is None:
            m.flatten_note = f"{said}, but tf2pt cannot tell whether that map is channels-first"
        elif channels_first and order == "natural":
            m.flatten = dims[1:] + dims[:1]  # channels-first (C, *S) -> TF's (*S, C)
            m.flatten_note = (f"{said} channels-first (found by running the model): the TF kernel's rows are a "
                              f"channels-last {'x'.join(map(str, m.flatten))} map's")
            between = sorted({e[1] for e in before[source + 1:] if e is not None and e[0] == "out"
                              and e[1] in stateful})
            if between:
                m.flatten_note += (f"; module {', '.join(between)} (with weights) lies between, and its per-feature "
                                   "weights are mapped as they are, not in that order: check it with verify")
        elif (channels_first and order == "channels_last") or (not channels_first and order == "natural"):
            m.flatten_note = f"{said} channels-last, as TF does (found by running the model)"
        else:
            m.flatten_note = f"{said} in an order tf2pt cannot tell"


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _made_channels_first(events, index, cf_classes, ew_classes, input_channels_first: bool = True) -> Optional[bool]:
    """Whether the tensor of ``events[index]`` is a channels-first map: walk back through
    elementwise modules to the module that made it."""
    shape = events[index][2][1]
    for j in range(index, -1, -1):
        e = events[j]
        if e is None or e[0] == "linear":
            continue
        what, _, (mod, out_shape) = e
        if what == "input":
            return input_channels_first
        if isinstance(mod, cf_classes):
            return True
        if isinstance(mod, ew_classes) and out_shape == shape:
            continue
        return False
    return None


def _read_order(model, named, source: str, linear: str, x, shape) -> Optional[str]:
    """``"natural"`` when the Linear reads the source tensor in its own (row-major) order,
    ``"channels_last"`` when in the order of the tensor with its channel axis moved last;
    ``None`` otherwise. One forward: the source replaced by increasing positive values."""
    import torch

    n = _prod(shape[1:])
    pattern = (torch.arange(1, n + 1, dtype=torch.float32) / n).reshape(1, *shape[1:]).expand(*shape).contiguous()
    captured = {}

    def replace(_m, _i, _out):
        return pattern

    def grab(_m, inp):
        captured["x"] = inp[0].detach()
        raise _Stop

    handles = [named[linear].register_forward_pre_hook(grab)]
    inp = pattern if not source else x
    if source:
        handles.append(named[source].register_forward_hook(replace))
    try:
        with torch.no_grad():
            model(inp)
    except _Stop:
        pass
    except Exception:  # noqa: BLE001 -- the model's own code
        return None
    finally:
        for h in handles:
            h.remove()
    got = captured.get("x")
    if got is None or got.dim() != 2 or got.shape[1] != n:
        return None
    rank = torch.argsort(torch.argsort(got[0].double()))
    if len(torch.unique(got[0])) != n:
        return None
    natural = torch.arange(n)
    if torch.equal(rank, natural):
        return "natural"
    moved = natural.reshape(shape[1:]).movedim(0, -1).reshape(-1)
    if torch.equal(rank, moved):
        return "channels_last"
    return None


class _Stop(Exception):
    """Raised by a capturing hook: the rest of the forward is not needed."""

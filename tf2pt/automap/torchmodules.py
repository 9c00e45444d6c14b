"""The torch side of matching: the user's model, its state grouped into modules, in execution order.

Execution order comes from forward pre-hooks on a small input (``input_shape`` or one inferred
from the first convolution or linear layer); where no forward runs, registration order stands in
and the report says so.
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
        out.append(TorchModule(path, kind, type(module).__name__ if module is not None else "?", keys, float(i), i))
    return out


def _guess_input(model, modules: List[TorchModule]) -> Optional[List[int]]:
    named = dict(model.named_modules())
    for m in sorted(modules, key=lambda m: m.registration):
        mod = named.get(m.path)
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


def execution_order(model, modules: List[TorchModule], input_shape: Optional[Sequence[int]] = None,
                    hints: Sequence[Sequence[int]] = ()) -> Tuple[str, Optional[List[int]]]:
    """Set each module's ``order`` to when it first ran on a small input. Returns how the order
    was found (for the report) and the input shape that ran. Tries ``input_shape`` when given,
    else the ``hints`` (shapes read off the TF layers) and one inferred from the model's first
    layer, each at spatial size 16 and 32. Modules that never ran keep their registration order
    after those that did; where no forward runs, registration order stands."""
    import torch

    if input_shape:
        tried = [list(input_shape)]
    else:
        tried = []
        own = _guess_input(model, modules)
        for shape in list(hints) + ([own] if own else []):
            for size in (16, 32):
                candidate = list(shape[:2]) + [size] * (len(shape) - 2)
                if candidate not in tried:
                    tried.append(candidate)
    if not tried:
        return "registration order (no input shape could be inferred; give --input-shape)", None
    named = dict(model.named_modules())
    first: Dict[str, int] = {}
    hooks = []
    for m in modules:
        mod = named.get(m.path)
        if mod is not None:
            hooks.append(mod.register_forward_pre_hook(_recorder(first, m.path)))
    was_training = model.training
    error, ran = None, None
    try:
        model.eval()
        for candidate in tried:
            first.clear()
            try:
                with torch.no_grad():
                    model(torch.randn(*candidate))
                ran = candidate
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
                f"{' ...' if len(tried) > 4 else ''}: {error}; give --input-shape)"), None
    n = len(first)
    for m in modules:
        m.ran = m.path in first
        m.order = float(first[m.path]) if m.ran else float(n + m.registration)
    return f"execution order (forward hooks on an input of shape {ran})", ran

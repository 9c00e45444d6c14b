"""The PyTorch side of ``tf2pt verify``: the device, the forward pass, the versions."""

from __future__ import annotations

import platform
import time
from typing import Dict, Optional

import numpy as np

from .._version import __version__
from ..errors import InputError, MappingError


def pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to PyTorch", hint="use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"bad --device {device!r}: {exc}") from None


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _layer_hooks(model, layers: Optional[Dict[str, str]], captured: Dict[str, np.ndarray], batch: bool):
    """Forward hooks filling ``captured[layer]`` with the output of the module at each path
    (its first element when a module returns a tuple, as ``nn.LSTM`` does; the batch axis kept
    when ``batch``, else its first item); the hooks, for the caller to remove."""
    modules = dict(model.named_modules())
    hooks = []
    for layer, path in (layers or {}).items():
        if path not in modules:
            raise MappingError(f"--per-layer: the target model has no module {path!r} (layer {layer!r})")

        def hook(_m, _i, out, layer=layer):
            if batch and isinstance(out, (tuple, list)):
                out = out[0]
            captured[layer] = (out if batch else out[0]).detach().float().cpu().numpy()

        hooks.append(modules[path].register_forward_hook(hook))
    return hooks


def run_pytorch(model, x: np.ndarray, device, *, allow_tf32: bool = False, layers: Optional[Dict[str, str]] = None):
    """Forward ``x`` (C, D, H, W) through ``model`` in eval mode. Returns ``(output, layer outputs,
    info)`` as numpy, channels-first, batch axis dropped."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    captured: Dict[str, np.ndarray] = {}
    hooks = []
    try:
        model = model.to(device).eval()
        hooks = _layer_hooks(model, layers, captured, batch=False)
        inp = torch.from_numpy(np.ascontiguousarray(x[None])).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(inp)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        info = {"torch_forward_seconds": seconds}
        if device.type == "cuda":
            info["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out[0].float().cpu().numpy(), captured, info
    finally:
        for h in hooks:
            h.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def versions() -> Dict[str, str]:
    import torch

    return {"tf2pt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda": str(torch.version.cuda)}


def run_pytorch_inputs(model, inputs, device, *, allow_tf32: bool = False, layers: Optional[Dict[str, str]] = None,
                       captured: Optional[Dict[str, np.ndarray]] = None):
    """Forward several inputs (numpy, torch's layout, batch axis kept) through ``model`` in eval
    mode: ``model(*inputs)``. Returns ``(outputs, info)``: a list of numpy arrays (a tuple or
    list of tensors returned in order, a dict's values in its order, a single tensor as one).
    ``layers`` (``{layer: module path}``): their outputs, batch axis kept, go into ``captured``."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    hooks = []
    try:
        model = model.to(device).eval()
        hooks = _layer_hooks(model, layers, {} if captured is None else captured, batch=True)
        tensors = []
        for x in inputs:
            x = np.ascontiguousarray(x)
            if x.dtype.kind in "iu":
                x = x.astype(np.int64)  # torch's index type (embeddings, gathers)
            tensors.append(torch.from_numpy(x).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(*tensors)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        info = {"torch_forward_seconds": time.perf_counter() - start}
        if device.type == "cuda":
            info["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        if isinstance(out, dict):
            out = list(out.values())
        elif not isinstance(out, (list, tuple)):
            out = [out]
        arrays = []
        for o in out:
            if not isinstance(o, torch.Tensor):
                raise MappingError(f"the target model returned a {type(o).__name__}, not a tensor",
                                   hint="forward must return a tensor, or a tuple of tensors in the outputs' order")
            arrays.append(o.detach().cpu().numpy() if o.dtype in (torch.int64, torch.int32, torch.bool)
                          else o.detach().float().cpu().numpy())
        return arrays, info
    finally:
        for h in hooks:
            h.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

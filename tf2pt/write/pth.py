"""The ``.pth`` writer: ``torch.save`` of plain tensors, atomically.

``torch.save`` serialises one dict, so the whole state dict is in memory at once (peak about the
model size, plus torch's own buffers); ``.safetensors`` output is streamed instead.
"""

from __future__ import annotations

from typing import Any, Dict

from .atomic import atomic_output, deferred_signals


def save_pth(state_dict: Dict[str, Any], path, force: bool = False) -> None:
    """``torch.save`` of plain tensors: loads with ``torch.load(path, weights_only=True)``."""
    import torch

    # detach() turns Parameters into plain tensors, which weights_only loading accepts
    plain = {str(k): torch.as_tensor(v).detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "r+b") as fh, deferred_signals():  # torch.save would swallow Ctrl-C
            torch.save(plain, fh)

"""Verifying: run TensorFlow and PyTorch on one input and measure parity.

* :mod:`.run` -- :func:`verify` and :func:`save_reference` (orchestration, the report);
* :mod:`.tfside` -- the TF side (imports TensorFlow, never torch; a child process of verify);
* :mod:`.torchside` -- the PyTorch side (device, forward, versions);
* :mod:`.compare` -- errors, label agreement, Dice;
* :mod:`.reference` -- the saved TF side (``--save-reference`` / ``--reference``);
* :mod:`.volume` -- loading and preparing the input volume;
* :mod:`.figure` -- the parity figure.

The names below are imported lazily: the TF child imports :mod:`.tfside` without torch.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    "verify": "tf2pt.verify.run",
    "save_reference": "tf2pt.verify.run",
    "VerifyReport": "tf2pt.verify.run",
    "prepare_volume": "tf2pt.verify.run",
    "compare": "tf2pt.verify.compare",
    "Comparison": "tf2pt.verify.compare",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

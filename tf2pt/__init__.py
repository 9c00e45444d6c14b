"""tf2pt: TensorFlow checkpoints to PyTorch weights, correctly, provably, fast.

The top-level names are imported lazily so that reading a checkpoint never pays for torch,
pandas or TensorFlow unless it needs them.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_LAZY = {
    # reading
    "open_checkpoint": "tf2pt.reader",
    "Checkpoint": "tf2pt.reader",
    "VariableInfo": "tf2pt.reader",
    "inspect": "tf2pt.table",
    # mapping and converting
    "convert": "tf2pt.conversion",
    "build_model": "tf2pt.registry",
    "get_mapping": "tf2pt.registry",
    "list_mappings": "tf2pt.registry",
    "save": "tf2pt.writer",
    # errors
    "Tf2ptError": "tf2pt.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tf2pt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)

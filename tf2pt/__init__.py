"""tf2pt: TensorFlow checkpoints to PyTorch weights, correctly, provably, fast.

The top-level names are imported lazily so that reading a checkpoint never pays for torch,
pandas or TensorFlow unless it needs them.
"""

from __future__ import annotations

from ._lazy import lazy_attributes
from ._version import __version__

_LAZY = {
    # reading
    "open_checkpoint": "tf2pt.read",
    "Checkpoint": "tf2pt.read",
    "VariableInfo": "tf2pt.read",
    "inspect": "tf2pt.table",
    # mapping and converting
    "convert": "tf2pt.conversion",
    "build_model": "tf2pt.registry",
    "get_mapping": "tf2pt.registry",
    "list_mappings": "tf2pt.registry",
    "plan": "tf2pt.plan",
    "propose_mapping": "tf2pt.automap",
    "save": "tf2pt.write",
    # verifying
    "verify": "tf2pt.verify.run",
    # errors
    "Tf2ptError": "tf2pt.errors",
}

__all__ = ["__version__", *_LAZY]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

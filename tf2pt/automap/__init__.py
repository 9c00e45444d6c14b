"""``tf2pt map``: propose a mapping from a TF checkpoint into the user's own PyTorch model.

* :mod:`.kinds` -- layer kinds (TF roles, torch module families, transforms, fills): a table;
* :mod:`.tflayers` -- TF variables grouped into layers, in graph order (or natural sort); a
  Keras file's model layers in the model's order;
* :mod:`.torchmodules` -- the model's state grouped into modules, in execution order; which
  ``Linear`` reads a flattened map, and in which order;
* :mod:`.match` -- kind, exact shape, order; ties; the first point where the two part;
* :mod:`.ties` -- ties settled by running both frameworks where the graph can run;
* :mod:`.render` -- the proposal as an ordinary mapping file.

See docs/auto-mapping.md.
"""

from __future__ import annotations

from .propose import Proposal, propose_mapping
from .torchmodules import load_factory

__all__ = ["Proposal", "propose_mapping", "load_factory"]

"""Lazy package attributes: a name resolves to its module's attribute on first use, so importing a
package costs nothing until one of its names is used."""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple


def lazy_attributes(package: str, names: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``names`` map each name to its module."""
    import sys

    def __getattr__(name):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__

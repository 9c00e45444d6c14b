"""Find mappings: built-ins (``mappings/*.py``, installed as ``tf2pt.mappings``), plug-ins and
explicit files.

Mappings are code. tf2pt loads them only from three places, never from a checkpoint or from a
directory it happens to scan:

* built-ins shipped in ``tf2pt.mappings``;
* installed plug-ins that declare an entry point in the group ``tf2pt.mappings``
  (``[project.entry-points."tf2pt.mappings"] mynet = "mypkg.mynet:MAPPING"``);
* a file the user names explicitly: ``--mapping path/to/mynet.py`` (it must define ``MAPPING``).

Two mappings with the same name are an error, not a silent override: listing the mappings loads
them all and checks. Resolving one name imports just ``tf2pt.mappings.<name>`` where that module
defines it and no plug-in entry point bears the name (a fast start), else it loads them all.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Any, Dict, List, Optional

from .errors import MappingError, did_you_mean
from .mapping import Mapping

ENTRY_POINT_GROUP = "tf2pt.mappings"
_BUILTIN_PACKAGE = "tf2pt.mappings"

_cache: Optional[Dict[str, Mapping]] = None


def _mapping_from(obj, where: str) -> Mapping:
    if isinstance(obj, Mapping):
        mapping = obj
    else:
        mapping = getattr(obj, "MAPPING", None)
    if not isinstance(mapping, Mapping):
        raise MappingError(f"{where} does not define MAPPING = tf2pt.mapping.Mapping(...)")
    if not mapping.origin:
        object.__setattr__(mapping, "origin", where)
    return mapping


def _add(found: Dict[str, Mapping], mapping: Mapping) -> None:
    if mapping.name in found and found[mapping.name] is not mapping:
        raise MappingError(
            f"mapping name {mapping.name!r} is defined twice: by {found[mapping.name].origin} and by {mapping.origin}",
            hint="rename one of them",
        )
    found[mapping.name] = mapping


def _builtins() -> List[Mapping]:
    package = importlib.import_module(_BUILTIN_PACKAGE)
    out = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_BUILTIN_PACKAGE}.{info.name}")
        out.append(_mapping_from(module, f"built-in {_BUILTIN_PACKAGE}.{info.name}"))
    return out


def _plugins() -> List[Mapping]:
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"plug-in {ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not take the tool down
            raise MappingError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
        out.append(_mapping_from(obj, where))
    return out


def _plugins_declared() -> bool:
    """Whether any installed distribution declares a ``tf2pt.mappings`` entry point, from the
    ``entry_points.txt`` files on ``sys.path`` (importing importlib.metadata costs more than
    the rest of a small conversion's start; it is imported only where this says yes)."""
    header = f"[{ENTRY_POINT_GROUP}]"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(entry or ".", name, "entry_points.txt")) as fh:
                        if any(line.strip() == header for line in fh):
                            return True
                except OSError:
                    continue
    return False


def all_mappings(refresh: bool = False) -> Dict[str, Mapping]:
    """Built-ins and installed plug-ins, by name."""
    global _cache
    if _cache is None or refresh:
        found: Dict[str, Mapping] = {}
        for mapping in _builtins() + _plugins():
            _add(found, mapping)
        _cache = found
    return dict(_cache)


def load_file(path: str) -> Mapping:
    """Load the mapping defined by the Python file ``path`` (it runs the file: it is code)."""
    if not os.path.isfile(path):
        raise MappingError("mapping file not found", path=path, hint="pass a mapping name or an existing .py file")
    import hashlib

    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    return _mapping_from(_exec_file(path, f"tf2pt_user_mapping_{digest}"), path)


def _exec_file(path: str, module_name: str):
    """Run the Python file ``path`` as module ``module_name`` (it is code the user named)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MappingError("not a Python file", path=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except MappingError:
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise MappingError(f"mapping file failed to load: {type(exc).__name__}: {exc}", path=path) from None
    return module


def _looks_like_file(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or (os.altsep is not None and os.altsep in name)


def get_mapping(name_or_path) -> Mapping:
    """A mapping by name, or from a ``.py`` file, or a :class:`Mapping` passed through."""
    if isinstance(name_or_path, Mapping):
        return name_or_path
    name = os.fspath(name_or_path)
    if _looks_like_file(name):
        return load_file(name)
    if _cache is None:
        fast = _builtin_named(name)
        if fast is not None:
            return fast
    mappings = all_mappings()
    if name in mappings:
        return mappings[name]
    raise MappingError(f"unknown mapping {name!r}", hint=did_you_mean(name, list(mappings)))


def _builtin_named(name: str) -> Optional[Mapping]:
    """The built-in mapping ``name`` when its module has that name (``tf2pt.mappings.<name>``)
    and no plug-in is registered under it: one module imported instead of every mapping, the
    cheapest start for ``tf2pt convert -m NAME``. ``None``: look everywhere."""
    if not name.isidentifier() or name.startswith("_"):
        return None
    if importlib.util.find_spec(f"{_BUILTIN_PACKAGE}.{name}") is None:
        return None
    if _plugins_declared():
        from importlib.metadata import entry_points

        if any(ep.name == name for ep in entry_points(group=ENTRY_POINT_GROUP)):
            return None  # a plug-in claims the name too: the full scan reports the clash
    module = importlib.import_module(f"{_BUILTIN_PACKAGE}.{name}")
    mapping = _mapping_from(module, f"built-in {_BUILTIN_PACKAGE}.{name}")
    return mapping if mapping.name == name else None


def describe(mapping: Mapping) -> Dict[str, Any]:
    """Where another process finds this very mapping (JSON-ready; see :func:`from_description`):
    by name for built-ins and plug-ins, by file for a file the user named, and by module for a
    mapping built in code and bound to a module-level name. Nothing is pickled."""
    if mapping.origin.startswith(("built-in ", "plug-in ")):
        return {"name": mapping.name}
    if mapping.origin.endswith(".py") and os.path.isfile(mapping.origin):
        return {"file": os.path.abspath(mapping.origin)}
    for module_name in _defining_modules(mapping):
        module = sys.modules.get(module_name)
        for attr, value in vars(module).items() if module is not None else ():
            if value is mapping:
                where = {"module": module_name, "attr": attr}
                if getattr(module, "__file__", None):
                    where["file"] = os.path.abspath(module.__file__)
                return where
    raise MappingError(f"mapping {mapping.name!r} was built in code and no module holds it, so the "
                       "TensorFlow process cannot load it",
                       hint="bind it to a module-level name (e.g. MAPPING) or pass its .py file")


def _defining_modules(mapping: Mapping) -> List[str]:
    """Modules that define the mapping's functions (where it was most likely built)."""
    functions = [mapping.model_kwargs, getattr(mapping.verify, "tf_reference", None)]
    functions += [t.build for t in mapping.targets] + [t.spec for t in mapping.targets]
    names = [getattr(f, "__module__", None) for f in functions]
    return list(dict.fromkeys(n for n in names if n))


def from_description(where: Dict[str, Any]) -> Mapping:
    """The mapping :func:`describe` described (in this process)."""
    if "name" in where:
        return get_mapping(where["name"])
    if "module" in where:
        module = sys.modules.get(where["module"])
        if module is None:
            try:
                module = importlib.import_module(where["module"])
            except ImportError:
                if "file" not in where:
                    raise MappingError(f"cannot import module {where['module']!r} holding the mapping") from None
                module = _exec_file(where["file"], where["module"])
        return _mapping_from(getattr(module, where["attr"], None), f"{where['module']}.{where['attr']}")
    return load_file(where["file"])


def list_mappings() -> List[Mapping]:
    return [m for _, m in sorted(all_mappings().items())]


def build_model(mapping="highresnet", target: Optional[str] = None, **kwargs):
    """Build the PyTorch model of ``mapping``'s ``target`` (default target if None).

    Defaults match the mapping's source model (e.g. HighRes3DNet: 1 input channel, 160 classes);
    keyword arguments override them.
    """
    m = get_mapping(mapping)
    t = m.target(target)
    t.check_available()
    return t.build(**kwargs)

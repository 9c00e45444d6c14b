"""Reference files (``ref.npz``): TF's outputs saved where TF runs, compared where torch runs.

An uncompressed ``.npz`` (loads with ``allow_pickle=False``) holding:

* ``input``: the preprocessed volume both frameworks get, float32 ``(C, D, H, W)``;
* ``output``: TF's output, float32 ``(C, D, H, W)``;
* ``layer.<name>``: TF's intermediate outputs for ``--per-layer``, when requested;
* ``meta``: a JSON string: format version, checkpoint files and sha256s, mapping, which TF side
  ran and why, tensor names, TF version, the volume's preparation steps, timings.

Writing needs numpy only (the TF process writes it); reading needs numpy only.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict

import numpy as np

from ._atomic import atomic_output
from .errors import InputError

FORMAT = "tf2pt-reference/1"
LAYER_PREFIX = "layer."


def save_reference_file(path, x: np.ndarray, result: Dict[str, Any], meta: Dict[str, Any], force: bool = True) -> None:
    full_meta = {"format": FORMAT, **meta, **result["meta"]}
    arrays = {"input": np.asarray(x, np.float32), "output": np.asarray(result["output"], np.float32),
              "meta": np.array(json.dumps(full_meta, default=str))}
    for name, value in result.get("layers", {}).items():
        arrays[LAYER_PREFIX + name] = np.asarray(value, np.float32)
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to the temp name
            np.savez(fh, **arrays)


class Reference:
    """A loaded reference: ``input``, ``output`` (arrays), ``meta`` (dict), ``layer(name)``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError("reference file not found", path=self.path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            if not isinstance(self._npz, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            self.meta = json.loads(str(self._npz["meta"]))
            self.input = self._npz["input"]
            self.output = self._npz["output"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise InputError(f"not a tf2pt reference file ({type(exc).__name__}: {exc})", path=self.path,
                             hint="make one with `tf2pt verify ... --save-reference ref.npz`") from None
        if self.meta.get("format") != FORMAT:
            raise InputError(f"reference format {self.meta.get('format')!r} is not {FORMAT!r}", path=self.path)

    @property
    def layer_names(self):
        return [k[len(LAYER_PREFIX):] for k in self._npz.files if k.startswith(LAYER_PREFIX)]

    def layer(self, name: str) -> np.ndarray:
        return self._npz[LAYER_PREFIX + name]

    def close(self):
        self._npz.close()

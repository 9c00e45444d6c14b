"""Reference files (``ref.npz``): TF's outputs saved where TF runs, compared where torch runs.

An ``.npz`` (loads with ``allow_pickle=False``) holding:

* ``input``: the preprocessed volume both frameworks get, float32 ``(C, D, H, W)``;
* ``output``: TF's output, float32 ``(C, D, H, W)``;
* ``layer.<name>``: TF's intermediate outputs for ``--per-layer``, when requested;
* ``meta``: a JSON string: format version, checkpoint files and sha256s, mapping, which TF side
  ran and why, tensor names, TF version, the volume's preparation steps, timings.

A full-size output can be large (HighRes3DNet on the whole MNI152 volume: 160 x 8.2 M float32,
5 GiB). A *sampled* reference (``sample_voxels=N``) keeps instead, compressed: TF's labels at
every voxel (``labels``), its full output vector at ``N`` seeded random voxels
(``sample_index``, ``output_sample``), and the full output's range and non-finite count in
``meta``. Label agreement and Dice are then exact; error figures cover the sampled voxels,
and the report says so.

Writing needs numpy only (the TF process writes it); reading needs numpy only.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, Optional

import numpy as np

from ..write.atomic import atomic_output
from ..errors import InputError

FORMAT = "tf2pt-reference/1"
LAYER_PREFIX = "layer."
INPUT_PREFIX, OUTPUT_PREFIX = "inputs.", "outputs."


def labels_of(output: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Labels of an output ``(C, ...)``: ``output[0] > threshold``, or the argmax over channels."""
    if threshold is not None:
        return (output[0] > threshold).astype(np.int32)
    return output.argmax(axis=0).astype(np.int32)


def save_reference_file(path, x: np.ndarray, result: Dict[str, Any], meta: Dict[str, Any], force: bool = True,
                        sample_voxels: Optional[int] = None, threshold: Optional[float] = None, seed: int = 0) -> None:
    full_meta = {"format": FORMAT, **meta, **result["meta"]}
    if "outputs" in result:  # a signature's inputs and outputs, by name, in TF's layout and dtype
        arrays = {INPUT_PREFIX + k: np.asarray(v) for k, v in result["inputs"].items()}
        arrays.update({OUTPUT_PREFIX + k: np.asarray(v) for k, v in result["outputs"].items()})
        arrays.update({LAYER_PREFIX + k: np.asarray(v) for k, v in (result.get("layers") or {}).items()})
        arrays["meta"] = np.array(json.dumps(full_meta, default=str))
        with atomic_output(path, force=force) as tmp:
            with open(tmp, "r+b") as fh:
                np.savez(fh, **arrays)
        return
    output = np.asarray(result["output"], np.float32)
    arrays = {"input": np.asarray(x, np.float32)}
    if sample_voxels:
        if result.get("layers"):
            raise InputError("a sampled reference cannot hold per-layer outputs", hint="drop --per-layer or --sample-voxels")
        flat = output.reshape(output.shape[0], -1)
        n = min(int(sample_voxels), flat.shape[1])
        index = np.sort(np.random.default_rng(seed).choice(flat.shape[1], size=n, replace=False))
        finite = np.isfinite(output)
        labels = labels_of(output, threshold)
        arrays.update(labels=labels.astype(np.uint16 if labels.max(initial=0) < 65536 else np.int32),
                      sample_index=index.astype(np.int64), output_sample=flat[:, index])
        full_meta["sampled"] = {"voxels": n, "of": int(flat.shape[1]), "seed": seed,
                                "output_shape": list(output.shape),
                                "output_min": float(output[finite].min()) if finite.any() else 0.0,
                                "output_max": float(output[finite].max()) if finite.any() else 0.0,
                                "nonfinite": int((~finite).sum()), "threshold": threshold}
    else:
        arrays["output"] = output
        for name, value in result.get("layers", {}).items():
            arrays[LAYER_PREFIX + name] = np.asarray(value, np.float32)
    arrays["meta"] = np.array(json.dumps(full_meta, default=str))
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "r+b") as fh:  # a file object: np.savez would append .npz to the temp name
            (np.savez_compressed if sample_voxels else np.savez)(fh, **arrays)


class Reference:
    """A loaded reference: ``input``, ``output`` (arrays), ``meta`` (dict), ``layer(name)``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError("reference file not found", path=self.path)
        from .arrays import check_npz

        try:
            check_npz(self.path, "reference")
        except InputError as exc:
            raise InputError(f"not a tf2pt reference file: {exc.problem}", path=self.path,
                             hint="make one with `tf2pt verify ... --save-reference ref.npz`") from None
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            if not isinstance(self._npz, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            self.meta = json.loads(str(self._npz["meta"]))
            self.signature = self.meta.get("signature")
            self.sampled = self.meta.get("sampled")
            if self.signature:  # a TF2 signature's named inputs and outputs
                self.inputs = {k: self._npz[INPUT_PREFIX + k] for k in self.signature["inputs"]}
                self.outputs = {k: self._npz[OUTPUT_PREFIX + k] for k in self.signature["outputs"]}
                self.input = self.output = None
            elif self.sampled:
                self.input = self._npz["input"]
                self.output = None
                self.labels = self._npz["labels"].astype(np.int32)
                self.sample_index = self._npz["sample_index"]
                self.output_sample = self._npz["output_sample"]
            else:
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

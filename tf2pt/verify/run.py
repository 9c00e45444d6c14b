"""``tf2pt verify``: run TensorFlow and PyTorch on one volume and measure how far apart they are.

Nothing is assumed: the TF output comes from running TF (the original graph when there is one,
see :mod:`.tfside`), the PyTorch output from running the converted weights in the target model
(:mod:`.torchside`); :mod:`.compare` measures. Two environments are supported:
``save_reference`` needs TF and not torch; ``verify`` with ``reference=`` needs torch and not
TF. A plain ``verify`` runs the TF side in a child process (so TF and torch never share one),
then the PyTorch side here.

Pass criteria (both must hold, and no output may be NaN/Inf):

* ``max_abs_error <= atol`` -- by default ``1e-4 x`` the range of TF's output;
* ``argmax_agreement >= min_agreement`` (labels: channel argmax, or ``output > threshold`` for
  single-channel probabilities) -- by default 0.9999.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._version import __version__
from ..errors import InputError, MappingError
from ..registry import describe, get_mapping
from .compare import Comparison, compare, compare_sampled, dice_per_label
from .reference import Reference, save_reference_file
from .torchside import device_name, pick_device, run_pytorch, versions

DEFAULT_ATOL_FRACTION = 1e-4
DEFAULT_MIN_AGREEMENT = 0.9999


@dataclass
class VerifyReport:
    passed: bool
    data: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, **self.data}

    def __getitem__(self, key):
        return self.to_dict()[key]

    def summary(self) -> str:
        d = self.data
        lines = [
            f"tf2pt verify: {'PASSED' if self.passed else 'FAILED'}  ({d['mapping']} -> {d['target']})",
            f"  TF side:        {d['tf_side']} ({d['tf_side_reason']})",
            f"  input:          {d['input']['source']} -> {d['input']['shape']}",
        ]
        lines += [f"                  {s}" for s in d["input"]["steps"]]
        lines += [
            f"  devices:        TF {d['devices']['tf']}, PyTorch {d['devices']['torch']}"
            + (" (TF32 allowed)" if d.get("allow_tf32") else ""),
            f"  max abs error:  {d['max_abs_error']:.3e}  (atol {d['thresholds']['atol']:.3e}: {d['thresholds']['atol_rule']})",
            f"  compared:       {d['error_scope']}",
            f"  max rel error:  {d['max_rel_error']:.3e}   mean abs error: {d['mean_abs_error']:.3e}",
            f"  output range:   {d['output_range']:.4g}   error / range: {d['max_abs_error_over_range']:.3e}",
            f"  label agreement {d['argmax_agreement'] * 100:.4f}% of {d['voxels']} voxels "
            f"(min {d['thresholds']['min_agreement'] * 100:.4f}%)",
            f"  non-finite:     TF {d['nonfinite']['tf']}, PyTorch {d['nonfinite']['torch']}",
        ]
        if d.get("dice_worst") and all(r["dice"] == 1.0 for r in d["dice_worst"]):
            lines.append(f"  Dice:           1.0000 for all {d['labels_compared']} labels present")
        elif d.get("dice_worst"):
            worst = ", ".join(f"{r['label']}{' ' + r['name'] if r.get('name') else ''}: {r['dice']:.4f}" for r in d["dice_worst"])
            lines.append(f"  worst Dice:     {worst}")
        if d.get("per_layer"):
            lines.append("  per layer (max abs / rel to range):")
            for row in d["per_layer"]:
                lines.append(f"    {row['layer']:<12} {row['module']:<36} {row['max_abs_error']:.3e} "
                             f"{row['max_rel_error']:.3e}  {row['status']}")
            if d.get("first_divergent_layer"):
                lines.append(f"  first divergent layer: {d['first_divergent_layer']}")
        t = d["timings"]
        lines.append("  timings:        " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
        if d.get("peak_gpu_memory_bytes"):
            lines.append(f"  peak GPU memory: {d['peak_gpu_memory_bytes'] / 2**30:.2f} GiB")
        if d.get("reason"):
            lines.append(f"  reason: {d['reason']}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the input volume
# ------------------------------------------------------------------------------------------------


def prepare_volume(spec, volume: Optional[str] = None, synthetic: Optional[Sequence[int]] = None,
                   crop=None, on_cpu: bool = True, in_channels: int = 1):
    """Load and prepare the volume as ``spec`` declares. ``crop``: ``None`` (the mapping's CPU
    default on CPU, none on GPU), ``"full"`` (none), or three sizes."""
    from . import volume as vol

    v = vol.load(volume, synthetic, channels=in_channels)
    if v.data.shape[0] != in_channels:
        raise InputError(f"volume has {v.data.shape[0]} channel(s), the model takes {in_channels}",
                         path=volume, hint="give a (C, D, H, W) .npy or a 4-D NIfTI")
    if spec.size is not None:
        v = vol.resize(v, spec.size, antialias=spec.resize == "antialias")
    for name in spec.preprocess:
        v = vol.PREPROCESSORS[name](v)
    if crop is None and on_cpu and spec.cpu_crop is not None and spec.size is None:
        if any(n > c for n, c in zip(v.spatial_shape, spec.cpu_crop)):
            vol.center_crop(v, spec.cpu_crop)
            v.steps[-1] += " (the mapping's default on CPU; --crop full for the whole volume)"
    elif crop not in (None, "full"):
        vol.center_crop(v, crop)
    v = vol.fit_multiple(v, spec.spatial_multiple)
    return v



# ------------------------------------------------------------------------------------------------
# the checkpoint, converted once
# ------------------------------------------------------------------------------------------------


def checkpoint_meta(checkpoint) -> Dict[str, Any]:
    """The checkpoint's path and the sha256 of each of its files (ties a reference to it)."""
    from ..write.provenance import file_sha256

    return {"checkpoint": str(checkpoint.path),
            "checkpoint_files": {os.path.basename(str(p)): file_sha256(p) for p in checkpoint.files}}


def _spec(mapping):
    if mapping.verify is None:
        raise MappingError(f"mapping {mapping.name!r} declares no verification facts (VERIFY)")
    return mapping.verify


def _in_channels(mapping, kwargs: Dict[str, Any]) -> int:
    return int(kwargs.get("in_channels", mapping.source.meta.get("in_channels", 1)))


def _converted_model(checkpoint_path, mapping, target):
    """Open, convert (strict) and load the target model. A damaged or mismatched checkpoint is
    reported here, by tf2pt's reader and the mapping's checks, before TensorFlow starts.
    Returns ``(model, checkpoint meta, model kwargs)``."""
    from ..conversion import convert
    from ..read import open_checkpoint

    with open_checkpoint(checkpoint_path) as ckpt:
        meta = checkpoint_meta(ckpt)
        state_dict, report = convert(ckpt, mapping, target.name)
    model = target.build(**report.model_kwargs)
    model.load_state_dict(state_dict, strict=True)
    return model, meta, report.model_kwargs


# ------------------------------------------------------------------------------------------------
# the TF side
# ------------------------------------------------------------------------------------------------


def save_reference(checkpoint_path, mapping, out_path, *, volume=None, synthetic=None, crop=None,
                   tf_input=None, tf_output=None, per_layer=False, force=False,
                   sample_voxels: Optional[int] = None) -> Dict[str, Any]:
    """Run the TF side here (needs TensorFlow, not torch) and write ``out_path``
    (``sample_voxels``: a compact reference, see :mod:`.reference`)."""
    from ..plan import model_kwargs_for
    from ..read import open_checkpoint
    from ..write.atomic import check_output
    from .tfside import compute_reference

    check_output(out_path, force)
    m = get_mapping(mapping)
    spec = _spec(m)
    with open_checkpoint(checkpoint_path) as ckpt:
        v = prepare_volume(spec, volume, synthetic, crop, on_cpu=True,
                           in_channels=_in_channels(m, model_kwargs_for(m, ckpt)))
        start = time.perf_counter()
        result = compute_reference(ckpt, m, v.data, tf_input=tf_input, tf_output=tf_output, per_layer=per_layer)
        meta = {**checkpoint_meta(ckpt), "mapping": m.name, "volume": {"source": v.source, "steps": v.steps},
                "tf2pt_version": __version__, "python": platform.python_version(),
                "tf_total_seconds": time.perf_counter() - start}
    save_reference_file(out_path, v.data, result, meta, force=True, sample_voxels=sample_voxels,
                        threshold=spec.threshold)
    return {**meta, **result["meta"]}


def run_tf_subprocess(checkpoint_path, mapping, x, *, tf_input, tf_output, per_layer, workdir) -> Reference:
    """The TF side in a child process (TF and torch never share a process). The child gets the
    mapping itself, as :func:`tf2pt.registry.describe` says where to find it."""
    in_path = os.path.join(workdir, "input.npy")
    out_path = os.path.join(workdir, "reference.npz")
    np.save(in_path, x)
    request = {"checkpoint": os.fspath(checkpoint_path), "mapping": describe(mapping), "input": in_path,
               "output": out_path, "tf_input": tf_input, "tf_output": tf_output, "per_layer": per_layer}
    req_path = os.path.join(workdir, "request.json")
    with open(req_path, "w") as fh:
        json.dump(request, fh)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "tf2pt.verify.tfside", req_path], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        tail = lines[-1] if lines else f"exit code {proc.returncode}"
        if tail.startswith("tf2pt: error: "):
            raise InputError(tail[len("tf2pt: error: "):])
        raise InputError(f"the TensorFlow side failed: {tail}", path=checkpoint_path)
    return Reference(out_path)


def _read_reference(reference: str, ckpt_meta: Dict[str, Any], per_layer: bool):
    """A saved TF side: ``(reference, input, volume info)``, after checking it belongs here."""
    ref = Reference(reference)
    if ref.meta.get("checkpoint_files") != ckpt_meta["checkpoint_files"]:
        raise InputError("the reference was made from other checkpoint files (sha256 differ)",
                         path=reference, hint="make the reference from this checkpoint")
    if per_layer and ref.sampled:
        raise InputError("a sampled reference has no layer outputs", path=reference,
                         hint="save a full reference with --per-layer for per-layer checks")
    if per_layer and not ref.layer_names:
        raise InputError("the reference has no layer outputs", path=reference,
                         hint="make it with --save-reference ... --per-layer")
    volume = ref.meta.get("volume", {})
    info = {"source": volume.get("source", "reference file"),
            "steps": list(volume.get("steps", [])) + [f"input read from {reference}"]}
    return ref, ref.input, info


# ------------------------------------------------------------------------------------------------
# judging
# ------------------------------------------------------------------------------------------------


def _atol(atol: Optional[float], spec, output_range: float) -> Tuple[float, str]:
    if atol is not None:
        return atol, f"--atol {atol:g}"
    if spec.atol is not None:
        return spec.atol, f"the mapping's {spec.atol:g}"
    return DEFAULT_ATOL_FRACTION * output_range, f"{DEFAULT_ATOL_FRACTION:g} x output range"


def _per_layer(ref: Reference, pt_layers: Dict[str, np.ndarray], spec, modules: Dict[str, str]):
    """One row per layer both sides report, and the first that diverges."""
    rows: List[Dict[str, Any]] = []
    first_bad = None
    for layer in spec.layers:
        if layer not in ref.layer_names or layer not in pt_layers:
            continue
        lm = compare(ref.layer(layer), pt_layers[layer]).metrics
        ok = lm["max_abs_error_over_range"] <= DEFAULT_ATOL_FRACTION and not any(lm["nonfinite"].values())
        if not ok and first_bad is None:
            first_bad = layer
        rows.append({"layer": layer, "module": modules[layer], "max_abs_error": lm["max_abs_error"],
                     "max_rel_error": lm["max_abs_error_over_range"], "status": "ok" if ok else "DIVERGES"})
    return rows, first_bad


def _verdict(metrics: Dict[str, Any], atol: float, min_agreement: float) -> Tuple[bool, str]:
    reasons = []
    if any(metrics["nonfinite"].values()):
        reasons.append("non-finite values in the outputs")
    if metrics["max_abs_error"] > atol:
        reasons.append(f"max abs error {metrics['max_abs_error']:.3e} > atol {atol:.3e}")
    if metrics["argmax_agreement"] < min_agreement:
        reasons.append(f"label agreement {metrics['argmax_agreement']:.6f} < {min_agreement}")
    return not reasons, "; ".join(reasons)


def _label_names(spec) -> Dict[int, str]:
    if not spec.label_table:
        return {}
    from .figure import read_color_table

    return {i: name for i, (name, _) in read_color_table(spec.label_table).items()}


# ------------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------------


def verify(checkpoint_path, mapping="highresnet", target: Optional[str] = None, *, volume: Optional[str] = None,
           synthetic: Optional[Sequence[int]] = None, crop=None, device: str = "auto", atol: Optional[float] = None,
           min_agreement: float = DEFAULT_MIN_AGREEMENT, per_layer: bool = False, allow_tf32: bool = False,
           tf_input: Optional[str] = None, tf_output: Optional[str] = None, reference: Optional[str] = None,
           figure: Optional[str] = None, force: bool = False) -> VerifyReport:
    """Measure parity between TF and the converted PyTorch model. Returns a :class:`VerifyReport`.

    With ``reference=`` the TF side is read from a file made by :func:`save_reference` (no TF
    needed here); the checkpoint must be the one that file was made from.
    """
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    m = get_mapping(mapping)  # resolved once; every stage below gets the object
    spec = _spec(m)
    t = m.target(target)
    t.check_available()
    dev = pick_device(device)
    if figure:
        from ..write.atomic import check_output

        check_output(figure, force)

    start = time.perf_counter()
    model, ckpt_meta, kwargs = _converted_model(checkpoint_path, m, t)
    timings["convert_seconds"] = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="tf2pt-verify-") as workdir:
        if reference is not None:
            ref, x, vol_info = _read_reference(reference, ckpt_meta, per_layer)
        else:
            v = prepare_volume(spec, volume, synthetic, crop, on_cpu=dev.type == "cpu",
                               in_channels=_in_channels(m, kwargs))
            x, vol_info = v.data, {"source": v.source, "steps": v.steps}
            start = time.perf_counter()
            ref = run_tf_subprocess(checkpoint_path, m, x, tf_input=tf_input, tf_output=tf_output,
                                    per_layer=per_layer, workdir=workdir)
            timings["tf_seconds"] = time.perf_counter() - start
        try:
            meta = ref.meta
            for k, seconds in (meta.get("timings") or {}).items():
                timings.setdefault(k, seconds)
            layer_modules = {k: t.layers[k] for k in spec.layers if k in t.layers} if per_layer else {}
            pt_out, pt_layers, info = run_pytorch(model, x, dev, allow_tf32=allow_tf32, layers=layer_modules)
            timings["torch_forward_seconds"] = info.pop("torch_forward_seconds")

            result: Comparison = (compare_sampled(ref, pt_out, spec.threshold) if ref.sampled
                                  else compare(ref.output, pt_out, spec.threshold))
            metrics = result.metrics
            atol_value, atol_rule = _atol(atol, spec, metrics["output_range"])
            passed, reason = _verdict(metrics, atol_value, min_agreement)
            dice = dice_per_label(result.tf_labels, result.pt_labels)
            names = _label_names(spec)
            worst = sorted(dice.items(), key=lambda kv: (kv[1], kv[0]))[:5]
            layers_rows, first_bad = _per_layer(ref, pt_layers, spec, layer_modules) if per_layer else ([], None)
            timings["total_seconds"] = time.perf_counter() - t0
            data = {
                **metrics,
                "tf_side": meta.get("tf_side"),
                "tf_side_reason": meta.get("tf_side_reason"),
                "tf_graph": meta.get("tf_graph"),
                "tf_tensors": {"input": meta.get("tf_input"), "output": meta.get("tf_output")},
                "reference_vs_graph_max_abs": meta.get("reference_vs_graph_max_abs"),
                "mapping": m.name,
                "target": t.name,
                **ckpt_meta,
                "input": {"source": vol_info["source"], "shape": list(x.shape), "steps": vol_info["steps"]},
                "thresholds": {"atol": atol_value, "atol_rule": atol_rule, "min_agreement": min_agreement},
                "dice_worst": [{"label": k, "name": names.get(k, ""), "dice": d} for k, d in worst],
                "labels_compared": len(dice),
                "per_layer": layers_rows,
                "first_divergent_layer": first_bad,
                "devices": {"tf": meta.get("tf_device", "cpu"), "torch": device_name(dev)},
                "allow_tf32": allow_tf32,
                "versions": {**versions(), "tensorflow": meta.get("tf_version")},
                "timings": timings,
                "reference_file": reference,
                "reason": reason,
                **info,
            }
            report = VerifyReport(passed, data)
            if figure:
                from .figure import parity_figure

                parity_figure(figure, x, result.tf_labels, result.pt_labels, result.diff_map, spec,
                              title=report.summary().splitlines()[0],
                              diff_title="labels differ" if ref.sampled else None)
                data["figure"] = figure
        finally:
            ref.close()
    return report

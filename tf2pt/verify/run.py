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
from .child import ChildProcess, child_failure
from .compare import Comparison, compare, compare_sampled, dice_per_label
from .reference import Reference, save_reference_file
from .torchside import device_name, pick_device, run_pytorch, run_pytorch_inputs, versions

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
        ]
        if d.get("outputs") is not None:  # a TF2 signature: any inputs, every output
            lines += _signature_summary(d)
            lines += _per_layer_lines(d)
            if d.get("reference_vs_graph_max_abs") is not None:
                lines.append(f"  mapping's tf_reference vs the graph: max abs {d['reference_vs_graph_max_abs']:.3e}")
            t = d["timings"]
            lines.append("  timings:        " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
            lines += [f"  note: {n}" for n in d.get("tf_notes") or []]
            if d.get("reason"):
                lines.append(f"  reason: {d['reason']}")
            return "\n".join(lines)
        lines += [
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
            f"  label agreement {_agreement_text(d['argmax_agreement'], d['voxels'])} "
            f"(min {d['thresholds']['min_agreement'] * 100:.4f}%)",
            f"  non-finite:     TF {d['nonfinite']['tf']}, PyTorch {d['nonfinite']['torch']}",
        ]
        lines += _label_difference_lines(d.get("label_differences"), d["thresholds"]["atol"])
        if d.get("dice_worst") and all(r["dice"] == 1.0 for r in d["dice_worst"]):
            lines.append(f"  Dice:           1.0000 for all {d['labels_compared']} labels present")
        elif d.get("dice_worst"):
            worst = ", ".join(f"{r['label']}{' ' + r['name'] if r.get('name') else ''}: {r['dice']:.4f}" for r in d["dice_worst"])
            lines.append(f"  worst Dice:     {worst}")
        lines += _per_layer_lines(d)
        if d.get("windowed"):
            lines += _windowed_summary(d["windowed"])
        t = d["timings"]
        lines.append("  timings:        " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
        if d.get("peak_gpu_memory_bytes"):
            lines.append(f"  peak GPU memory: {d['peak_gpu_memory_bytes'] / 2**30:.2f} GiB")
        lines += [f"  note: {n}" for n in d.get("tf_notes") or []]
        if d.get("reason"):
            lines.append(f"  reason: {d['reason']}")
        return "\n".join(lines)


def _agreement_text(agreement: float, voxels: int) -> str:
    """``100% of N voxels``, or how many differ: a rounded percentage never says 100% for a
    run where some voxel's label differs."""
    differ = int(round((1.0 - agreement) * voxels))
    if differ == 0:
        return f"100% of {voxels} voxels"
    return f"{agreement * 100:.6f}% of {voxels} voxels ({differ} differ)"


def _label_difference_lines(differences, atol: float, shown: int = 3) -> List[str]:
    """Where labels differ, and how near a tie each was: TF's margin for its own label over
    PyTorch's. A margin within ``atol`` (the error the pass criterion allows) is a tie the two
    frameworks' rounding may settle either way."""
    if not differences:
        return []
    lines = []
    for diff in differences[:shown]:
        tie = "within atol: a near-tie" if diff["tf_margin"] <= atol else "beyond atol"
        lines.append(f"  label differs:  voxel {diff['voxel']}: TF {diff['tf_label']}, PyTorch {diff['torch_label']}; "
                     f"margins TF {diff['tf_margin']:.3e}, PyTorch {diff['torch_margin']:.3e} ({tie})")
    ties = sum(diff["tf_margin"] <= atol for diff in differences)
    if len(differences) > shown or ties < len(differences):
        lines.append(f"                  {ties} of the {len(differences)} listed in the JSON report are near-ties")
    return lines


def _windowed_summary(w: Dict[str, Any]) -> List[str]:
    from ..units import format_bytes

    exact = {True: "covers the receptive field: labels as a whole-volume run",
             False: "under the receptive field: parity exact, labels near seams may differ from a whole-volume run",
             None: "receptive field not declared"}[w["exact_tiling"]]
    peak = w["peak_rss_bytes"]
    budget = f" (--max-memory {format_bytes(w['max_memory_bytes'])})" if w.get("max_memory_bytes") else ""
    return [f"  windows:        {w['windows']} of {'x'.join(map(str, w['window']))}, border {w['border']} ({exact}); "
            f"{w['work_vs_whole_volume']:.2f}x the volume's voxels run",
            f"  peak RSS:       both processes together {format_bytes(peak['together'])}{budget}; "
            f"TF's {format_bytes(peak['tf'])}, PyTorch's {format_bytes(peak['torch'])}"]


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


def _planned(ckpt, m, t, timings):
    """``(entries, model kwargs, checkpoint meta)``: the conversion planned (timed as
    ``plan_seconds``), so a damaged or mismatched checkpoint is said before TF starts."""
    from ..conversion import prepare

    start = time.perf_counter()
    _, entries, conv_report = prepare(ckpt, m, t.name)
    timings["plan_seconds"] = time.perf_counter() - start
    return entries, conv_report.model_kwargs, checkpoint_meta(ckpt)


def _torch_side(ckpt, entries, target, kwargs, device, timings):
    """torch's import, the converted tensors and the loaded target model, each phase timed:
    ``(model, device)``. A declared spec that the model disagrees with is a MappingError."""
    from ..conversion import iter_tensors

    start = time.perf_counter()
    import torch  # noqa: F401

    timings["torch_import_seconds"] = time.perf_counter() - start
    dev = pick_device(device)
    start = time.perf_counter()
    state_dict = dict(iter_tensors(ckpt, entries))
    timings["convert_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    model = target.build(**kwargs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise MappingError(f"target {target.name!r} does not take the converted state dict: "
                           f"{' '.join(str(exc).split())[:300]}", hint="the mapping's spec and its model disagree") from None
    timings["model_build_seconds"] = time.perf_counter() - start
    return model, dev


def _cuda_visible() -> bool:
    """Whether PyTorch will see a GPU, without importing torch (the TF side starts first)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


# ------------------------------------------------------------------------------------------------
# the TF side
# ------------------------------------------------------------------------------------------------


def save_reference(checkpoint_path, mapping, out_path, *, volume=None, synthetic=None, crop=None,
                   tf_input=None, tf_output=None, per_layer=False, force=False,
                   sample_voxels: Optional[int] = None, trust_graph: bool = False) -> Dict[str, Any]:
    """Run the TF side here (needs TensorFlow, not torch) and write ``out_path``
    (``sample_voxels``: a compact reference, see :mod:`.reference`)."""
    from ..plan import model_kwargs_for
    from ..read import open_checkpoint
    from ..write.atomic import check_output
    from .tfside import compute_reference

    check_output(out_path, force)
    if is_tf2_savedmodel(checkpoint_path) or is_keras_file(checkpoint_path):
        raise InputError("--save-reference is not supported for a TF2 SavedModel or a Keras file yet",
                         path=str(checkpoint_path), hint="run verify where both TensorFlow and torch are installed")
    m = get_mapping(mapping)
    spec = _spec(m)
    with open_checkpoint(checkpoint_path) as ckpt:
        v = prepare_volume(spec, volume, synthetic, crop, on_cpu=True,
                           in_channels=_in_channels(m, model_kwargs_for(m, ckpt)))
        start = time.perf_counter()
        result = compute_reference(ckpt, m, v.data, tf_input=tf_input, tf_output=tf_output, per_layer=per_layer,
                                   trust_graph=trust_graph)
        meta = {**checkpoint_meta(ckpt), "mapping": m.name, "volume": {"source": v.source, "steps": v.steps},
                "tf2pt_version": __version__, "python": platform.python_version(),
                "tf_total_seconds": time.perf_counter() - start}
    save_reference_file(out_path, v.data, result, meta, force=True, sample_voxels=sample_voxels,
                        threshold=spec.threshold)
    return {**meta, **result["meta"]}


class TFChild(ChildProcess):
    """The TF side in a child process (TF and torch never share a process), started at once and
    waited for later, so that TF's start-up overlaps the conversion and torch's. The child gets
    the mapping itself, as :func:`tf2pt.registry.describe` says where to find it. A failure there
    comes back whole: a tf2pt error as its one line, anything else as its type and message
    (``TF2PT_DEBUG=1`` also prints the child's traceback)."""

    def __init__(self, checkpoint_path, mapping, x, *, tf_input, tf_output, per_layer, workdir,
                 trust_graph: bool = False):
        self.checkpoint_path = checkpoint_path
        in_path = os.path.join(workdir, "input.npy")
        self.out_path = os.path.join(workdir, "reference.npz")
        self.error_path = os.path.join(workdir, "error.json")
        np.save(in_path, x)
        request = {"checkpoint": os.fspath(checkpoint_path), "mapping": describe(mapping), "input": in_path,
                   "output": self.out_path, "error": self.error_path, "tf_input": tf_input, "tf_output": tf_output,
                   "per_layer": per_layer, "trust_graph": trust_graph}
        self._start(request, workdir)

    def _start(self, request: Dict[str, Any], workdir: str) -> None:
        req_path = os.path.join(workdir, "request.json")
        with open(req_path, "w") as fh:
            json.dump(request, fh)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"), CUDA_VISIBLE_DEVICES="")
        self._stderr = open(os.path.join(workdir, "stderr.txt"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tf2pt.verify.tfside", req_path], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)

    def wait(self) -> Reference:
        try:
            code = self.proc.wait()
        except BaseException:
            self.stop()
            raise
        self._stderr.seek(0)
        stderr = self._stderr.read()
        self._stderr.close()
        if code == 0:
            return Reference(self.out_path)
        raise child_failure(code, self.error_path, stderr, self.checkpoint_path)



def run_tf_subprocess(checkpoint_path, mapping, x, **kwargs) -> Reference:
    """:class:`TFChild`, started and waited for."""
    return TFChild(checkpoint_path, mapping, x, **kwargs).wait()


def _cache_path(cache_dir: Optional[str], ckpt_meta, mapping, x: np.ndarray, tf_input, tf_output, per_layer,
                trust_graph) -> Optional[str]:
    """``DIR/<sha256>.npz``: the key covers the checkpoint's files, the input's bytes, shape and
    dtype, the mapping and the TF request, and tf2pt's version."""
    if cache_dir is None:
        return None
    import hashlib

    key = hashlib.sha256()
    key.update(json.dumps([ckpt_meta["checkpoint_files"], mapping.name, tf_input, tf_output, bool(per_layer),
                           bool(trust_graph), list(x.shape), str(x.dtype), __version__], sort_keys=True).encode())
    key.update(np.ascontiguousarray(x).tobytes())
    return os.path.join(cache_dir, key.hexdigest() + ".npz")


def _store(reference: str, cached: str) -> None:
    """Copy a fresh reference into the cache atomically (a concurrent reader never sees half)."""
    import shutil

    from ..write.atomic import atomic_output

    os.makedirs(os.path.dirname(cached) or ".", exist_ok=True)
    with atomic_output(cached, force=True) as tmp:
        shutil.copyfile(reference, tmp)


def check_dependencies(*, tensorflow: bool, volume: Optional[str], synthetic, figure: Optional[str]) -> None:
    """Every missing package verify will need, named at once, before any work starts."""
    import importlib.util

    need = [("torch", "torch")]
    if tensorflow:
        need.append(("tensorflow", "tensorflow-cpu"))
    if synthetic is None and (volume is None or volume.endswith((".nii", ".nii.gz"))):
        need.append(("nibabel", "nibabel"))
        if volume is None:
            need.append(("nilearn", "nilearn"))
    if figure:
        need.append(("matplotlib", "matplotlib"))
    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    missing = [package for module, package in need if absent(module)]
    if missing:
        from ..errors import DependencyError

        extra = "verify" if len(missing) > 1 or missing[0] != "torch" else None
        raise DependencyError(", ".join(missing), "tf2pt verify", extra=extra)


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


def _atol(atol: Optional[float], spec, metrics: Dict[str, Any]) -> Tuple[float, str]:
    """The max-error threshold and its rule: ``--atol``, the mapping's, else a fraction of TF's
    output range (of its largest magnitude where the range is 0: a single value, a constant)."""
    if atol is not None:
        return atol, f"--atol {atol:g}"
    if spec.atol is not None:
        return spec.atol, f"the mapping's {spec.atol:g}"
    if metrics["output_range"] > 0 or not metrics.get("output_scale"):
        return DEFAULT_ATOL_FRACTION * metrics["output_range"], f"{DEFAULT_ATOL_FRACTION:g} x output range"
    return (DEFAULT_ATOL_FRACTION * metrics["output_scale"],
            f"{DEFAULT_ATOL_FRACTION:g} x max |TF output| (its range is 0)")


def _per_layer(ref: Reference, pt_layers: Dict[str, np.ndarray], spec, modules: Dict[str, str]):
    """One row per layer both sides report, and the first that diverges."""
    rows: List[Dict[str, Any]] = []
    first_bad = None
    for layer in spec.layers:
        if layer not in ref.layer_names or layer not in pt_layers:
            continue
        if ref.layer(layer).shape != pt_layers[layer].shape:  # e.g. a graph tensor inside space_to_batch
            rows.append({"layer": layer, "module": modules[layer], "max_abs_error": None, "max_rel_error": None,
                         "status": f"not compared: TF {list(ref.layer(layer).shape)}, torch "
                                   f"{list(pt_layers[layer].shape)}"})
            continue
        rows.append(_layer_row(layer, modules[layer], compare(ref.layer(layer), pt_layers[layer]).metrics))
        if rows[-1]["status"] != "ok" and first_bad is None:
            first_bad = layer
    return rows, first_bad


def _layer_row(layer: str, module: str, lm: Dict[str, Any]) -> Dict[str, Any]:
    """One per-layer row: ok while the error is within the default fraction of the layer's range
    and nothing is non-finite."""
    ok = lm["max_abs_error_over_range"] <= DEFAULT_ATOL_FRACTION and not any(lm["nonfinite"].values())
    return {"layer": layer, "module": module, "max_abs_error": lm["max_abs_error"],
            "max_rel_error": lm["max_abs_error_over_range"], "status": "ok" if ok else "DIVERGES"}


def _layer_to_tf(pt: np.ndarray, tf_shape, spec) -> np.ndarray:
    """A torch layer output in TF's layout: channels moved last (rank >= 3) where that gives TF's
    shape, unless the mapping's layout is "none"; otherwise as it is (``N, T, C`` sequences)."""
    if spec.layout != "none" and pt.ndim >= 3:
        moved = np.moveaxis(pt, 1, -1)
        if moved.shape == tuple(tf_shape):
            return np.ascontiguousarray(moved)
    return pt


def _per_layer_named(ref: Reference, pt_layers: Dict[str, np.ndarray], spec, modules: Dict[str, str]):
    """:func:`_per_layer` for models with named inputs: each layer both sides report, compared in
    TF's layout, batch axis kept; and the first that diverges."""
    from .compare import compare_output

    rows: List[Dict[str, Any]] = []
    first_bad = None
    for layer in spec.layers:
        if layer not in ref.layer_names or layer not in pt_layers:
            continue
        tf_out = ref.layer(layer)
        lm = compare_output(f"layer {layer}", tf_out, _layer_to_tf(pt_layers[layer], tf_out.shape, spec), "regression")
        rows.append(_layer_row(layer, modules[layer], lm))
        if rows[-1]["status"] != "ok" and first_bad is None:
            first_bad = layer
    return rows, first_bad


def _per_layer_lines(d: Dict[str, Any]) -> List[str]:
    lines = []
    if d.get("per_layer"):
        lines.append("  per layer (max abs / rel to range):")
        for row in d["per_layer"]:
            errs = " ".join("-" * 9 if row[k] is None else f"{row[k]:.3e}" for k in ("max_abs_error", "max_rel_error"))
            lines.append(f"    {row['layer']:<12} {row['module']:<36} {errs}  {row['status']}")
        if d.get("first_divergent_layer"):
            lines.append(f"  first divergent layer: {d['first_divergent_layer']}")
    return lines


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


def _volume_report(result: Comparison, meta, m, t, spec, ckpt_meta, x_shape, vol_info, atol, min_agreement, dev,
                   allow_tf32: bool, timings, t0: float, figure: Optional[str], x, diff_title=None,
                   **extra) -> VerifyReport:
    """The report of a volume verify (whole or windowed) from its comparison, and its figure."""
    metrics = result.metrics
    atol_value, atol_rule = _atol(atol, spec, metrics)
    passed, reason = _verdict(metrics, atol_value, min_agreement)
    dice = dice_per_label(result.tf_labels, result.pt_labels)
    names = _label_names(spec)
    worst = sorted(dice.items(), key=lambda kv: (kv[1], kv[0]))[:5]
    timings["total_seconds"] = time.perf_counter() - t0
    data = {
        **metrics,
        "tf_side": meta.get("tf_side"),
        "tf_side_reason": meta.get("tf_side_reason"),
        "tf_graph": meta.get("tf_graph"),
        "tf_tensors": {"input": meta.get("tf_input"), "output": meta.get("tf_output")},
        "reference_vs_graph_max_abs": meta.get("reference_vs_graph_max_abs"),
        "tf_notes": list(meta.get("tf_notes") or []),
        "mapping": m.name,
        "target": t.name,
        **ckpt_meta,
        "input": {"source": vol_info["source"], "shape": list(x_shape), "steps": vol_info["steps"]},
        "thresholds": {"atol": atol_value, "atol_rule": atol_rule, "min_agreement": min_agreement},
        "dice_worst": [{"label": k, "name": names.get(k, ""), "dice": d} for k, d in worst],
        "labels_compared": len(dice),
        "per_layer": [],
        "first_divergent_layer": None,
        "devices": {"tf": meta.get("tf_device", "cpu"), "torch": device_name(dev)},
        "allow_tf32": allow_tf32,
        "versions": {**versions(), "tensorflow": meta.get("tf_version")},
        "timings": timings,
        "reference_file": None,
        "reference_cache": None,
        "reason": reason,
        **extra,
    }
    report = VerifyReport(passed, data)
    if figure:
        from .figure import parity_figure

        parity_figure(figure, x, result.tf_labels, result.pt_labels, result.diff_map, spec,
                      title=report.summary().splitlines()[0], diff_title=diff_title)
        data["figure"] = figure
    return report


def verify(checkpoint_path, mapping="highresnet", target: Optional[str] = None, *, volume: Optional[str] = None,
           synthetic: Optional[Sequence[int]] = None, crop=None, device: str = "auto", atol: Optional[float] = None,
           min_agreement: float = DEFAULT_MIN_AGREEMENT, per_layer: bool = False, allow_tf32: bool = False,
           tf_input: Optional[str] = None, tf_output: Optional[str] = None, reference: Optional[str] = None,
           figure: Optional[str] = None, force: bool = False, trust_graph: bool = False,
           reference_cache: Optional[str] = None, signature: Optional[str] = None,
           input_file: Optional[str] = None, tf_outputs: Optional[Sequence[str]] = None,
           max_memory: Optional[int] = None, window: Optional[Sequence[int]] = None,
           window_border: Optional[int] = None, progress: Optional[Any] = None) -> VerifyReport:
    """Measure parity between TF and the converted PyTorch model. Returns a :class:`VerifyReport`.

    With ``reference=`` the TF side is read from a file made by :func:`save_reference` (no TF
    needed here); the checkpoint must be the one that file was made from. ``trust_graph`` runs
    the checkpoint's graph even where it holds more than pure computation (see :mod:`.graphcheck`).
    ``timings`` in the report has every phase: TF's import, loading its graph and weights, TF's
    forward (from the TF side), torch's import, the conversion, the model build, torch's
    forward and the comparison. ``reference_cache`` (a directory) keeps the TF side's output
    for each checkpoint, input and TF request, so repeated runs (in one CI job, say) skip TF.

    A TF2 SavedModel (told from a TF1 one by its proto: an object graph, no ``variables``
    collection) runs through ``tf.saved_model.load`` and ``signature`` (default: the mapping's,
    else ``serving_default``): inputs of any rank and dtype, from the signature's specs (``None``
    sizes from ``synthetic``, any number of them) or ``input_file`` (``.npy``/``.npz``), every
    output in ``tf_outputs`` (default: the mapping's, else all) compared, see
    :func:`verify_signature`. A Keras file runs the same way, through its Keras model in place of
    a signature (:mod:`.kerasside`), and so does a TF1 graph whose input is not 5-D.

    ``max_memory`` (bytes) or ``window`` (three sizes) compares a volume window by window, with
    ``window_border`` voxels of context (default: the mapping's receptive-field radius), within
    that much memory for both processes together (see :mod:`.windowed`); ``progress(text)``, if
    given, hears of each window as it is done.
    """
    timings: Dict[str, float] = {}
    windowed = max_memory is not None or window is not None
    if window_border is not None and not windowed:
        raise InputError("--window-border applies to a windowed verify: give --max-memory or --window too",
                         path=str(checkpoint_path))
    if windowed and (reference is not None or per_layer or reference_cache is not None):
        raise InputError("--max-memory/--window compare window by window: they do not combine with "
                         "--reference, --per-layer or --reference-cache", path=str(checkpoint_path))
    t0 = time.perf_counter()
    tf_outputs = [o for o in (tf_outputs or ()) if o]
    if tf_output:
        tf_outputs = [tf_output] + [o for o in tf_outputs if o != tf_output]
    tf2 = is_tf2_savedmodel(checkpoint_path)
    keras_file = not tf2 and is_keras_file(checkpoint_path)
    rank = None
    if not (tf2 or keras_file or reference is not None):
        rank, mapping = _tf1_input_rank(checkpoint_path, mapping, tf_input)
    if tf2 or keras_file or rank not in (None, 5, "no graph"):
        what = ("a TF2 SavedModel" if tf2 else "a Keras file" if keras_file else
                "a checkpoint without a graph, run through the mapping's keras_model or input_specs"
                if rank == "named" else f"a TF1 graph whose input is of rank {rank} (not a 5-D volume)")
        if reference is not None:
            raise InputError(f"--reference is not supported for {what} yet", path=reference,
                             hint="run verify where TensorFlow is installed")
        if figure or crop is not None or volume is not None or windowed:
            raise InputError(f"--figure, --crop, --volume and --max-memory are for 3-D volume models; {what} "
                             "takes its inputs from --synthetic or --input", path=str(checkpoint_path))
        if tf_input and tf2:
            raise InputError(f"--tf-input {tf_input!r}: a TF2 SavedModel's inputs are its signature's, all fed",
                             path=str(checkpoint_path), hint="use --signature to choose another signature")
        if tf_input and keras_file:
            raise InputError(f"--tf-input {tf_input!r}: a Keras model's inputs are all fed", path=str(checkpoint_path),
                             hint="order them with VerifySpec.inputs; give their values with --input FILE.npz")
        if signature is not None and not tf2:
            raise InputError(f"--signature applies to TF2 SavedModels; {what} has none", path=str(checkpoint_path),
                             hint="name outputs with --tf-output")
        check_dependencies(tensorflow=True, volume=None, synthetic=(), figure=None)
        m = get_mapping(mapping)
        spec = _spec(m)
        t = m.target(target)
        t.check_available()
        if per_layer and not spec.layers:
            raise MappingError(f"--per-layer: mapping {m.name!r} declares no layers to compare",
                               hint="list them in VerifySpec.layers, and their torch modules in the target's layers")
        return verify_signature(checkpoint_path, m, t, spec, synthetic=synthetic, input_file=input_file,
                                device=device, atol=atol, min_agreement=min_agreement, allow_tf32=allow_tf32,
                                tf_outputs=tf_outputs, signature=signature, trust_graph=trust_graph,
                                reference_cache=reference_cache, timings=timings, t0=t0, tf_input=tf_input,
                                per_layer=per_layer)
    if signature is not None:
        raise InputError("--signature applies to TF2 SavedModels; this checkpoint is not one",
                         path=str(checkpoint_path), hint="use --tf-input/--tf-output for TF1 graphs")
    if len(tf_outputs) > 1:
        raise InputError("several --tf-output names apply to TF2 SavedModels; a TF1 graph has one output tensor",
                         path=str(checkpoint_path))
    tf_output = tf_outputs[0] if tf_outputs else None
    if input_file is not None:
        if volume is not None:
            raise InputError("give either --input or --volume, not both")
        volume = input_file
    check_dependencies(tensorflow=reference is None, volume=None if reference else volume,
                       synthetic=synthetic if reference is None else (), figure=figure)
    m = get_mapping(mapping)  # resolved once; every stage below gets the object
    spec = _spec(m)
    t = m.target(target)
    t.check_available()
    if figure:
        from ..write.atomic import check_output

        check_output(figure, force)
    from ..read import open_checkpoint

    with open_checkpoint(checkpoint_path) as ckpt, tempfile.TemporaryDirectory(prefix="tf2pt-verify-") as workdir:
        # plan first: a damaged or mismatched checkpoint is reported by tf2pt's reader and the
        # mapping's checks, in one line, before TensorFlow starts
        entries, kwargs, ckpt_meta = _planned(ckpt, m, t, timings)
        child = ref = cached = None
        if device.startswith("cuda") and not _cuda_visible():
            pick_device(device)  # says why, before TF starts
        if reference is not None:
            ref, x, vol_info = _read_reference(reference, ckpt_meta, per_layer)
        else:
            on_cpu = device == "cpu" or (device == "auto" and not _cuda_visible())
            v = prepare_volume(spec, volume, synthetic, crop, on_cpu=on_cpu, in_channels=_in_channels(m, kwargs))
            x, vol_info = v.data, {"source": v.source, "steps": v.steps}
            if windowed:
                return _verify_windowed(checkpoint_path, m, t, spec, ckpt, entries, kwargs, ckpt_meta, x, vol_info,
                                        workdir, device=device, allow_tf32=allow_tf32, tf_input=tf_input,
                                        tf_output=tf_output, trust_graph=trust_graph, max_memory=max_memory,
                                        window=window, border=window_border, atol=atol,
                                        min_agreement=min_agreement, figure=figure, timings=timings, t0=t0,
                                        progress=progress)
            cached = _cache_path(reference_cache, ckpt_meta, m, x, tf_input, tf_output, per_layer, trust_graph)
            if cached is not None and os.path.isfile(cached):
                ref = Reference(cached)
                vol_info["steps"] = vol_info["steps"] + [f"TF side read from the reference cache ({cached})"]
            else:
                tf_start = time.perf_counter()
                child = TFChild(checkpoint_path, m, x, tf_input=tf_input, tf_output=tf_output, per_layer=per_layer,
                                workdir=workdir, trust_graph=trust_graph)
        try:
            # meanwhile, the PyTorch side: torch's import, the tensors, the model
            model, dev = _torch_side(ckpt, entries, t, kwargs, device, timings)
            # torch's forward needs nothing from TF: it runs while the TF child starts and runs
            layer_modules = {k: t.layers[k] for k in spec.layers if k in t.layers} if per_layer else {}
            pt_out, pt_layers, info = run_pytorch(model, x, dev, allow_tf32=allow_tf32, layers=layer_modules)
            timings["torch_forward_seconds"] = info.pop("torch_forward_seconds")
            if child is not None:
                ref = child.wait()
                timings["tf_process_seconds"] = time.perf_counter() - tf_start  # the whole child, start-up included
                if cached is not None:
                    _store(child.out_path, cached)
            meta = ref.meta
            for k, seconds in (meta.get("timings") or {}).items():
                timings.setdefault(k, seconds)

            start = time.perf_counter()
            result: Comparison = (compare_sampled(ref, pt_out, spec.threshold) if ref.sampled
                                  else compare(ref.output, pt_out, spec.threshold))
            layers_rows, first_bad = _per_layer(ref, pt_layers, spec, layer_modules) if per_layer else ([], None)
            timings["compare_seconds"] = time.perf_counter() - start
            report = _volume_report(
                result, meta, m, t, spec, ckpt_meta, x.shape, vol_info, atol, min_agreement, dev, allow_tf32,
                timings, t0, figure, x, diff_title="labels differ" if ref.sampled else None,
                per_layer=layers_rows, first_divergent_layer=first_bad, reference_file=reference,
                reference_cache=None if reference_cache is None else {
                    "path": cached, "hit": child is None and reference is None}, **info)
        except BaseException:
            if child is not None:
                child.stop()
            raise
        finally:
            if ref is not None:
                ref.close()
    return report


def _verify_windowed(checkpoint_path, m, t, spec, ckpt, entries, kwargs, ckpt_meta, x, vol_info, workdir, *,
                     device, allow_tf32, tf_input, tf_output, trust_graph, max_memory, window, border, atol,
                     min_agreement, figure, timings, t0, progress=None) -> VerifyReport:
    """:func:`verify`, window by window (see :mod:`.windowed`): TF's child loads the graph once
    while torch builds the model; without ``window``, two probe windows on each side measure what
    a voxel costs and the grid is planned to fit ``max_memory``; then each window runs on both
    sides in turn."""
    from . import windowed as win
    from .compare import StreamingComparison

    shape = tuple(int(d) for d in x.shape[1:])
    multiple = max(1, int(spec.spatial_multiple))
    border, exact = win.check_border(border, getattr(spec, "receptive_radius", None))
    if window is not None:
        window = [min(int(w), d) for w, d in zip(window, shape)]
        if len(window) != len(shape) or any(w < 1 or (w < d and w % multiple) for w, d in zip(window, shape)):
            raise InputError(f"--window {' '.join(map(str, window))}: give {len(shape)} sizes, each a multiple "
                             f"of {multiple} (the model's spatial multiple)", path=str(checkpoint_path))
        win.plan_grid(shape, window, border)  # a window with no room for a core: said before TF starts
    x_path = os.path.join(workdir, "input.npy")
    np.save(x_path, x)
    tf_start = time.perf_counter()
    child = win.TFWindowChild(checkpoint_path, m, x_path, tf_input=tf_input, tf_output=tf_output, workdir=workdir,
                              trust_graph=trust_graph)
    estimate = None
    try:
        model, dev = _torch_side(ckpt, entries, t, kwargs, device, timings)  # while TF loads its graph
        model = model.to(dev).eval()
        meta = child.ready()
        timings["tf_start_seconds"] = time.perf_counter() - tf_start
        for k, seconds in (meta.get("timings") or {}).items():
            timings.setdefault(k, seconds)
        tf_peak, pt_peak = meta["rss"], win.rss_bytes()
        together = tf_peak + pt_peak

        def torch_window(box):
            with win.PeakRSS(other=child.proc.pid) as mem:
                out, _, info = run_pytorch(model, x[(slice(None),) + tuple(slice(a, b) for a, b in box)], dev,
                                           allow_tf32=allow_tf32)
            return out, mem, info

        if window is None:  # measure what a window costs each side, then plan
            pt_base, tf_points, pt_points, gpu_points, tf_idle = win.rss_bytes(), [], [], [], meta["rss"]
            for box in win.probe_boxes(shape, multiple):
                _, tf_probe = child.run(box, box)
                pt_out, mem, info = torch_window(box)
                if "peak_gpu_memory_bytes" in info:
                    gpu_points.append((win.box_voxels(box), info["peak_gpu_memory_bytes"]))
                channels = pt_out.shape[0]
                del pt_out
                tf_points.append((win.box_voxels(box), tf_probe["peak_rss"]))
                pt_points.append((win.box_voxels(box), mem.peak))
                tf_idle = max(tf_idle, tf_probe["rss_after"])
                tf_peak, pt_peak = max(tf_peak, tf_probe["peak_rss"]), max(pt_peak, mem.peak)
                together = max(together, tf_probe["peak_rss"] + pt_base, mem.together)
            window, estimate = win.plan_memory(shape, multiple, max_memory, border, meta["rss"], tf_points, tf_idle,
                                               pt_base, pt_points, out_channels=channels, in_channels=x.shape[0],
                                               gpu_points=gpu_points or None)
        windows = win.plan_grid(shape, window, border)
        acc = None
        tf_seconds = pt_seconds = 0.0
        compare_seconds = 0.0
        for n, w in enumerate(windows, start=1):
            idle = win.rss_bytes()  # this process, while TF runs the window
            tf_core, answer = child.run(w.box, w.core)
            pt_out, mem, info = torch_window(w.box)
            start = time.perf_counter()
            if acc is None:
                acc = StreamingComparison(shape, tf_core.shape[0], spec.threshold)
            acc.add(tf_core, pt_out[(slice(None),) + w.core_in_window()], w.core_slices())
            compare_seconds += time.perf_counter() - start
            del tf_core, pt_out
            tf_seconds += answer["seconds"]
            pt_seconds += info["torch_forward_seconds"]
            tf_peak, pt_peak = max(tf_peak, answer["peak_rss"]), max(pt_peak, mem.peak)
            # TF ran while this process held what it holds between windows; then the reverse, sampled
            together = max(together, answer["peak_rss"] + idle, mem.together)
            if progress is not None:
                progress(f"window {n} of {len(windows)} ({'x'.join(str(b - a) for a, b in w.box)}): TF "
                         f"{answer['seconds']:.1f} s, PyTorch {info['torch_forward_seconds']:.1f} s")
        child.close()
    except BaseException:
        child.stop()
        raise
    timings.update(tf_forward_seconds=tf_seconds, torch_forward_seconds=pt_seconds, compare_seconds=compare_seconds,
                   tf_process_seconds=time.perf_counter() - tf_start)
    grid = win.grid_summary(windows, shape, window, border, exact)
    grid.update(max_memory_bytes=max_memory, memory_plan=estimate,
                peak_rss_bytes={"tf": tf_peak, "torch": pt_peak, "together": together})
    steps = list(vol_info["steps"]) + [
        f"compared in {len(windows)} window(s) of {'x'.join(map(str, window))} with a {border}-voxel border "
        f"({grid['work_vs_whole_volume']:.2f}x the whole volume's voxels run)"]
    return _volume_report(acc.finish(), meta, m, t, spec, ckpt_meta, x.shape, {**vol_info, "steps": steps}, atol,
                          min_agreement, dev, allow_tf32, timings, t0, figure, x, windowed=grid)


# ------------------------------------------------------------------------------------------------
# TF2 SavedModels: a signature's inputs and outputs, of any rank
# ------------------------------------------------------------------------------------------------


def is_tf2_savedmodel(checkpoint_path) -> bool:
    """Whether ``checkpoint_path`` is a TF2 SavedModel (read from its proto, without TF)."""
    from ..errors import Tf2ptError
    from ..read.paths import resolve
    from .savedmodel import savedmodel_version

    path = os.fspath(checkpoint_path)
    if os.path.basename(path) == "saved_model.pb":
        path = os.path.dirname(path) or "."
    try:
        _, kind, _, directory = resolve(path)
    except Tf2ptError:
        return False  # open_checkpoint says what is wrong
    return kind == "savedmodel" and savedmodel_version(directory) == "tf2"


def _tf1_input_rank(checkpoint_path, mapping, tf_input: Optional[str]):
    """``(rank, mapping)``: the rank of the TF1 graph's input placeholder (``tf_input``, else the
    mapping's), read without TF (:mod:`.graphshape`), ``None`` where it cannot be told (the
    volume path decides); for a checkpoint without a graph, ``"named"`` where the mapping
    declares how to run it with named inputs (``keras_model``, or ``input_specs`` for its
    ``tf_reference``), else ``"no graph"``; the mapping resolved (or as given, when it cannot
    be: reported later)."""
    from ..errors import Tf2ptError
    from .graphshape import graph_file, graph_input_rank

    try:
        mapping = get_mapping(mapping)
    except Tf2ptError:
        return None, mapping  # reported below, where the mapping is resolved
    spec = mapping.verify
    if spec is not None and graph_file(checkpoint_path) is False:
        named = getattr(spec, "keras_model", None) is not None or bool(getattr(spec, "input_specs", None))
        return ("named" if named else "no graph"), mapping
    return graph_input_rank(checkpoint_path, tf_input or getattr(spec, "tf_input", None)), mapping


def is_keras_file(checkpoint_path) -> bool:
    """Whether ``checkpoint_path`` is a Keras file (``.keras``, ``.h5``, ``.weights.h5``,
    ``.weights.json``), sniffed by tf2pt's reader without TF."""
    from ..errors import Tf2ptError
    from ..read.paths import sniff

    try:
        return sniff(os.fspath(checkpoint_path)) == "keras"
    except Tf2ptError:
        return False  # open_checkpoint says what is wrong


def layout_of(spec, rank: int) -> str:
    """The layout bridge for an array of ``rank`` (batch axis included)."""
    if spec.layout is not None:
        return spec.layout
    return "channels_last" if rank >= 3 else "none"


def to_torch_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """TF ``(N, *spatial, C)`` -> torch ``(N, C, *spatial)`` for channels_last (rank >= 3)."""
    if layout == "channels_last" and x.ndim >= 3:
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))
    return x


def to_tf_layout(y: np.ndarray, layout: str) -> np.ndarray:
    if layout == "channels_last" and y.ndim >= 3:
        return np.ascontiguousarray(np.moveaxis(y, 1, -1))
    return y


class TFSignatureChild(TFChild):
    """:class:`TFChild` for a TF2 SavedModel: the child makes the inputs from the signature."""

    def __init__(self, checkpoint_path, mapping, *, signature, synthetic, input_file, tf_outputs, workdir,
                 trust_graph: bool = False, tf_input: Optional[str] = None, per_layer: bool = False):
        self.checkpoint_path = checkpoint_path
        self.out_path = os.path.join(workdir, "reference.npz")
        self.error_path = os.path.join(workdir, "error.json")
        request = {"signature_mode": True, "checkpoint": os.fspath(checkpoint_path), "mapping": describe(mapping),
                   "output": self.out_path, "error": self.error_path, "signature": signature,
                   "synthetic": list(synthetic) if synthetic is not None else None,
                   "input_file": None if input_file is None else os.path.abspath(input_file),
                   "tf_outputs": list(tf_outputs or ()), "trust_graph": trust_graph, "tf_input": tf_input,
                   "per_layer": per_layer}
        self._start(request, workdir)


def _signature_summary(d: Dict[str, Any]) -> List[str]:
    lines = [f"  inputs:         " + "; ".join(f"{k} {v['shape']} {v['dtype']} ({v['layout']})"
                                              for k, v in d["inputs"].items()),
             f"                  {d['input_source']}",
             f"  devices:        TF {d['devices']['tf']}, PyTorch {d['devices']['torch']}"
             + (" (TF32 allowed)" if d.get("allow_tf32") else "")]
    for o in d["outputs"]:
        kind = o["kind"] + (" (inferred from its shape)" if o["kind_inferred"] else "")
        lines.append(f"  output {o['name']}: {o['shape']} {kind}")
        lines.append(f"    max abs error:  {o['max_abs_error']:.3e}  (atol {o['atol']:.3e}: {d['thresholds']['atol_rule']})")
        lines.append(f"    max rel error:  {o['max_rel_error']:.3e}   mean abs error: {o['mean_abs_error']:.3e}   "
                     f"range: {o['output_range']:.4g}")
        if "top1_agreement" in o:
            lines.append(f"    top-1 agreement {o['top1_agreement'] * 100:.2f}%, top-{o['top_k']} agreement "
                         f"{o['top5_agreement'] * 100:.2f}% of {o['rows']} rows")
        if "label_agreement" in o:
            lines.append(f"    label agreement {o['label_agreement'] * 100:.4f}% of {o['voxels']} voxels, "
                         f"min Dice {o['dice_min']:.4f} over {o['labels_compared']} labels")
        if "min_cosine_similarity" in o:
            lines.append(f"    min cosine similarity {o['min_cosine_similarity']:.6f}")
        lines.append(f"    non-finite:     TF {o['nonfinite']['tf']}, PyTorch {o['nonfinite']['torch']}")
    return lines


def verify_signature(checkpoint_path, m, t, spec, *, synthetic, input_file, device, atol, min_agreement,
                     allow_tf32, tf_outputs, signature, trust_graph, reference_cache, timings, t0,
                     tf_input: Optional[str] = None, per_layer: bool = False) -> VerifyReport:
    """verify for a TF2 SavedModel or a Keras file: TF runs its signature (or Keras its model) on
    inputs made from the model's input specs (or ``input_file``); torch runs the converted model
    on the same inputs, moved to its layout; every output is compared with the metrics that fit
    its kind."""
    from ..read import open_checkpoint
    from .compare import compare_output, verdict_output

    with open_checkpoint(checkpoint_path) as ckpt, tempfile.TemporaryDirectory(prefix="tf2pt-verify-") as workdir:
        entries, kwargs, ckpt_meta = _planned(ckpt, m, t, timings)
        if device.startswith("cuda") and not _cuda_visible():
            pick_device(device)
        cached = None
        if reference_cache is not None:
            import hashlib

            key = hashlib.sha256(json.dumps([ckpt_meta["checkpoint_files"], m.name, signature, list(synthetic or ()),
                                             list(tf_outputs or ()), bool(trust_graph), __version__]
                                            + ([tf_input] if tf_input else []) + (["per_layer"] if per_layer else [])
                                            ).encode())
            if input_file is not None:
                from ..write.provenance import file_sha256

                key.update(file_sha256(input_file).encode())
            cached = os.path.join(reference_cache, key.hexdigest() + ".npz")
        child = ref = None
        if cached is not None and os.path.isfile(cached):
            ref = Reference(cached)
        else:
            tf_start = time.perf_counter()
            child = TFSignatureChild(checkpoint_path, m, signature=signature, synthetic=synthetic, input_file=input_file,
                                     tf_outputs=tf_outputs, workdir=workdir, trust_graph=trust_graph, tf_input=tf_input,
                                     per_layer=per_layer)
        try:
            model, dev = _torch_side(ckpt, entries, t, kwargs, device, timings)
            if child is not None:
                ref = child.wait()
                timings["tf_process_seconds"] = time.perf_counter() - tf_start
                if cached is not None:
                    _store(child.out_path, cached)
            meta = ref.meta
            for k, seconds in (meta.get("timings") or {}).items():
                timings.setdefault(k, seconds)
            layouts = {k: layout_of(spec, v.ndim) for k, v in ref.inputs.items()}
            out_layout = spec.layout or ("channels_last" if "channels_last" in layouts.values() else "none")
            layer_modules = {k: t.layers[k] for k in spec.layers if k in t.layers} if per_layer else {}
            pt_layers: Dict[str, np.ndarray] = {}
            pt_outs, info = run_pytorch_inputs(model, [to_torch_layout(v, layouts[k]) for k, v in ref.inputs.items()],
                                               dev, allow_tf32=allow_tf32, layers=layer_modules, captured=pt_layers)
            timings["torch_forward_seconds"] = info.pop("torch_forward_seconds")
            names = list(ref.outputs)
            if len(pt_outs) != len(names):
                raise MappingError(f"the target model returned {len(pt_outs)} output(s), TF's signature "
                                   f"{len(names)} ({', '.join(names)})",
                                   hint="return one tensor per output, in the order of VerifySpec.outputs / --tf-output")
            start = time.perf_counter()
            rows, reasons = [], []
            atol_rule = None
            for name, pt in zip(names, pt_outs):
                tf_out = ref.outputs[name]
                row = compare_output(name, tf_out, to_tf_layout(pt, out_layout), spec.output_kind, spec.threshold)
                row["atol"], atol_rule = _atol(atol, spec, row)
                reasons += verdict_output(row, row["atol"], min_agreement)
                rows.append(row)
            layer_rows, first_bad = _per_layer_named(ref, pt_layers, spec, layer_modules) if per_layer else ([], None)
            timings["compare_seconds"] = time.perf_counter() - start
            timings["total_seconds"] = time.perf_counter() - t0
        except BaseException:
            if child is not None:
                child.stop()
            raise
        finally:
            if ref is not None:
                inputs_info = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "layout": layout_of(spec, v.ndim)}
                               for k, v in (ref.inputs or {}).items()} if ref.signature else {}
                # the range of integer inputs (token ids): what the embeddings were fed
                input_values = {k: [int(v.min()), int(v.max())] for k, v in (ref.inputs or {}).items()
                                if ref.signature and v.dtype.kind in "iu" and v.size}
                ref.close()
    worst = max(rows, key=lambda r: r["max_abs_error"])
    data = {
        "max_abs_error": worst["max_abs_error"], "max_rel_error": max(r["max_rel_error"] for r in rows),
        "mean_abs_error": worst["mean_abs_error"], "output_range": worst["output_range"],
        "max_abs_error_over_range": max(r["max_abs_error_over_range"] for r in rows),
        "nonfinite": {"tf": sum(r["nonfinite"]["tf"] for r in rows), "torch": sum(r["nonfinite"]["torch"] for r in rows)},
        "outputs": rows,
        "per_layer": layer_rows, "first_divergent_layer": first_bad,
        "inputs": inputs_info,
        "input_values": input_values,
        "input_source": (f"read from {input_file}" if input_file else
                         f"synthetic (seeded), the inputs' None sizes filled from --synthetic {list(synthetic or [])}"),
        "tf_side": meta.get("tf_side"), "tf_side_reason": meta.get("tf_side_reason"), "tf_graph": meta.get("tf_graph"),
        "signature": meta.get("signature"),
        "reference_vs_graph_max_abs": meta.get("reference_vs_graph_max_abs"),
        "tf_notes": list(meta.get("tf_notes") or []), "mapping": m.name, "target": t.name, **ckpt_meta,
        "thresholds": {"atol_rule": atol_rule, "min_agreement": min_agreement},
        "devices": {"tf": meta.get("tf_device", "cpu"), "torch": device_name(dev)}, "allow_tf32": allow_tf32,
        "versions": {**versions(), "tensorflow": meta.get("tf_version")}, "timings": timings,
        "reference_cache": None if reference_cache is None else {"path": cached, "hit": child is None},
        "reason": "; ".join(reasons), **info,
    }
    return VerifyReport(not reasons, data)

"""``tf2pt verify``: run TensorFlow and PyTorch on one volume and measure how far apart they are.

Nothing is assumed: the TF output comes from running TF (the original graph when there is one,
see :mod:`tf2pt._tfside`), the PyTorch output from running the converted weights in the target
model. Two environments are supported: ``save_reference`` needs TF and not torch; ``verify``
with ``reference=`` needs torch and not TF. A plain ``verify`` runs the TF side in a child
process (so TF and torch never share one), then the PyTorch side here.

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
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ._version import __version__
from .errors import InputError, MappingError, Tf2ptError
from .reference import Reference, labels_of, save_reference_file
from .registry import get_mapping

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
# the TF side
# ------------------------------------------------------------------------------------------------


def _checkpoint_meta(checkpoint) -> Dict[str, Any]:
    from .conversion import file_sha256

    return {"checkpoint": str(checkpoint.path),
            "checkpoint_files": {os.path.basename(str(p)): file_sha256(p) for p in checkpoint.files}}


def save_reference(checkpoint_path, mapping, out_path, *, volume=None, synthetic=None, crop=None,
                   tf_input=None, tf_output=None, per_layer=False, force=False,
                   sample_voxels: Optional[int] = None) -> Dict[str, Any]:
    """Run the TF side here (needs TensorFlow, not torch) and write ``out_path``
    (``sample_voxels``: a compact reference, see :mod:`tf2pt.reference`)."""
    from ._atomic import check_output
    from ._tfside import compute_reference
    from .reader import open_checkpoint

    check_output(out_path, force)
    m = get_mapping(mapping)
    spec = _spec(m)
    with open_checkpoint(checkpoint_path) as ckpt:
        in_channels = _in_channels(m, ckpt)
        v = prepare_volume(spec, volume, synthetic, crop, on_cpu=True, in_channels=in_channels)
        start = time.perf_counter()
        result = compute_reference(ckpt, m, v.data, tf_input=tf_input, tf_output=tf_output, per_layer=per_layer)
        meta = {**_checkpoint_meta(ckpt), "mapping": m.name, "volume": {"source": v.source, "steps": v.steps},
                "tf2pt_version": __version__, "python": platform.python_version(),
                "tf_total_seconds": time.perf_counter() - start}
    save_reference_file(out_path, v.data, result, meta, force=True, sample_voxels=sample_voxels,
                        threshold=spec.threshold)
    return {**meta, **result["meta"]}


def _run_tf_subprocess(checkpoint_path, mapping, x, *, tf_input, tf_output, per_layer, workdir) -> Reference:
    """The TF side in a child process (TF and torch never share a process)."""
    in_path = os.path.join(workdir, "input.npy")
    out_path = os.path.join(workdir, "reference.npz")
    np.save(in_path, x)
    request = {"checkpoint": os.fspath(checkpoint_path), "mapping": mapping, "input": in_path, "output": out_path,
               "tf_input": tf_input, "tf_output": tf_output, "per_layer": per_layer}
    req_path = os.path.join(workdir, "request.json")
    with open(req_path, "w") as fh:
        json.dump(request, fh)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "tf2pt._tfside", req_path], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        tail = lines[-1] if lines else f"exit code {proc.returncode}"
        if tail.startswith("tf2pt: error: "):
            raise InputError(tail[len("tf2pt: error: "):])
        raise InputError(f"the TensorFlow side failed: {tail}", path=checkpoint_path)
    return Reference(out_path)


# ------------------------------------------------------------------------------------------------
# the PyTorch side
# ------------------------------------------------------------------------------------------------


def _pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to PyTorch", hint="use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"bad --device {device!r}: {exc}") from None


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_pytorch(model, x: np.ndarray, device, *, allow_tf32: bool = False, layers: Optional[Dict[str, str]] = None):
    """Forward ``x`` (C, D, H, W) through ``model`` in eval mode. Returns ``(output, layer outputs,
    info)`` as numpy, channels-first, batch axis dropped."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    captured: Dict[str, np.ndarray] = {}
    hooks = []
    try:
        model = model.to(device).eval()
        modules = dict(model.named_modules())
        for layer, path in (layers or {}).items():
            if path not in modules:
                raise MappingError(f"--per-layer: the target model has no module {path!r} (layer {layer!r})")
            hooks.append(modules[path].register_forward_hook(
                lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out[0].detach().float().cpu().numpy())))
        inp = torch.from_numpy(np.ascontiguousarray(x[None])).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(inp)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        info = {"torch_forward_seconds": seconds}
        if device.type == "cuda":
            info["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out[0].float().cpu().numpy(), captured, info
    finally:
        for h in hooks:
            h.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------------------------
# comparing
# ------------------------------------------------------------------------------------------------


def dice_per_label(a: np.ndarray, b: np.ndarray) -> Dict[int, float]:
    """Dice of each label present in either map (computed with bincounts: one pass each)."""
    n = int(max(a.max(), b.max())) + 1
    count_a = np.bincount(a.ravel(), minlength=n)
    count_b = np.bincount(b.ravel(), minlength=n)
    both = np.bincount(a.ravel()[a.ravel() == b.ravel()], minlength=n)
    out = {}
    for label in np.nonzero(count_a + count_b)[0]:
        out[int(label)] = float(2.0 * both[label] / (count_a[label] + count_b[label]))
    return out


def compare(tf_out: np.ndarray, pt_out: np.ndarray, threshold: Optional[float] = None) -> Dict[str, Any]:
    """Error metrics between two outputs of the same shape ``(C, ...)``.

    Works one channel at a time in float64, so comparing a 160-channel whole-brain output needs
    only a few volumes of scratch memory. Where either side is not finite the error counts as
    infinite (and the non-finite check fails on its own). ``max_rel_error`` is elementwise,
    over the values not tiny against the output's scale (``|tf| >= 1e-3 x max |tf|``).
    """
    if tf_out.shape != pt_out.shape:
        raise InputError(f"TF output {list(tf_out.shape)} and PyTorch output {list(pt_out.shape)} differ in shape")
    lo, hi, nonfinite = np.inf, -np.inf, {"tf": 0, "torch": 0}
    for c in range(tf_out.shape[0]):
        t = tf_out[c]
        finite = np.isfinite(t)
        nonfinite["tf"] += int(t.size - finite.sum())
        nonfinite["torch"] += int((~np.isfinite(pt_out[c])).sum())
        if finite.any():
            lo, hi = min(lo, float(t[finite].min())), max(hi, float(t[finite].max()))
    if lo > hi:
        lo = hi = 0.0
    out_range = hi - lo
    scale = max(abs(lo), abs(hi), 1e-30)
    max_abs, max_rel, total, count = 0.0, 0.0, 0.0, 0
    diff_map = np.zeros(tf_out.shape[1:], dtype=np.float32)
    for c in range(tf_out.shape[0]):
        t = tf_out[c].astype(np.float64)
        both = np.isfinite(t) & np.isfinite(pt_out[c])
        d = np.where(both, np.abs(t - pt_out[c].astype(np.float64)), np.inf)
        if d.size:
            max_abs = max(max_abs, float(d.max()))
            total += float(d[both].sum())
            count += int(both.sum())
            significant = both & (np.abs(t) >= 1e-3 * scale)
            if significant.any():
                max_rel = max(max_rel, float((d[significant] / np.abs(t[significant])).max()))
            np.maximum(diff_map, d.astype(np.float32), out=diff_map)
    tf_labels, pt_labels = labels_of(tf_out, threshold), labels_of(pt_out, threshold)
    agreement = float((tf_labels == pt_labels).mean()) if tf_labels.size else 1.0
    mean_abs = total / count if count else (float("inf") if tf_out.size else 0.0)
    return {
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "mean_abs_error": mean_abs,
        "output_range": out_range,
        "max_abs_error_over_range": max_abs / out_range if out_range else (0.0 if max_abs == 0 else float("inf")),
        "argmax_agreement": agreement,
        "voxels": int(tf_labels.size),
        "nonfinite": nonfinite,
        "_labels": (tf_labels, pt_labels),
        "_diff_map": diff_map,
    }


def compare_sampled(ref: Reference, pt_out: np.ndarray, threshold: Optional[float] = None) -> Dict[str, Any]:
    """:func:`compare` against a sampled reference: errors over the sampled voxels (all
    channels), labels, Dice and agreement over every voxel, range from the full TF output."""
    info = ref.sampled
    if list(pt_out.shape) != info["output_shape"]:
        raise InputError(f"TF output {info['output_shape']} and PyTorch output {list(pt_out.shape)} differ in shape")
    metrics = compare(ref.output_sample, pt_out.reshape(pt_out.shape[0], -1)[:, ref.sample_index], threshold)
    out_range = info["output_max"] - info["output_min"]
    pt_labels = labels_of(pt_out, threshold)
    tf_labels = ref.labels.reshape(pt_labels.shape)
    metrics.update(
        output_range=out_range,
        max_abs_error_over_range=metrics["max_abs_error"] / out_range if out_range else float("inf"),
        argmax_agreement=float((tf_labels == pt_labels).mean()),
        voxels=int(pt_labels.size),
        nonfinite={"tf": info["nonfinite"], "torch": int((~np.isfinite(pt_out)).sum())},
        error_scope=f"sampled: all channels at {info['voxels']} of {info['of']} voxels (seed {info['seed']}); "
                    "labels, agreement and Dice over every voxel",
        _labels=(tf_labels, pt_labels),
        _diff_map=(tf_labels != pt_labels).astype(np.float32),
    )
    return metrics


def _label_names(spec) -> Dict[int, str]:
    if not spec.label_table:
        return {}
    from .figure import read_color_table

    return {i: name for i, (name, _) in read_color_table(spec.label_table).items()}


def _spec(mapping):
    if mapping.verify is None:
        raise MappingError(f"mapping {mapping.name!r} declares no verification facts (VERIFY)")
    return mapping.verify


def _in_channels(mapping, checkpoint) -> int:
    kwargs = mapping.model_kwargs(checkpoint) if mapping.model_kwargs else {}
    return int(kwargs.get("in_channels", mapping.source.meta.get("in_channels", 1)))


def _versions() -> Dict[str, str]:
    import torch

    return {"tf2pt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda": str(torch.version.cuda)}


def verify(checkpoint_path, mapping="highresnet", target: Optional[str] = None, *, volume: Optional[str] = None,
           synthetic: Optional[Sequence[int]] = None, crop=None, device: str = "auto", atol: Optional[float] = None,
           min_agreement: float = DEFAULT_MIN_AGREEMENT, per_layer: bool = False, allow_tf32: bool = False,
           tf_input: Optional[str] = None, tf_output: Optional[str] = None, reference: Optional[str] = None,
           figure: Optional[str] = None, force: bool = False) -> VerifyReport:
    """Measure parity between TF and the converted PyTorch model. Returns a :class:`VerifyReport`.

    With ``reference=`` the TF side is read from a file made by :func:`save_reference` (no TF
    needed here); the checkpoint must be the one that file was made from.
    """
    from .conversion import convert
    from .reader import open_checkpoint
    from .registry import build_model

    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    m = get_mapping(mapping)
    spec = _spec(m)
    t = m.target(target)
    t.check_available()
    dev = _pick_device(device)
    if figure:
        from ._atomic import check_output

        check_output(figure, force)

    # convert first: a damaged or mismatched checkpoint is reported by tf2pt's reader and the
    # mapping checks, in one line, before TensorFlow is started
    start = time.perf_counter()
    with open_checkpoint(checkpoint_path) as ckpt:
        ckpt_meta = _checkpoint_meta(ckpt)
        in_channels = _in_channels(m, ckpt)
        state_dict, conv_report = convert(ckpt, m, t.name)
    model = build_model(m, t.name, **conv_report.model_kwargs)
    model.load_state_dict(state_dict, strict=True)
    timings["convert_seconds"] = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="tf2pt-verify-") as workdir:
        if reference is not None:
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
            x = ref.input
            vol_info = {"source": ref.meta.get("volume", {}).get("source", "reference file"),
                        "steps": list(ref.meta.get("volume", {}).get("steps", [])) + [f"input read from {reference}"]}
        else:
            v = prepare_volume(spec, volume, synthetic, crop, on_cpu=dev.type == "cpu", in_channels=in_channels)
            x = v.data
            vol_info = {"source": v.source, "steps": v.steps}
            start = time.perf_counter()
            ref = _run_tf_subprocess(checkpoint_path, m.origin if m.origin.endswith(".py") else m.name, x,
                                     tf_input=tf_input, tf_output=tf_output, per_layer=per_layer, workdir=workdir)
            timings["tf_seconds"] = time.perf_counter() - start
        meta = ref.meta
        for k, v_ in (meta.get("timings") or {}).items():
            timings.setdefault(k, v_)

        layer_modules = {k: t.layers[k] for k in spec.layers if k in t.layers} if per_layer else None
        pt_out, pt_layers, info = run_pytorch(model, x, dev, allow_tf32=allow_tf32, layers=layer_modules)
        timings["torch_forward_seconds"] = info.pop("torch_forward_seconds")

        if ref.sampled:
            metrics = compare_sampled(ref, pt_out, spec.threshold)
        else:
            metrics = compare(ref.output, pt_out, spec.threshold)
            metrics["error_scope"] = "every voxel and channel"
        tf_labels, pt_labels = metrics.pop("_labels")
        diff_map = metrics.pop("_diff_map")
        if atol is not None:
            atol_value, atol_rule = atol, f"--atol {atol:g}"
        elif spec.atol is not None:
            atol_value, atol_rule = spec.atol, f"the mapping's {spec.atol:g}"
        else:
            atol_value = DEFAULT_ATOL_FRACTION * metrics["output_range"]
            atol_rule = f"{DEFAULT_ATOL_FRACTION:g} x output range"
        names = _label_names(spec)
        dice = dice_per_label(tf_labels, pt_labels)
        worst = sorted(dice.items(), key=lambda kv: (kv[1], kv[0]))[:5]
        layers_rows: List[Dict[str, Any]] = []
        first_bad = None
        if per_layer:
            for layer in spec.layers:
                if layer not in ref.layer_names or layer not in pt_layers:
                    continue
                lm = compare(ref.layer(layer), pt_layers[layer])
                ok = lm["max_abs_error_over_range"] <= DEFAULT_ATOL_FRACTION and not any(lm["nonfinite"].values())
                if not ok and first_bad is None:
                    first_bad = layer
                layers_rows.append({"layer": layer, "module": layer_modules[layer], "max_abs_error": lm["max_abs_error"],
                                    "max_rel_error": lm["max_abs_error_over_range"], "status": "ok" if ok else "DIVERGES"})
        finite = not any(metrics["nonfinite"].values())
        passed = finite and metrics["max_abs_error"] <= atol_value and metrics["argmax_agreement"] >= min_agreement
        reasons = []
        if not finite:
            reasons.append("non-finite values in the outputs")
        if metrics["max_abs_error"] > atol_value:
            reasons.append(f"max abs error {metrics['max_abs_error']:.3e} > atol {atol_value:.3e}")
        if metrics["argmax_agreement"] < min_agreement:
            reasons.append(f"label agreement {metrics['argmax_agreement']:.6f} < {min_agreement}")
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
            "devices": {"tf": meta.get("tf_device", "cpu"), "torch": _device_name(dev)},
            "allow_tf32": allow_tf32,
            "versions": {**_versions(), "tensorflow": meta.get("tf_version")},
            "timings": timings,
            "reference_file": reference,
            "reason": "; ".join(reasons),
            **info,
        }
        report = VerifyReport(passed, data)
        if figure:
            from .figure import parity_figure

            diff_title = "labels differ" if ref.sampled else None
            parity_figure(figure, x, tf_labels, pt_labels, diff_map, spec, title=report.summary().splitlines()[0],
                          diff_title=diff_title)
            data["figure"] = figure
        ref.close()
    return report

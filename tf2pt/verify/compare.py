"""Comparing TF's output with PyTorch's: errors, label agreement, Dice.

Every function returns a :class:`Comparison`: the metrics (JSON-ready) and the arrays a figure
needs, kept apart so no caller has to pop private keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from ..errors import InputError
from .reference import Reference, labels_of


@dataclass
class Comparison:
    metrics: Dict[str, Any]
    tf_labels: np.ndarray
    pt_labels: np.ndarray
    #: per-voxel max abs error over channels (or, for a sampled reference, where labels differ)
    diff_map: np.ndarray


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


def compare(tf_out: np.ndarray, pt_out: np.ndarray, threshold: Optional[float] = None) -> Comparison:
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
    metrics = {
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
        "mean_abs_error": mean_abs,
        "output_range": out_range,
        "max_abs_error_over_range": max_abs / out_range if out_range else (0.0 if max_abs == 0 else float("inf")),
        "argmax_agreement": agreement,
        "voxels": int(tf_labels.size),
        "nonfinite": nonfinite,
        "error_scope": "every voxel and channel",
    }
    return Comparison(metrics, tf_labels, pt_labels, diff_map)


def compare_sampled(ref: Reference, pt_out: np.ndarray, threshold: Optional[float] = None) -> Comparison:
    """:func:`compare` against a sampled reference: errors over the sampled voxels (all
    channels), labels, Dice and agreement over every voxel, range from the full TF output."""
    info = ref.sampled
    if list(pt_out.shape) != info["output_shape"]:
        raise InputError(f"TF output {info['output_shape']} and PyTorch output {list(pt_out.shape)} differ in shape")
    metrics = compare(ref.output_sample, pt_out.reshape(pt_out.shape[0], -1)[:, ref.sample_index], threshold).metrics
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
    )
    return Comparison(metrics, tf_labels, pt_labels, (tf_labels != pt_labels).astype(np.float32))

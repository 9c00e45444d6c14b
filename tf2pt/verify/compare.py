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


#: voxels whose labels differ that the report lists, with how near a tie each was
LABEL_DIFFERENCES_KEPT = 20

#: how many (relative error, |TF value|) pairs each window keeps for the relative error, whose
#: significance threshold (1e-3 x the whole output's scale) is known only after the last window
REL_KEEP = 4096


class StreamingComparison:
    """:func:`compare`, accumulated one window at a time: ``add(tf, pt, where)`` for each part
    ``(C, ...)`` of the output and the slices it fills, then ``finish()``. Scratch memory is a
    few single-channel float64 arrays of one part; the labels and the per-voxel error map are
    assembled in the full shape (int16/int32 and float32: compact next to the outputs).

    Every figure is exact over all parts, as one :func:`compare` of the whole output would give
    it. The relative error needs the whole output's scale, known only at the end: each part
    keeps its :data:`REL_KEEP` largest relative errors (with their TF values) over the values
    significant against the scale seen so far (which only grows), and the figure is exact unless
    a part's kept pairs all fell under the final threshold while it had more, which the metrics
    then say (``max_rel_error_is_lower_bound``)."""

    def __init__(self, shape, channels: int, threshold: Optional[float] = None):
        self.shape, self.threshold = tuple(shape), threshold
        label_dtype = np.int16 if channels < 2 ** 15 else np.int32
        self.tf_labels = np.zeros(self.shape, label_dtype)
        self.pt_labels = np.zeros(self.shape, label_dtype)
        self.diff_map = np.zeros(self.shape, np.float32)
        self.lo, self.hi = np.inf, -np.inf
        self.nonfinite = {"tf": 0, "torch": 0}
        self.max_abs, self.total, self.count = 0.0, 0.0, 0
        self._rel: list = []  # per part: (rel errors, |tf| values, smallest rel error dropped or -1)
        self.label_differences: list = []

    def add(self, tf_out: np.ndarray, pt_out: np.ndarray, where=None) -> None:
        """Account for one part: ``tf_out``/``pt_out`` ``(C, ...)``, filling ``where`` (a tuple of
        slices of the full shape; default: all of it)."""
        if tf_out.shape != pt_out.shape:
            raise InputError(f"TF output {list(tf_out.shape)} and PyTorch output {list(pt_out.shape)} differ in shape")
        where = tuple(slice(None) for _ in self.shape) if where is None else tuple(where)
        for c in range(tf_out.shape[0]):
            t = tf_out[c]
            finite = np.isfinite(t)
            self.nonfinite["tf"] += int(t.size - finite.sum())
            self.nonfinite["torch"] += int((~np.isfinite(pt_out[c])).sum())
            if finite.any():
                self.lo, self.hi = min(self.lo, float(t[finite].min())), max(self.hi, float(t[finite].max()))
        scale = max(abs(self.lo), abs(self.hi), 1e-30) if self.lo <= self.hi else 1e-30
        diff_map = self.diff_map[where]
        rels, mags = [], []
        for c in range(tf_out.shape[0]):
            t = tf_out[c].astype(np.float64)
            both = np.isfinite(t) & np.isfinite(pt_out[c])
            d = np.where(both, np.abs(t - pt_out[c].astype(np.float64)), np.inf)
            if d.size:
                self.max_abs = max(self.max_abs, float(d.max()))
                self.total += float(d[both].sum())
                self.count += int(both.sum())
                significant = both & (np.abs(t) >= 1e-3 * scale)
                if significant.any():
                    rels.append(d[significant] / np.abs(t[significant]))
                    mags.append(np.abs(t[significant]))
                    if rels[-1].size > REL_KEEP:  # keep the part's scratch bounded
                        top = np.argpartition(rels[-1], -REL_KEEP)[-REL_KEEP:]
                        dropped = float(np.delete(rels[-1], top).max())
                        rels[-1], mags[-1] = rels[-1][top], mags[-1][top]
                        self._rel.append((np.empty(0), np.empty(0), dropped))
                np.maximum(diff_map, d.astype(np.float32), out=diff_map)
        if rels:
            rel, mag = np.concatenate(rels), np.concatenate(mags)
            dropped = -1.0
            if rel.size > REL_KEEP:
                top = np.argpartition(rel, -REL_KEEP)[-REL_KEEP:]
                dropped = float(np.delete(rel, top).max())
                rel, mag = rel[top], mag[top]
            self._rel.append((rel, mag, dropped))
        tf_labels, pt_labels = labels_of(tf_out, self.threshold), labels_of(pt_out, self.threshold)
        self.tf_labels[where] = tf_labels
        self.pt_labels[where] = pt_labels
        self._keep_label_differences(tf_out, pt_out, tf_labels, pt_labels, where)

    def _keep_label_differences(self, tf_out, pt_out, tf_labels, pt_labels, where) -> None:
        """The first :data:`LABEL_DIFFERENCES_KEPT` voxels whose labels differ, each with TF's
        margin for its own label over PyTorch's (how near a tie it was) and PyTorch's the other
        way round: a label that differs where the margin is within the error tolerance is a tie
        the two frameworks' rounding settled differently, not a wrong weight."""
        room = LABEL_DIFFERENCES_KEPT - len(self.label_differences)
        if room <= 0 or tf_labels.size == 0:
            return
        found = [axis[:room] for axis in np.nonzero(tf_labels != pt_labels)]  # a wrong mapping differs everywhere
        starts = [(w.start or 0) if isinstance(w, slice) else 0 for w in where]
        for local in zip(*found):
            a, b = int(tf_labels[local]), int(pt_labels[local])
            if self.threshold is not None:
                tf_margin = abs(float(tf_out[(0, *local)]) - self.threshold)
                pt_margin = abs(float(pt_out[(0, *local)]) - self.threshold)
            else:
                tf_margin = float(tf_out[(a, *local)]) - float(tf_out[(b, *local)])
                pt_margin = float(pt_out[(b, *local)]) - float(pt_out[(a, *local)])
            self.label_differences.append({"voxel": [int(i) + s for i, s in zip(local, starts)], "tf_label": a,
                                           "torch_label": b, "tf_margin": tf_margin, "torch_margin": pt_margin})

    def finish(self) -> Comparison:
        lo, hi = (self.lo, self.hi) if self.lo <= self.hi else (0.0, 0.0)
        out_range = hi - lo
        floor = 1e-3 * max(abs(lo), abs(hi), 1e-30)
        max_rel, bound = 0.0, -1.0
        for rel, mag, dropped in self._rel:
            valid = mag >= floor
            if valid.any():
                max_rel = max(max_rel, float(rel[valid].max()))
            bound = max(bound, dropped)
        size = int(np.prod(self.shape)) if self.shape else 1
        agreement = float((self.tf_labels == self.pt_labels).mean()) if size else 1.0
        mean_abs = self.total / self.count if self.count else (float("inf") if size else 0.0)
        metrics = {
            "max_abs_error": self.max_abs,
            "max_rel_error": max_rel,
            "mean_abs_error": mean_abs,
            "output_range": out_range,
            "output_scale": max(abs(lo), abs(hi)),
            "max_abs_error_over_range": self.max_abs / out_range if out_range else (0.0 if self.max_abs == 0 else float("inf")),
            "argmax_agreement": agreement,
            "voxels": size,
            "nonfinite": self.nonfinite,
            "error_scope": "every voxel and channel",
        }
        if bound > max_rel:  # a dropped pair might have been significant and larger
            metrics["max_rel_error_is_lower_bound"] = True
        if self.label_differences:
            metrics["label_differences"] = self.label_differences
        return Comparison(metrics, self.tf_labels, self.pt_labels, self.diff_map)


def compare(tf_out: np.ndarray, pt_out: np.ndarray, threshold: Optional[float] = None) -> Comparison:
    """Error metrics between two outputs of the same shape ``(C, ...)``.

    Works one channel at a time in float64, so comparing a 160-channel whole-brain output needs
    only a few volumes of scratch memory. Where either side is not finite the error counts as
    infinite (and the non-finite check fails on its own). ``max_rel_error`` is elementwise,
    over the values not tiny against the output's scale (``|tf| >= 1e-3 x max |tf|``).
    """
    if tf_out.shape != pt_out.shape:
        raise InputError(f"TF output {list(tf_out.shape)} and PyTorch output {list(pt_out.shape)} differ in shape")
    acc = StreamingComparison(tf_out.shape[1:], tf_out.shape[0], threshold)
    acc.add(tf_out, pt_out)
    return acc.finish()


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
        output_scale=max(abs(info["output_min"]), abs(info["output_max"])),
        max_abs_error_over_range=metrics["max_abs_error"] / out_range if out_range else float("inf"),
        argmax_agreement=float((tf_labels == pt_labels).mean()),
        voxels=int(pt_labels.size),
        nonfinite={"tf": info["nonfinite"], "torch": int((~np.isfinite(pt_out)).sum())},
        error_scope=f"sampled: all channels at {info['voxels']} of {info['of']} voxels (seed {info['seed']}); "
                    "labels, agreement and Dice over every voxel",
    )
    return Comparison(metrics, tf_labels, pt_labels, (tf_labels != pt_labels).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# any output (a TF2 signature's): metrics that fit its kind
# ------------------------------------------------------------------------------------------------

CLASSIFIER_KINDS = ("logits", "probabilities")


def infer_kind(tf_out: np.ndarray) -> str:
    """The output's kind from its shape (TF's layout, batch first): ``(N, K)`` with ``K > 1`` is
    a classifier (probabilities when every row is in [0, 1] and sums to 1, else logits);
    rank >= 4 (``N, *spatial, C`` with ``C > 1``) is segmentation; the rest is regression."""
    if tf_out.ndim == 2 and tf_out.shape[1] > 1:
        finite = np.isfinite(tf_out).all()
        if finite and tf_out.min() >= 0 and tf_out.max() <= 1 and np.allclose(tf_out.sum(axis=1), 1, atol=1e-4):
            return "probabilities"
        return "logits"
    if tf_out.ndim >= 4 and tf_out.shape[-1] > 1:
        return "segmentation"
    return "regression"


def _errors(tf_out: np.ndarray, pt_out: np.ndarray) -> Dict[str, Any]:
    t = tf_out.astype(np.float64)
    p = pt_out.astype(np.float64)
    ft, fp = np.isfinite(t), np.isfinite(p)
    both = ft & fp
    d = np.where(both, np.abs(t - p), np.inf)
    lo, hi = (float(t[ft].min()), float(t[ft].max())) if ft.any() else (0.0, 0.0)
    scale = max(abs(lo), abs(hi), 1e-30)
    significant = both & (np.abs(t) >= 1e-3 * scale)
    max_abs = float(d.max()) if d.size else 0.0
    out_range = hi - lo
    return {
        "max_abs_error": max_abs,
        "max_rel_error": float((d[significant] / np.abs(t[significant])).max()) if significant.any() else 0.0,
        "mean_abs_error": float(d[both].mean()) if both.any() else (float("inf") if d.size else 0.0),
        "output_range": out_range,
        "output_scale": max(abs(lo), abs(hi)),
        "max_abs_error_over_range": max_abs / out_range if out_range else (0.0 if max_abs == 0 else float("inf")),
        "nonfinite": {"tf": int(t.size - ft.sum()), "torch": int(p.size - fp.sum())},
    }


def compare_output(name: str, tf_out: np.ndarray, pt_out: np.ndarray, kind: Optional[str] = None,
                   threshold: Optional[float] = None) -> Dict[str, Any]:
    """Metrics of one output, both in TF's layout: errors and non-finite counts for every kind;
    classifiers (``logits``, ``probabilities``, rows ``(N, K)`` -- more axes are flattened into
    rows) add top-1 and top-5 agreement over the rows; ``segmentation`` (``N, *spatial, C``)
    adds label agreement over the voxels and Dice per label; ``embedding`` adds the worst
    cosine similarity over the batch."""
    if tf_out.shape != pt_out.shape:
        raise InputError(f"output {name!r}: TF {list(tf_out.shape)} and PyTorch {list(pt_out.shape)} differ in shape",
                         hint="check the mapping's layout and the target model's outputs")
    inferred = kind is None
    kind = "probabilities" if kind == "probability" else (kind or infer_kind(tf_out))
    m: Dict[str, Any] = {"name": name, "kind": kind, "kind_inferred": inferred, "shape": list(tf_out.shape),
                         "dtype": str(tf_out.dtype), **_errors(tf_out, pt_out)}
    if kind in CLASSIFIER_KINDS:
        classes = tf_out.shape[-1] if tf_out.ndim else 1
        t = tf_out.reshape(-1, classes).astype(np.float64)
        p = pt_out.reshape(-1, classes).astype(np.float64)
        k = min(5, classes)
        top_t, top_p = np.argsort(-t, axis=1, kind="stable")[:, :k], np.argsort(-p, axis=1, kind="stable")[:, :k]
        m.update(rows=int(t.shape[0]), classes=int(classes),
                 top1_agreement=float((top_t[:, 0] == top_p[:, 0]).mean()) if t.size else 1.0,
                 top5_agreement=float(np.mean([set(a) == set(b) for a, b in zip(top_t, top_p)])) if t.size else 1.0,
                 top_k=k)
    elif kind == "segmentation":
        if threshold is not None or tf_out.shape[-1] == 1:
            cut = 0.5 if threshold is None else threshold
            lt, lp = (tf_out[..., 0] > cut).astype(np.int32), (pt_out[..., 0] > cut).astype(np.int32)
        else:
            lt, lp = tf_out.argmax(axis=-1).astype(np.int32), pt_out.argmax(axis=-1).astype(np.int32)
        dice = dice_per_label(lt, lp) if lt.size else {}
        m.update(voxels=int(lt.size), label_agreement=float((lt == lp).mean()) if lt.size else 1.0,
                 dice_min=min(dice.values()) if dice else 1.0, labels_compared=len(dice),
                 dice_worst=[{"label": k, "dice": d} for k, d in sorted(dice.items(), key=lambda kv: (kv[1], kv[0]))[:5]])
    elif kind == "embedding":
        t = tf_out.reshape(tf_out.shape[0] if tf_out.ndim else 1, -1).astype(np.float64)
        p = pt_out.reshape(t.shape).astype(np.float64)
        norms = np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1)
        cos = np.where(norms > 0, (t * p).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
        m.update(min_cosine_similarity=float(cos.min()) if cos.size else 1.0)
    return m


def verdict_output(m: Dict[str, Any], atol: float, min_agreement: float) -> list:
    """Why one output fails (empty: it passes)."""
    reasons = []
    if any(m["nonfinite"].values()):
        reasons.append(f"{m['name']}: non-finite values")
    if m["max_abs_error"] > atol:
        reasons.append(f"{m['name']}: max abs error {m['max_abs_error']:.3e} > atol {atol:.3e}")
    if m["kind"] in CLASSIFIER_KINDS and m["top1_agreement"] < min_agreement:
        reasons.append(f"{m['name']}: top-1 agreement {m['top1_agreement']:.6f} < {min_agreement}")
    if m["kind"] == "segmentation" and m["label_agreement"] < min_agreement:
        reasons.append(f"{m['name']}: label agreement {m['label_agreement']:.6f} < {min_agreement}")
    return reasons

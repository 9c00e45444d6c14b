"""``verify --figure``: orthogonal slices of the input, TF labels, PyTorch labels and |difference|."""

from __future__ import annotations

import os
from importlib import resources
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import DependencyError, InputError


def read_color_table(name_or_path: str) -> Dict[int, Tuple[str, Tuple[int, int, int]]]:
    """``{index: (name, (r, g, b))}`` from ``index name R G B A`` lines (a file in tf2pt/data,
    or a path)."""
    if os.path.sep in name_or_path or os.path.exists(name_or_path):
        with open(name_or_path) as fh:
            text = fh.read()
    else:
        text = resources.files("tf2pt").joinpath("data", name_or_path).read_text()
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].isdigit():
            table[int(parts[0])] = (parts[1], (int(parts[2]), int(parts[3]), int(parts[4])))
    return table


def _label_rgb(labels: np.ndarray, table) -> np.ndarray:
    n = int(labels.max()) + 1 if labels.size else 1
    lut = np.zeros((max(n, 1), 3), np.float32)
    rng = np.random.default_rng(0)
    for i in range(n):
        if i in table:
            lut[i] = np.array(table[i][1]) / 255.0
        elif i > 0:  # labels the table does not name: a stable pseudo-random colour
            lut[i] = rng.uniform(0.2, 1.0, 3)
    return lut[labels]


def parity_figure(path, x: np.ndarray, tf_labels: np.ndarray, pt_labels: np.ndarray, diff: np.ndarray, spec,
                  title: Optional[str] = None, diff_title: Optional[str] = None) -> None:
    """Write a PNG: rows = axial, coronal, sagittal centre slices; columns = input (channel 0),
    TF labels, PyTorch labels, |TF - PyTorch| (max over channels; or ``diff_title``'s map)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyError("matplotlib", "--figure", extra="figure") from None
    from ..write.atomic import atomic_output

    table = read_color_table(spec.label_table) if spec.label_table else {}
    if spec.threshold is not None:
        table = {1: ("foreground", (255, 64, 64))}
    vol = x[0]
    d, h, w = vol.shape
    views = [("axial", lambda a: a[:, :, w // 2]), ("coronal", lambda a: a[:, h // 2, :]), ("sagittal", lambda a: a[d // 2, :, :])]
    vmax = float(diff.max()) or 1.0
    fig, axes = plt.subplots(3, 4, figsize=(12, 9), squeeze=False)
    for row, (name, cut) in enumerate(views):
        panels = [
            (np.rot90(cut(vol)), "gray", "input"),
            (np.rot90(_label_rgb(cut(tf_labels), table)), None, "TF labels"),
            (np.rot90(_label_rgb(cut(pt_labels), table)), None, "PyTorch labels"),
            (np.rot90(cut(diff)), "magma", diff_title or f"|TF - PyTorch| (max {vmax:.2e})"),
        ]
        for col, (img, cmap, label) in enumerate(panels):
            ax = axes[row][col]
            if cmap == "magma":
                im = ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax)
                fig.colorbar(im, ax=ax, fraction=0.046)
            else:
                ax.imshow(img, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)

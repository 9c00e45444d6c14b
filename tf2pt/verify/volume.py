"""Input volumes for ``tf2pt verify``: load, orient, normalise, and fit to a model's size rules.

Volumes are numpy arrays ``(C, D, H, W)`` here; the TF side gets them channels-last and the
PyTorch side channels-first, from the same array, so both frameworks see identical voxels.

* ``.nii`` / ``.nii.gz``: read with nibabel and reoriented to the closest canonical (RAS+) axes,
  so the array axes follow the same anatomical directions whatever the file's affine.
* ``.npy``: ``(D, H, W)`` for one channel or ``(C, D, H, W)``; loaded with ``allow_pickle=False``.
* synthetic: seeded random noise, smoothed so that it has structure at several scales.
* default: the MNI152 2009 T1 template shipped inside nilearn (a real brain, 1 mm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DependencyError, InputError


@dataclass
class Volume:
    """``data`` is float32 ``(C, D, H, W)``; ``steps`` says what was done to it, in order."""

    data: np.ndarray
    source: str
    affine: Optional[np.ndarray] = None
    steps: List[str] = field(default_factory=list)

    @property
    def spatial_shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[1:])  # type: ignore[return-value]


def load(path: Optional[str] = None, synthetic: Optional[Sequence[int]] = None, seed: int = 0,
         channels: int = 1) -> Volume:
    """A volume from ``path``, or a synthetic one of ``channels`` channels, or the MNI152 template."""
    if path is not None and synthetic is not None:
        raise InputError("give either --volume or --synthetic, not both")
    if synthetic is not None:
        return synthetic_volume(synthetic, seed, channels)
    if path is None:
        return mni152()
    return load_file(path)


def load_file(path: str) -> Volume:
    if not os.path.exists(path):
        raise InputError("volume file not found", path=path)
    lower = path.lower()
    if lower.endswith(".npy"):
        from .arrays import load_npy

        try:
            data = load_npy(path, "volume")
        except ValueError as exc:
            raise InputError(f"not a plain numeric .npy array ({exc})", path=path) from None
        except OSError as exc:
            raise InputError(f"cannot read .npy: {exc}", path=path) from None
        if data.dtype.kind not in "fiub":
            raise InputError(f"volume has dtype {data.dtype}, expected numbers", path=path)
        if data.ndim == 3:
            data = data[None]
        elif data.ndim != 4:
            raise InputError(f"volume has shape {list(data.shape)}; expected (D, H, W) or (C, D, H, W)", path=path)
        return Volume(np.ascontiguousarray(data, dtype=np.float32), path, steps=[f"loaded {path} {list(data.shape)}"])
    if lower.endswith((".nii", ".nii.gz")):
        try:
            import nibabel as nib
        except ImportError:
            raise DependencyError("nibabel", "reading NIfTI volumes", extra="nifti") from None
        try:
            img = nib.load(path)
            canonical = nib.as_closest_canonical(img)
            data = np.asarray(canonical.dataobj, dtype=np.float32)
        except Exception as exc:  # nibabel raises many types for bad files
            raise InputError(f"cannot read NIfTI: {type(exc).__name__}: {exc}", path=path) from None
        codes = "".join(nib.aff2axcodes(img.affine))
        if data.ndim == 4:
            data = np.moveaxis(data, -1, 0)
        elif data.ndim == 3:
            data = data[None]
        else:
            raise InputError(f"NIfTI has {data.ndim} dimensions; expected 3 or 4", path=path)
        steps = [f"loaded {path} {list(data.shape[1:])}, axes {codes} -> RAS (closest canonical)"]
        return Volume(np.ascontiguousarray(data), path, canonical.affine, steps)
    raise InputError("unknown volume format", path=path, hint="use .nii, .nii.gz or .npy")


def synthetic_volume(shape: Sequence[int], seed: int = 0, channels: int = 1) -> Volume:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"--synthetic needs three positive sizes, got {list(shape)}")
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((channels, *shape)).astype(np.float32)
    # add coarse structure: blocky noise upsampled, so activations are not just white noise
    coarse = rng.standard_normal((channels, *[max(1, s // 4) for s in shape])).astype(np.float32)
    for axis, size in enumerate(shape, start=1):
        coarse = np.repeat(coarse, 4, axis=axis)
        coarse = np.take(coarse, np.arange(size) % coarse.shape[axis], axis=axis)
    data = data + 2.0 * coarse
    return Volume(data, f"synthetic{list(shape)} seed {seed}", steps=[f"synthetic volume {list(shape)}, seed {seed}"])


def mni152() -> Volume:
    """The MNI152 2009 T1 template (1 mm), shipped inside the nilearn wheel: no download."""
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError:
        raise DependencyError(
            "nilearn", "the default volume (MNI152 T1 template)", extra="nifti"
        ) from None
    import nibabel as nib

    img = nib.as_closest_canonical(load_mni152_template(resolution=1))
    data = np.asarray(img.dataobj, dtype=np.float32)[None]
    return Volume(np.ascontiguousarray(data), "MNI152 2009 T1 template (nilearn, 1 mm)", img.affine,
                  [f"MNI152 2009 T1 template from nilearn, {list(data.shape[1:])}, RAS"])


def center_crop(volume: Volume, size: Sequence[int]) -> Volume:
    size = [int(s) for s in size]
    if len(size) != 3 or min(size) < 1:
        raise InputError(f"--crop needs three positive sizes, got {size}")
    slices = [slice(None)]
    for n, s in zip(volume.spatial_shape, size):
        s = min(s, n)
        start = (n - s) // 2
        slices.append(slice(start, start + s))
    data = np.ascontiguousarray(volume.data[tuple(slices)])
    volume.steps.append(f"center crop {list(volume.spatial_shape)} -> {list(data.shape[1:])}")
    volume.data = data
    return volume


def fit_multiple(volume: Volume, multiple: int, mode: str = "crop") -> Volume:
    """Make every spatial size a multiple of ``multiple``: crop centrally (default) or pad with
    zeros (``mode="pad"``, split evenly)."""
    if multiple <= 1:
        return volume
    shape = volume.spatial_shape
    if all(n % multiple == 0 for n in shape):
        return volume
    if mode == "pad":
        pads = [(0, 0)]
        for n in shape:
            extra = -n % multiple
            pads.append((extra // 2, extra - extra // 2))
        data = np.pad(volume.data, pads)
        volume.steps.append(f"zero-pad {list(shape)} -> {list(data.shape[1:])} (multiple of {multiple})")
    else:
        size = [max(multiple, n - n % multiple) for n in shape]
        if any(s > n for s, n in zip(size, shape)):
            return fit_multiple(volume, multiple, "pad")
        slices = [slice(None)] + [slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, size)]
        data = np.ascontiguousarray(volume.data[tuple(slices)])
        volume.steps.append(f"center crop {list(shape)} -> {list(data.shape[1:])} (multiple of {multiple})")
    volume.data = np.ascontiguousarray(data)
    return volume


def whiten(volume: Volume) -> Volume:
    """Per-channel z-score over the foreground (voxels above the channel's minimum), as
    NiftyNet's ``whitening`` does with its default mask; background stays at the minimum's score."""
    out = np.empty_like(volume.data)
    for c, channel in enumerate(volume.data):
        mask = channel > channel.min()
        if not mask.any():
            mask = np.ones_like(channel, dtype=bool)
        mean = float(channel[mask].mean())
        std = float(channel[mask].std()) or 1.0
        out[c] = (channel - mean) / std
    volume.data = out
    volume.steps.append("whitening: per-channel z-score over foreground (voxels above the minimum)")
    return volume


def resize_array(array: np.ndarray, size: Sequence[int], antialias: bool = True) -> np.ndarray:
    """Linear resampling of a 3-D array to ``size`` with the semantics of
    ``skimage.transform.resize(image, size, mode="constant", anti_aliasing=...)`` (which deepbrain
    uses): voxel centres aligned (``grid_mode``), zero outside, and when shrinking a Gaussian
    pre-filter of sigma ``max(0, (factor - 1) / 2)`` per axis."""
    from scipy.ndimage import gaussian_filter, zoom

    array = np.asarray(array, dtype=np.float64)
    factors = [n / s for n, s in zip(array.shape, size)]
    if antialias:
        sigma = [max(0.0, (f - 1.0) / 2.0) for f in factors]
        if any(sigma):
            array = gaussian_filter(array, sigma, mode="constant", cval=0.0)
    out = zoom(array, [s / n for s, n in zip(size, array.shape)], order=1, mode="grid-constant", cval=0.0,
               grid_mode=True)
    return out


def resize(volume: Volume, size: Sequence[int], antialias: bool = False) -> Volume:
    """Resample every channel to ``size`` (linear; optionally anti-aliased, see :func:`resize_array`)."""
    data = np.stack([resize_array(c, size, antialias) for c in volume.data]).astype(np.float32)
    how = "linear, Gaussian anti-aliasing" if antialias else "linear"
    volume.steps.append(f"resize {list(volume.spatial_shape)} -> {list(data.shape[1:])} ({how})")
    volume.data = data
    return volume


def scale_by_max(volume: Volume) -> Volume:
    peak = float(np.abs(volume.data).max()) or 1.0
    volume.data = volume.data / peak
    volume.steps.append(f"divide by the maximum ({peak:g})")
    return volume


PREPROCESSORS: Dict[str, object] = {"whiten": whiten, "scale_by_max": scale_by_max}

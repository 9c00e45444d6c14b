"""Skull-strip a T1 MRI with deepbrain's U-Net, converted to PyTorch by tf2pt (no TensorFlow).

Does what deepbrain's ``Extractor.run`` and ``deepbrain-extractor`` do: take the NIfTI's voxel
array as stored, resize it to 128^3 (linear, Gaussian anti-aliasing), divide by its maximum, run
the network, resize the probability map back to the input's shape, threshold it at 0.5, and write
the mask as a NIfTI in the input's space (same shape, affine and header).

    pip download --no-deps deepbrain==0.1 -d /tmp/deepbrain && unzip -o -q /tmp/deepbrain/deepbrain-0.1-py3-none-any.whl -d /tmp/deepbrain
    tf2pt convert /tmp/deepbrain/deepbrain/models/graph.pb --mapping deepbrain -o deepbrain.safetensors
    python examples/deepbrain/skullstrip.py T1.nii.gz brain_mask.nii.gz --weights deepbrain.safetensors

``--weights`` also accepts the frozen ``graph.pb`` itself (converted in memory). Needs tf2pt,
nibabel and scipy.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

SIZE = (128, 128, 128)


def load_model(weights: str, device: str = "cpu"):
    import tf2pt

    if weights.endswith(".pb"):
        state_dict, _ = tf2pt.convert(weights, mapping="deepbrain")
    else:
        from safetensors.torch import load_file

        state_dict = load_file(weights)
    model = tf2pt.build_model("deepbrain")
    model.load_state_dict(state_dict, strict=True)
    return model.eval().to(device)


def brain_probability(model, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """deepbrain's Extractor.run, in PyTorch: probability map in the input's voxel grid."""
    import torch

    from tf2pt.verify.volume import resize_array

    x = resize_array(image, SIZE, antialias=True)
    x = x / np.max(x)
    with torch.inference_mode():
        prob = model(torch.from_numpy(x[None, None].astype(np.float32)).to(device))[0, 0].cpu().numpy()
    return resize_array(prob, image.shape, antialias=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Skull-strip a T1 NIfTI with deepbrain's U-Net in PyTorch.")
    parser.add_argument("input", help="T1-weighted NIfTI (.nii or .nii.gz)")
    parser.add_argument("mask", help="output mask NIfTI (uint8, 1 = brain)")
    parser.add_argument("--weights", required=True, help="converted deepbrain .safetensors, or deepbrain's graph.pb")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--prob", default=None, help="also write the probability map here")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import nibabel as nib

    img = nib.load(args.input)
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim != 3:
        print(f"{args.input}: expected a 3-D volume, got shape {data.shape}", file=sys.stderr)
        return 2
    prob = brain_probability(load_model(args.weights, args.device), data, args.device)
    mask = (prob > args.threshold).astype(np.uint8)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(nib.Nifti1Image(mask, img.affine, header), args.mask)
    if args.prob:
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        nib.save(nib.Nifti1Image(prob.astype(np.float32), img.affine, header), args.prob)
    print(f"{args.mask}: {int(mask.sum())} brain voxels of {mask.size} ({mask.mean():.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rebuild the bundled example: a NiftyNet-layout HighRes3DNet checkpoint holding the real weights.

The NiftyNet zoo checkpoint itself (``highres3dnet_brain_parcellation``, ``model.ckpt-33000``)
is not redistributable here; its author's PyTorch conversion is (MIT, see LICENSE). This script
puts those weights back into NiftyNet's names and layouts, inside a checkpoint that real
TensorFlow writes the way NiftyNet training does (Adam slots, moving-average shadows,
zero-debias variables, beta powers, ``global_step`` 33000) -- so ``tf2pt convert`` faces what a
NiftyNet user's checkpoint holds.

Inverse mapping: each NiftyNet inference variable is renamed by the ``highresnet`` mapping's
default-target rules, its tensor taken from the published state dict and transformed back
(OIDHW -> DHWIO for kernels). That the result computes the published model is not assumed from
this round trip: ``tf2pt verify`` runs the TF graph on a real brain and compares.

    python examples/highres3dnet/make_example.py --weights ../shared/data/highres3dnet_li_parameters-7d297872.pth

Needs TensorFlow and torch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_SHA256 = "7d2978724469087fa46d5beda42edc7b5941cdec2065e310534ca8a7a5d15edc"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="highres3dnet_li_parameters-7d297872.pth")
    parser.add_argument("--out", default=HERE, help="directory for the checkpoint (default: next to this script)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    from tf2pt.mappings.highresnet import MAPPING
    from tf2pt.testing.niftynet import write_highres3dnet
    from tf2pt.transforms import invert

    with open(args.weights, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != PUBLISHED_SHA256:
        sys.exit(f"{args.weights}: sha256 {digest} is not the published weights' {PUBLISHED_SHA256}")
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    rules = MAPPING.default_target.rename
    used = set()

    def weight(name, shape):
        hits = [(r, m) for r in rules for m in [r.match(name)] if m]
        if len(hits) != 1:
            raise KeyError(f"{name}: {len(hits)} rules match")
        rule, match = hits[0]
        key = rule.key_for(match)
        used.add(key)
        return invert(rule.transform, state[key].numpy())

    with tempfile.TemporaryDirectory() as tmp:
        prefix = write_highres3dnet(tmp, num_classes=160, in_channels=1, weights=weight, seed=33000,
                                    state_file="model.ckpt-33000")
        unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
        if unused:
            sys.exit(f"published tensors not placed in the checkpoint: {unused}")
        for name in os.listdir(tmp):
            shutil.copy2(os.path.join(tmp, name), os.path.join(args.out, name))
        print(f"wrote {os.path.join(args.out, os.path.basename(prefix))}.* from {len(used)} published tensors")


if __name__ == "__main__":
    main()

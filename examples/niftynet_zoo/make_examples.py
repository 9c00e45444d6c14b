"""Write one small example checkpoint per NiftyNet zoo architecture -- RANDOM WEIGHTS, NOT A
TRAINED MODEL -- from NiftyNet 0.6.0's own network code, with the ``.meta`` of NiftyNet's real
graph, so that ``tf2pt convert`` and ``tf2pt verify`` can be tried on each.

    pip install --no-deps niftynet==0.6.0        # and tensorflow-cpu (the `tf` extra)
    python examples/niftynet_zoo/make_examples.py OUT_DIR
    tf2pt verify OUT_DIR/dense_vnet/model.ckpt-2000 -m dense_vnet --synthetic 40 48 56 --per-layer

The checkpoints are not committed: with Adam slots and EMA shadows they are 15-20 MB each (VNet
and UNet3D are written with narrower ``n_features`` than NiftyNet's defaults to stay that small:
VNet's own, 16..256, makes a 1.1 GB checkpoint).
Each graph has a fixed input size, printed with its verify command.
"""

from __future__ import annotations

import os
import sys

#: name -> (writer arguments, the --synthetic size verify is given)
EXAMPLES = {
    "highres3dnet_small": (dict(input_shape=(40, 48, 56), train_shape=(8, 8, 8)), (40, 48, 56)),
    "highres3dnet_large": (dict(input_shape=(40, 48, 56), train_shape=(8, 8, 8)), (40, 48, 56)),
    "dense_vnet": (dict(input_shape=(40, 48, 56), train_shape=(8, 8, 8)), (40, 48, 56)),
    "vnet": (dict(input_shape=(32, 48, 48), train_shape=(16, 16, 16), acti_func="prelu",
                  attributes={"n_features": [2, 4, 8, 16, 32]}), (40, 48, 56)),
    "unet": (dict(input_shape=(96, 96, 104), train_shape=(96, 96, 96), train_steps=0,
                  attributes={"n_features": [8, 16, 32, 64, 128]}), (96, 96, 104)),
}


def main(out_dir: str) -> None:
    from tf2pt.testing.niftynet_zoo import write_niftynet_checkpoint

    for name, (kwargs, size) in EXAMPLES.items():
        prefix = write_niftynet_checkpoint(os.path.join(out_dir, name), name, num_classes=3, seed=1, **kwargs)
        print(f"{name}: {prefix}  (random weights)\n"
              f"  tf2pt verify {prefix} -m {name} --synthetic {' '.join(map(str, size))} --per-layer")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

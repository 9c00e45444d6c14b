"""Like ``generic_mapping.py``, but keeping TF's layout (``identity``): a conversion whose tensors
need no layout change, as convolution-free or already-matching models have -- the like-for-like
counterpart of the TF path, which changes no layout either."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from generic_mapping import build, spec  # noqa: E402

from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target  # noqa: E402


def model_kwargs(checkpoint):
    return {"shapes": {name.replace("/", "."): tuple(info.shape)
                       for name, info in checkpoint.variables.items() if info.role == "inference"}}


MAPPING = Mapping(
    name="bench_blocks_identity",
    description="benchmark checkpoints: block_NNNN/kernel -> block_NNNN.kernel (layout kept)",
    source=Source(origin="tf2pt.testing.tf_fixtures.write_big"),
    targets=[Target("blocks", "one parameter per kernel", build, [Rename(r"(block_\d+)/kernel", r"\1.kernel")], spec=spec)],
    ignore=[TRAINING_ONLY],
    model_kwargs=model_kwargs,
)

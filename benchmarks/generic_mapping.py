"""A mapping for benchmark checkpoints (``tf2pt.testing.tf_fixtures.write_big``): every
``block_NNNN/kernel`` becomes ``block_NNNN.kernel`` with the ``dense`` transform (a transpose,
so the conversion does real layout work, not just a copy). The target model is built from the
checkpoint's own shapes (on the meta device during planning: it costs no memory)."""

from torch import nn

from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target


class Blocks(nn.Module):
    def __init__(self, shapes=None):
        super().__init__()
        import torch

        for key, shape in (shapes or {}).items():
            block, leaf = key.split(".")
            if not hasattr(self, block):
                self.add_module(block, nn.Module())
            getattr(self, block).register_parameter(leaf, nn.Parameter(torch.empty(shape)))


def model_kwargs(checkpoint):
    return {"shapes": {name.replace("/", "."): tuple(reversed(info.shape))
                       for name, info in checkpoint.variables.items() if info.role == "inference"}}


MAPPING = Mapping(
    name="bench_blocks",
    description="benchmark checkpoints: block_NNNN/kernel -> block_NNNN.kernel (transposed)",
    source=Source(origin="tf2pt.testing.tf_fixtures.write_big"),
    targets=[Target("blocks", "one parameter per kernel", Blocks, [Rename(r"(block_\d+)/kernel", r"\1.kernel", "dense")])],
    ignore=[TRAINING_ONLY],
    model_kwargs=model_kwargs,
)

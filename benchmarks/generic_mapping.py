"""A mapping for benchmark checkpoints (``tf2pt.testing.tf_fixtures.write_big``): every
``block_NNNN/kernel`` becomes ``block_NNNN.kernel`` with the ``dense`` transform (a transpose,
so the conversion does real layout work, not just a copy). The target model is built from the
checkpoint's own shapes (on the meta device during planning: it costs no memory).

The target also declares its ``spec`` (its state dict's keys, shapes and dtypes), so converting to
safetensors need not import torch; the model is built, and compared with the spec, only where
torch is loaded anyway (tests/test_torch_free_convert.py checks that they agree).
"""

from tf2pt.mapping import TRAINING_ONLY, Mapping, Rename, Source, Target


def build(shapes=None):
    """One parameter per kernel, as ``block_NNNN.kernel``."""
    import torch
    from torch import nn

    model = nn.Module()
    for key, shape in (shapes or {}).items():
        block, leaf = key.split(".")
        if not hasattr(model, block):
            model.add_module(block, nn.Module())
        getattr(model, block).register_parameter(leaf, nn.Parameter(torch.empty(shape)))
    return model


def spec(shapes=None):
    """What ``build(shapes).state_dict()`` holds, without torch."""
    return {key: (shape, "float32") for key, shape in (shapes or {}).items()}


def model_kwargs(checkpoint):
    return {"shapes": {name.replace("/", "."): tuple(reversed(info.shape))
                       for name, info in checkpoint.variables.items() if info.role == "inference"}}


MAPPING = Mapping(
    name="bench_blocks",
    description="benchmark checkpoints: block_NNNN/kernel -> block_NNNN.kernel (transposed)",
    source=Source(origin="tf2pt.testing.tf_fixtures.write_big"),
    targets=[Target("blocks", "one parameter per kernel", build, [Rename(r"(block_\d+)/kernel", r"\1.kernel", "dense")],
                    spec=spec)],
    ignore=[TRAINING_ONLY],
    model_kwargs=model_kwargs,
)

"""A deliberately wrong mapping, for tests: dense_vnet with block 1's skip and down convolution
kernels swapped. Both are 3x3x3, 104 -> 24 channels, so every shape still matches; only values
tell them apart, and ``verify --per-layer`` must name ``block_1_skip``."""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.dense_vnet import MAPPING as RIGHT

SWAP = {"blocks.1.skip.conv.weight": "blocks.1.down.conv.weight",
        "blocks.1.down.conv.weight": "blocks.1.skip.conv.weight"}


def _wrong(rule: Rename) -> Rename:
    if rule.key in SWAP:
        return Rename(rule.pattern, SWAP[rule.key], rule.transform)
    return rule


MAPPING = Mapping(
    name="dense_vnet_wrong",
    description="dense_vnet with block 1's same-shaped skip and down kernels swapped (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[_wrong(r) for r in t.rename]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

"""A deliberately wrong mapping, for tests: vnet with L3's second and third 5x5x5 kernels
swapped (``conv_1`` and ``conv_2`` have one shape); ``verify --per-layer`` must name ``L3``."""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.vnet import MAPPING as RIGHT

SWAP = {"blocks.L3.convs.1.weight": "blocks.L3.convs.2.weight", "blocks.L3.convs.2.weight": "blocks.L3.convs.1.weight"}


def _wrong(rule: Rename) -> Rename:
    if rule.key in SWAP:
        return Rename(rule.pattern, SWAP[rule.key], rule.transform)
    return rule


MAPPING = Mapping(
    name="vnet_wrong",
    description="vnet with L3's same-shaped conv_1 and conv_2 kernels swapped (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[_wrong(r) for r in t.rename]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    refuse=RIGHT.refuse,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

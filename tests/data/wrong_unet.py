"""A deliberately wrong mapping, for tests: unet with the PReLU slopes of R3's two convolutions
swapped (``<c>_bn_prelu`` and ``<c>_bn_prelu_1``: both have the same channels); ``verify
--per-layer`` must name ``R3``."""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.unet import MAPPING as RIGHT


def _r3_alpha_key(match):
    layer = match.group(1)
    other = layer[:-2] if layer.endswith("_1") else layer + "_1"
    return f"blocks.R3.layers.{other}.act.weight"


def _wrong(rule: Rename):
    if rule.key == r"blocks.\1.layers.\2.act.weight":
        r3 = Rename(rule.pattern.replace("(L1|L2|L3|L4|R3|R2|R1_FC)", "R3", 1), _r3_alpha_key, rule.transform)
        # R3's layers first (the key function swaps them); every other block as before
        others = Rename(rule.pattern.replace("R3|", "", 1), rule.key, rule.transform)
        return [r3, others]
    return [rule]


MAPPING = Mapping(
    name="unet_wrong",
    description="unet with R3's PReLU slopes swapped between its two convolutions (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[x for r in t.rename for x in _wrong(r)]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

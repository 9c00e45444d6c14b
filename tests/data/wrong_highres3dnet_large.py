"""A deliberately wrong mapping, for tests: highres3dnet_large with conv_2's batch-norm gamma
and beta swapped (both have 64 channels, so every shape still matches); ``verify --per-layer``
must name ``conv_2``."""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.highres3dnet_large import MAPPING as RIGHT

SWAP = {"gamma": "bias", "beta": "weight"}


def _wrong(rule: Rename) -> Rename:
    for tf_name, wrong_key in SWAP.items():
        if rule.pattern.endswith(f"conv_2_bn_(?:relu|prelu)/bn_/{tf_name}"):
            return Rename(rule.pattern, rule.key.rsplit(".", 1)[0] + "." + wrong_key, rule.transform)
    return rule


MAPPING = Mapping(
    name="highres3dnet_large_wrong",
    description="highres3dnet_large with gamma/beta swapped in conv_2 (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[_wrong(r) for r in t.rename]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

"""A deliberately wrong mapping, for tests: the highresnet mapping with one batch norm's moving
mean and moving variance swapped (res_2_1/bn_0). Every shape still matches, so only running both
frameworks can catch it -- which is what `tf2pt verify` is for."""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.highresnet import MAPPING as RIGHT

SWAP = {"moving_mean": "running_var", "moving_variance": "running_mean"}


def _swapped(rule: Rename) -> Rename:
    for tf_name, wrong_key in SWAP.items():
        if rule.pattern.endswith(f"res_2_1/bn_0/{tf_name}"):
            return Rename(rule.pattern, rule.key.rsplit(".", 1)[0] + "." + wrong_key, rule.transform)
    return rule


MAPPING = Mapping(
    name="highresnet_wrong",
    description="highresnet with moving mean/variance swapped in res_2_1/bn_0 (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[_swapped(r) for r in t.rename]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

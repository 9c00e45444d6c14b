"""A deliberately wrong mapping, for tests: highres3dnet_small with the transposed convolution's
batch-norm moving mean and moving variance swapped (``deconv_bn_relu/bn_``, 80 channels each, so
every shape still matches); ``verify --per-layer`` must name ``deconv``.

(A kernel permuted as an ordinary convolution's instead of a transposed one's would not be a
mistake: TF's ``[k, k, k, out, in]`` to torch's ``[in, out, k, k, k]`` is the same axis
permutation as ``conv3d``'s.)"""

from dataclasses import replace

from tf2pt.mapping import Mapping, Rename
from tf2pt.mappings.highres3dnet_small import MAPPING as RIGHT

SWAP = {"moving_mean": "running_var", "moving_variance": "running_mean"}


def _wrong(rule: Rename) -> Rename:
    for tf_name, wrong_key in SWAP.items():
        if rule.pattern.endswith(f"deconv_bn_(?:relu|prelu)/bn_/{tf_name}"):
            return Rename(rule.pattern, rule.key.rsplit(".", 1)[0] + "." + wrong_key, rule.transform)
    return rule


MAPPING = Mapping(
    name="highres3dnet_small_wrong",
    description="highres3dnet_small with moving mean/variance swapped in deconv (test fixture)",
    source=RIGHT.source,
    targets=[replace(t, rename=[_wrong(r) for r in t.rename]) for t in RIGHT.targets],
    ignore=RIGHT.ignore,
    model_kwargs=RIGHT.model_kwargs,
    verify=RIGHT.verify,
)

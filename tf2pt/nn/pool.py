"""TF ``avg_pool`` / ``tf.nn.pool(pooling_type="AVG")`` with ``padding="SAME"``: the padded
positions are left out of the mean (each output divides by the number of real inputs in its
window). torch's ``count_include_pad=False`` does the same only for symmetric padding; TF's
``SAME`` padding is one-sided when the total is odd, so this pads explicitly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .same import SamePool


class AvgPoolSame(SamePool):
    """TF average pooling with ``SAME`` padding (1, 2 or 3 spatial axes, channels-first)."""

    repr_note = " (padding not counted)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        pads = self.same_pads(x)
        pool = getattr(F, f"avg_pool{nd}d")
        kw = {} if nd == 1 else {"divisor_override": 1}
        if not any(pads):
            return pool(x, self.kernel_size, self.stride)
        ones = torch.ones((1, 1, *x.shape[-nd:]), dtype=x.dtype, device=x.device)
        if nd == 1:  # avg_pool1d has no divisor_override: the mean times the window is the sum
            window = self.kernel_size[0]
            total = pool(F.pad(x, pads), self.kernel_size, self.stride) * window
            count = pool(F.pad(ones, pads), self.kernel_size, self.stride) * window
        else:
            total = pool(F.pad(x, pads), self.kernel_size, self.stride, **kw)
            count = pool(F.pad(ones, pads), self.kernel_size, self.stride, **kw)
        return total / count

"""tf2pt.nn's layers for NiftyNet's networks, each against the TF op it reproduces: TF1's legacy
bilinear resize and NiftyNet's trilinear form of it, SAME average pooling that leaves padding out
of the mean, and NiftyNet's per-channel PReLU. Odd sizes and non-integer scale factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tf2pt.nn as tfnn

tf = pytest.importorskip("tensorflow", reason="TensorFlow (the test oracle) is not installed")

RNG = np.random.default_rng(17)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def cf(x: np.ndarray) -> torch.Tensor:
    """NHWC / NDHWC -> NCHW / NCDHW."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def cl(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.numpy(), 1, -1)


def niftynet_trilinear(x, size):
    """NiftyNet 0.6.0's ``LinearResizeLayer`` for 3D input, from its source: resize (H, W) with
    ``resize_bilinear`` on (N*D, H, W, C), transpose D and W, resize (H, D), transpose back."""
    resize = tf.compat.v1.image.resize_bilinear
    b, d, h, w, c = x.shape
    nd, nh, nw = size
    y = tf.reshape(resize(tf.reshape(x, [-1, h, w, c]), [nh, nw]), [b, d, nh, nw, c])
    y = tf.transpose(y, [0, 3, 2, 1, 4])
    y = tf.reshape(resize(tf.reshape(y, [-1, nh, d, c]), [nh, nd]), [b, nw, nh, nd, c])
    return tf.transpose(y, [0, 3, 2, 1, 4]).numpy()


@pytest.mark.parametrize("src,dst", [((7, 9), (11, 5)), ((5, 13), (12, 17)), ((10, 3), (4, 8)), ((6, 6), (6, 7)),
                                     ((1, 5), (3, 2))])
def test_legacy_bilinear_equals_tf1_resize_bilinear(src, dst):
    x = rand(2, *src, 3)
    expected = tf.compat.v1.image.resize_bilinear(x, dst).numpy()  # align_corners=False, half_pixel_centers=False
    got = cl(tfnn.resize_linear_legacy(cf(x), dst))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # and torch's own linear resize is not it (half-pixel centres)
    naive = cl(torch.nn.functional.interpolate(cf(x), size=dst, mode="bilinear", align_corners=False))
    assert np.abs(naive - expected).max() > 1e-2


@pytest.mark.parametrize("src,dst", [((5, 7, 9), (11, 13, 6)), ((3, 6, 5), (10, 10, 10)), ((9, 4, 7), (9, 11, 3)),
                                     ((5, 6, 7), (20, 24, 28))])
def test_legacy_trilinear_equals_niftynet_linear_resize(src, dst):
    x = rand(1, *src, 2)
    expected = niftynet_trilinear(x, dst)
    got = cl(tfnn.ResizeLinearLegacy(dst)(cf(x)))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    like = torch.zeros((1, 1, *dst))
    np.testing.assert_array_equal(cl(tfnn.ResizeLinearLegacy()(cf(x), like)), got)


@pytest.mark.parametrize("nd,k,s,n", [(3, 3, 2, 7), (3, 3, 2, 8), (3, 3, 2, 9), (2, 3, 2, 10), (2, 2, 2, 5),
                                      (3, 5, 3, 11), (1, 3, 2, 9)])
def test_avg_pool_same_leaves_padding_out_of_the_mean(nd, k, s, n):
    x = rand(1, *([n + i for i in range(nd)]), 3) + 4.0  # far from 0: a counted zero would show
    expected = tf.nn.pool(x, window_shape=[k] * nd, pooling_type="AVG", strides=[s] * nd, padding="SAME").numpy()
    got = cl(tfnn.AvgPoolSame([k] * nd, [s] * nd)(cf(x)))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_channel_prelu_equals_niftynet_prelu():
    x = rand(2, 5, 6, 7, 4) * 3
    alpha = RNG.uniform(0.05, 0.4, 4).astype(np.float32)
    expected = (tf.nn.relu(x) + alpha * (x - tf.abs(x)) * 0.5).numpy()  # niftynet/layer/activation.py
    layer = tfnn.ChannelPReLU(4)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(alpha))
        got = cl(layer(cf(x)))
    np.testing.assert_array_equal(got, expected)

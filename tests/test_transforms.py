"""Every layout transform, checked numerically: the TF op with the TF kernel must equal the torch
op with the transformed kernel on random input. TF is the oracle here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tf2pt import nn as tfnn
from tf2pt.transforms import TRANSFORMS, get_transform, invert
from tf2pt.errors import MappingError

tf = pytest.importorskip("tensorflow", reason="TensorFlow is the oracle for layout transforms")

RNG = np.random.default_rng(1234)
ATOL = 1e-5


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def to_torch_input(x):
    """NDHWC-style channels-last numpy -> channels-first torch."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def to_numpy_output(y):
    return np.moveaxis(y.detach().numpy(), 1, -1)


def assert_close(got, expected):
    """float32 rounding only: a wrong layout is off by O(1) of the output scale."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=ATOL * scale, rtol=0)


def test_every_transform_maps_shapes_like_arrays():
    shapes = {
        "identity": (2, 3), "conv": (3, 3, 3, 4, 5), "conv1d": (3, 4, 5), "conv2d": (3, 2, 4, 5),
        "conv3d": (3, 2, 1, 4, 5), "conv_transpose": (2, 3, 4, 5), "conv_transpose1d": (3, 4, 5),
        "conv_transpose2d": (3, 2, 4, 5), "conv_transpose3d": (3, 2, 1, 4, 5), "dense": (4, 5),
        "depthwise2d": (3, 2, 4, 2), "scalar": (1,), "depthwise1d": (3, 4, 2), "gru_kernel": (4, 6),
        "gru_bias": (6,), "gru_bias_ih": (2, 6), "gru_bias_hh": (2, 6), "tf1_lstm_kernel_ih": (7, 8),
        "tf1_lstm_kernel_hh": (7, 8), "tf1_lstm_bias": (8,), "tf1_gru_gates_kernel_ih": (5, 4),
        "tf1_gru_gates_kernel_hh": (5, 4), "tf1_gru_candidate_kernel_ih": (5, 2), "tf1_gru_candidate_kernel_hh": (5, 2),
    }
    assert set(shapes) == set(TRANSFORMS), "add the new transform to this test"
    for name, shape in shapes.items():
        t = TRANSFORMS[name]
        out = t(rand(*shape))
        assert out.shape == t.out_shape(shape), name
        assert out.flags["C_CONTIGUOUS"], name


@pytest.mark.parametrize("name,shape", [("conv1d", (3, 4, 5)), ("conv2d", (3, 2, 4, 5)), ("conv3d", (3, 2, 1, 4, 5)),
                                        ("conv_transpose3d", (2, 3, 4, 5, 6)), ("dense", (4, 5)), ("identity", (2,))])
def test_invert_undoes_the_permutation_transforms(name, shape):
    x = rand(*shape)
    assert np.array_equal(invert(name, TRANSFORMS[name](x)), x)


def test_invert_refuses_lossy_transforms():
    with pytest.raises(ValueError, match="no inverse"):
        invert("scalar", rand())


def test_conv3d_is_dhwio_to_oidhw_elementwise():
    k = rand(2, 3, 4, 5, 6)  # D H W I O
    out = TRANSFORMS["conv3d"](k)
    assert out.shape == (6, 5, 2, 3, 4)
    for d, h, w, i, o in [(0, 0, 0, 0, 0), (1, 2, 3, 4, 5), (1, 0, 2, 3, 1)]:
        assert out[o, i, d, h, w] == k[d, h, w, i, o]


@pytest.mark.parametrize("name", ["dense_after_flatten:3x4x5", "dense_after_flatten:6x5", "tf1_lstm_bias:0.25",
                                  "tf1_lstm_kernel_ih:3", "tf1_lstm_kernel_hh:3"])
def test_parametrised_transforms_map_shapes_like_arrays(name):
    t = get_transform(name)
    assert t.name == name and get_transform(name) is t  # built once, named as asked
    shape = {"dense_after_flatten": (60 if "3x4x5" in name else 30, 7), "tf1_lstm_bias": (8,)}.get(name.split(":")[0], (8, 16))
    out = t(rand(*shape))
    assert out.shape == t.out_shape(shape) and out.flags["C_CONTIGUOUS"]


def test_rank_is_checked_and_unknown_names_suggest():
    with pytest.raises(ValueError, match="rank 5"):
        TRANSFORMS["conv3d"](rand(3, 3, 4, 5))
    with pytest.raises(ValueError, match="rank 5"):
        TRANSFORMS["conv3d"].out_shape((3, 3, 4, 5))
    with pytest.raises(MappingError, match="known transforms"):
        get_transform("conv4d")


def test_same_padding_matches_tf_formula():
    # asymmetric SAME: stride 2, kernel 3, even size -> 0 before, 1 after
    assert tfnn.same_padding(8, 3, 2) == (0, 1)
    assert tfnn.same_padding(7, 3, 2) == (1, 1)
    assert tfnn.same_padding(8, 4, 1) == (1, 2)
    assert tfnn.same_padding(8, 3, 1, 4) == (4, 4)
    assert tfnn.same_padding(5, 1, 2) == (0, 0)


CONV_CASES = [
    # (spatial dims, kernel, stride, dilation, size, padding)
    (nd, k, s, d, n, p)
    for nd in (1, 2, 3)
    for k, s, d in [(3, 1, 1), (3, 2, 1), (2, 1, 1), (4, 2, 1), (3, 1, 2), (3, 1, 4), (1, 2, 1)]
    for n in (7, 8)
    for p in ("SAME", "VALID")
    if not (nd == 3 and n == 7 and p == "VALID")  # keep the 3-D grid small
    and not (p == "VALID" and (k - 1) * d + 1 > n)
]


@pytest.mark.parametrize("nd,k,s,d,n,padding", CONV_CASES)
def test_conv_kernel_transform_matches_tf(nd, k, s, d, n, padding):
    cin, cout = 3, 4
    x = rand(2, *([n] * nd), cin)
    w = rand(*([k] * nd), cin, cout)
    expected = tf.nn.convolution(x, w, strides=s, dilations=d, padding=padding).numpy()
    name = f"conv{nd}d"
    wt = torch.from_numpy(TRANSFORMS[name](w))
    assert torch.equal(wt, torch.from_numpy(TRANSFORMS["conv"](w)))
    conv_cls = {1: tfnn.Conv1dSame, 2: tfnn.Conv2dSame, 3: tfnn.Conv3dSame}[nd]
    if padding == "SAME":
        layer = conv_cls(cin, cout, k, stride=s, dilation=d, bias=False)
        with torch.no_grad():
            layer.weight.copy_(wt)
            got = layer(to_torch_input(x))
    else:
        conv = getattr(F, f"conv{nd}d")
        got = conv(to_torch_input(x), wt, stride=s, dilation=d)
    assert_close(to_numpy_output(got), expected)


TRANSPOSE_CASES = [
    (nd, k, s, n, out_delta, p)
    for nd in (1, 2, 3)
    for k, s in [(3, 2), (2, 2), (3, 1), (4, 2), (5, 3)]
    for n in (4, 5)
    for out_delta in (0, -1)
    for p in ("SAME", "VALID")
    if not (p == "VALID" and out_delta) and not (nd == 3 and n == 5)
    and -(-(n * s + out_delta) // s) == n  # a SAME output size the input can come from
]


@pytest.mark.parametrize("nd,k,s,n,out_delta,padding", TRANSPOSE_CASES)
def test_conv_transpose_kernel_transform_matches_tf(nd, k, s, n, out_delta, padding):
    cin, cout = 3, 2
    x = rand(1, *([n] * nd), cin)
    w = rand(*([k] * nd), cout, cin)  # TF: [k..., out, in]
    if padding == "SAME":
        out = n * s + out_delta
    else:
        out = (n - 1) * s + k
    tf_op = {1: tf.nn.conv1d_transpose, 2: tf.nn.conv2d_transpose, 3: tf.nn.conv3d_transpose}[nd]
    expected = tf_op(x, w, output_shape=[1, *([out] * nd), cout], strides=s, padding=padding).numpy()
    wt = torch.from_numpy(TRANSFORMS[f"conv_transpose{nd}d"](w))
    assert tuple(wt.shape) == (cin, cout, *([k] * nd))
    if padding == "SAME":
        cls = {1: tfnn.ConvTranspose1dSame, 2: tfnn.ConvTranspose2dSame, 3: tfnn.ConvTranspose3dSame}[nd]
        layer = cls(cin, cout, k, stride=s, bias=True)
        bias = rand(cout)
        with torch.no_grad():
            layer.weight.copy_(wt)
            layer.bias.copy_(torch.from_numpy(bias))
            got = layer(to_torch_input(x), output_size=[out] * nd)
        expected = expected + bias
    else:
        got = getattr(F, f"conv_transpose{nd}d")(to_torch_input(x), wt, stride=s)
    assert_close(to_numpy_output(got), expected)


def test_dense_transform_matches_tf():
    x, w = rand(5, 7), rand(7, 3)
    expected = tf.linalg.matmul(x, w).numpy()
    got = F.linear(torch.from_numpy(x), torch.from_numpy(TRANSFORMS["dense"](w)))
    assert_close(got.numpy(), expected)


@pytest.mark.parametrize("k,s,d,mult,n", [(3, 1, 1, 1, 8), (3, 2, 1, 2, 8), (2, 1, 1, 3, 7), (3, 1, 2, 2, 9), (3, 2, 1, 1, 7)])
def test_depthwise_transform_matches_tf(k, s, d, mult, n):
    cin = 4
    x = rand(2, n, n, cin)
    w = rand(k, k, cin, mult)
    expected = tf.nn.depthwise_conv2d(x, w, strides=[1, s, s, 1], padding="SAME", dilations=[d, d]).numpy()
    layer = tfnn.Conv2dSame(cin, cin * mult, k, stride=s, dilation=d, groups=cin, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(TRANSFORMS["depthwise2d"](w)))
        got = layer(to_torch_input(x))
    assert_close(to_numpy_output(got), expected)


@pytest.mark.parametrize("nd,k,s,n", [(3, 2, 2, 8), (3, 3, 2, 7), (2, 3, 2, 8), (1, 3, 3, 10), (2, 2, 1, 5)])
def test_maxpool_same_matches_tf(nd, k, s, n):
    x = rand(1, *([n] * nd), 3) - 5.0  # all negative: zero padding would be visible
    expected = tf.nn.max_pool(x, ksize=k, strides=s, padding="SAME").numpy()
    got = tfnn.MaxPoolSame([k] * nd, [s] * nd)(to_torch_input(x))
    np.testing.assert_allclose(to_numpy_output(got), expected, atol=0, rtol=0)


def test_wrong_permutation_is_visible_numerically():
    """The reason tf2pt checks numerics at all: a plausible but wrong permutation of a cubic kernel
    (in == out) keeps every shape and still changes the output."""
    x = rand(1, 6, 6, 6, 4)
    w = rand(3, 3, 3, 4, 4)
    expected = tf.nn.convolution(x, w, padding="SAME").numpy()
    wrong = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 4, 0, 1, 2))))  # I and O swapped
    right = torch.from_numpy(TRANSFORMS["conv3d"](w))
    assert wrong.shape == right.shape
    got_wrong = to_numpy_output(F.conv3d(to_torch_input(x), wrong, padding=1))
    got_right = to_numpy_output(F.conv3d(to_torch_input(x), right, padding=1))
    assert_close(got_right, expected)
    assert np.abs(got_wrong - expected).max() > 0.1

"""Write NiftyNet-layout HighRes3DNet checkpoints with real TensorFlow (compat.v1 graph mode).

The graph follows NiftyNet's source (``niftynet/network/highres3dnet.py`` and the layers it uses)
op for op where it matters: ``tf.get_variable`` names (``conv_/w``, ``bn_/beta``, ...), batch
statistics and ``assign_moving_average`` updates (zero-debiased, which creates the ``biased`` and
``local_step`` variables under a doubled scope), dilation by ``space_to_batch_nd``, channel
zero-padding in the residual sum, Adam under ``ApplyGradients`` and an
``ExponentialMovingAverage`` of the trainable variables. A few real training steps run, so every
training-only variable holds what training puts there; then the inference variables are set to
random, non-trivial values (moving mean != 0, moving variance != 1) or to given weights.

The ``.meta`` holds the network in inference mode (feed ``images:0``, N x D x H x W x C, fetch
``logits:0``) and a Saver over every variable; ``tf2pt verify`` runs it as the original graph.

TensorFlow is imported inside the functions: importing this module needs only numpy.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Union

import numpy as np

SCOPE = "HighRes3DNet"
INPUT_TENSOR = "images:0"
OUTPUT_TENSOR = "logits:0"
STAGES = [("res_1", 16, 1), ("res_2", 32, 2), ("res_3", 64, 4)]


def _build(tf, images, is_training: bool, num_classes: int, activation: str):
    """HighRes3DNet on ``images`` (NDHWC). Variables are created on first call, reused after."""
    v1 = tf.compat.v1
    from tensorflow.python.training import moving_averages  # NiftyNet's bn.py uses it directly

    def conv(x, cout, k, name):
        with v1.variable_scope(name):
            w = v1.get_variable("w", [k, k, k, int(x.shape[-1]), cout], initializer=v1.glorot_uniform_initializer())
            return tf.nn.convolution(x, w, strides=[1, 1, 1], padding="SAME")

    def bn(x, name):
        c = int(x.shape[-1])
        with v1.variable_scope(name):
            beta = v1.get_variable("beta", [c], initializer=v1.zeros_initializer())
            gamma = v1.get_variable("gamma", [c], initializer=v1.ones_initializer())
            collections = [v1.GraphKeys.GLOBAL_VARIABLES]
            mean_v = v1.get_variable("moving_mean", [c], initializer=v1.zeros_initializer(), trainable=False,
                                     collections=collections)
            var_v = v1.get_variable("moving_variance", [c], initializer=v1.ones_initializer(), trainable=False,
                                    collections=collections)
            if is_training:
                mean, variance = tf.nn.moments(x, axes=[0, 1, 2, 3])
                # zero_debias=True is the default, as in NiftyNet: it creates <scope>/<var>/biased, local_step
                for update in (moving_averages.assign_moving_average(mean_v, mean, 0.9),
                               moving_averages.assign_moving_average(var_v, variance, 0.9)):
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update.op)
            else:
                mean, variance = mean_v, var_v
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-5, name="batch_norm")

    def acti(x, name):
        if activation == "relu":
            return tf.nn.relu(x)
        with v1.variable_scope(name):  # NiftyNet's prelu: relu(x) + alpha * (x - |x|) / 2
            alpha = v1.get_variable("alpha", [int(x.shape[-1])], initializer=v1.constant_initializer(0.2))
            return tf.nn.relu(x) + alpha * (x - tf.abs(x)) * 0.5

    def conv_layer(x, cout, k, name, act=True):
        layer = f"{name}_bn" + (f"_{activation}" if act else "")
        with v1.variable_scope(layer):
            y = bn(conv(x, cout, k, "conv_"), "bn_")
            return acti(y, "acti_") if act else y

    def res_block(x, cout, name):
        with v1.variable_scope(name):
            y = x
            for i in range(2):
                y = conv(acti(bn(y, f"bn_{i}"), f"acti_{i}"), cout, 3, f"conv_{i}")
            grow = cout - int(x.shape[-1])
            if grow:
                x = tf.pad(x, [[0, 0]] * 4 + [[grow // 2, grow - grow // 2]])
            return y + x

    with v1.variable_scope(SCOPE, reuse=v1.AUTO_REUSE):
        flow = conv_layer(images, 16, 3, "conv_0")
        for stage, cout, dilation in STAGES:
            if dilation > 1:
                flow = tf.compat.v1.space_to_batch_nd(flow, [dilation] * 3, [[0, 0]] * 3, name="dilated")
            for j in range(3):
                flow = res_block(flow, cout, f"{stage}_{j}")
            if dilation > 1:
                flow = tf.compat.v1.batch_to_space_nd(flow, [dilation] * 3, [[0, 0]] * 3, name="de-dilate")
        flow = conv_layer(flow, 80, 1, "conv_1")
        return conv_layer(flow, num_classes, 1, "conv_2", act=False)


def statistic_values(leaf: str, shape, rng: np.random.Generator):
    """Realistic values for a BN statistic or parameter, or a PReLU slope (``None`` for other
    leaves): moving variance != 1 and mean != 0, so a swap of the two changes the output."""
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if leaf == "moving_mean":
        return rng.normal(0.3, 0.5, shape).astype(np.float32)
    if leaf == "gamma":
        return rng.uniform(0.6, 1.4, shape).astype(np.float32)
    if leaf == "beta":
        return rng.normal(0.0, 0.3, shape).astype(np.float32)
    if leaf == "alpha":
        return rng.uniform(0.05, 0.4, shape).astype(np.float32)
    return None


def random_inference_values(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Non-trivial values: a swapped mean/variance or a wrong permutation changes the output."""
    value = statistic_values(name.rsplit("/", 1)[-1], shape, rng)
    if value is not None:
        return value
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _export_inference_meta(tf, meta_path, all_vars, in_channels, num_classes, activation):
    """The ``.meta``: NiftyNet's network in inference mode (``images:0`` -> ``logits:0``) and a
    Saver over every variable of the checkpoint, so ``import_meta_graph`` + ``restore`` work.

    The training ops (gradients, Adam, moving-average updates) are left out of it: they would
    triple its size and inference never runs them.
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, None, None, None, in_channels], name=INPUT_TENSOR.split(":")[0])
        tf.identity(_build(tf, images, False, num_classes, activation), name=OUTPUT_TENSOR.split(":")[0])
        existing = {v.op.name for v in v1.global_variables()}
        for name, shape, dtype in all_vars:
            if name not in existing:
                var = tf.Variable(tf.zeros(shape, dtype), name=name, trainable=False)
                assert var.op.name == name, (var.op.name, name)
        saver = v1.train.Saver(v1.global_variables())
        saver.export_meta_graph(meta_path, clear_devices=True, strip_default_attrs=True)


def write_highres3dnet(
    out_dir,
    *,
    num_classes: int = 160,
    in_channels: int = 1,
    activation: str = "relu",
    weights: Union[None, Dict[str, np.ndarray], Callable[[str, list], np.ndarray]] = None,
    seed: int = 0,
    train_steps: int = 2,
    train_size: int = 8,
    global_step: int = 33000,
    prefix: str = "model.ckpt",
    state_file: Optional[str] = None,
) -> str:
    """Train a few steps, set the inference variables, save ``<out_dir>/<prefix>-<global_step>``
    (with ``.meta``) and return that prefix.

    ``weights`` maps NiftyNet variable names to arrays in NiftyNet layout (every inference
    variable must be given), or is a function ``(name, shape) -> array``. ``state_file``, if given, is written as the ``checkpoint`` file's
    ``model_checkpoint_path`` (e.g. an absolute path from another machine).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        gstep = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [1, train_size, train_size, train_size, in_channels], name="train_images")
        y = v1.placeholder(tf.int32, [1, train_size, train_size, train_size], name="train_labels")
        logits_train = _build(tf, x, True, num_classes, activation)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits_train))
        model_vars = v1.global_variables(scope=SCOPE + "/")
        trainable = v1.trainable_variables(scope=SCOPE + "/")
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            with tf.name_scope("ApplyGradients"):
                optimizer = v1.train.AdamOptimizer(1e-3)
                grads = optimizer.compute_gradients(loss, var_list=trainable)
                train_op = optimizer.apply_gradients(grads, global_step=gstep)
        ema = v1.train.ExponentialMovingAverage(0.9)
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(trainable)

        # Set the inference variables in one run: placeholders and assign ops are built up front.
        inference = [v for v in model_vars if not any(s in v.op.name for s in ("/biased", "/local_step"))]
        feeds = {v.op.name: v1.placeholder(tf.float32, v.shape, name="set_value") for v in inference}
        set_values = tf.group(*[v.assign(feeds[v.op.name]) for v in inference], gstep.assign(global_step))
        values = {}
        for v in inference:
            name, shape = v.op.name, v.shape.as_list()
            if callable(weights):
                value = np.asarray(weights(name, shape), dtype=np.float32)
            elif weights is not None:
                if name not in weights:
                    raise KeyError(f"no weight given for {name}")
                value = np.asarray(weights[name], dtype=np.float32)
            else:
                value = random_inference_values(name, shape, rng)
            if list(value.shape) != shape:
                raise ValueError(f"{name}: shape {list(value.shape)} != {shape}")
            values[name] = value
        if isinstance(weights, dict):
            unused = sorted(set(weights) - set(values))
            if unused:
                raise KeyError(f"weights not in the graph: {unused[:5]}")

        saver = v1.train.Saver(v1.global_variables(), max_to_keep=1)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(train_steps):
                feed = {
                    x: rng.standard_normal(x.shape.as_list()).astype(np.float32),
                    y: rng.integers(0, num_classes, y.shape.as_list()).astype(np.int32),
                }
                sess.run(train_op, feed)
            sess.run(set_values, {feeds[name]: value for name, value in values.items()})
            path = saver.save(sess, os.path.join(out_dir, prefix), global_step=global_step, write_meta_graph=False)
        all_vars = [(v.op.name, v.shape.as_list(), v.dtype.base_dtype) for v in v1.global_variables()]
    _export_inference_meta(tf, path + ".meta", all_vars, in_channels, num_classes, activation)
    if state_file is not None:
        with open(os.path.join(out_dir, "checkpoint"), "w") as fh:
            fh.write(f'model_checkpoint_path: "{state_file}"\nall_model_checkpoint_paths: "{state_file}"\n')
    return path

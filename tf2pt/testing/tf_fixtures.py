"""Checkpoints written by real TensorFlow, for tests and benchmarks.

Each ``write_*`` function takes an output directory, writes one kind of checkpoint there and
returns the path a user would pass to tf2pt. TensorFlow is imported inside the functions.
Values are seeded random and non-trivial.
"""

from __future__ import annotations

import os
from typing import Dict

import numpy as np


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _values(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One variable per dtype TF can save, with awkward shapes (scalars, zero-size, 4-D)."""
    import ml_dtypes

    f = rng.standard_normal
    out = {
        "float32/matrix": f((5, 7)).astype(np.float32),
        "float32/scalar": np.array(3.25, np.float32),
        "float32/empty": np.zeros((0, 3), np.float32),
        "float32/with_nan_inf": np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40], np.float32),
        "float64/kernel": f((2, 3, 4, 5)),
        "float16/v": f((9,)).astype(np.float16),
        "bfloat16/v": f((4, 3)).astype(ml_dtypes.bfloat16),
        "int8/v": rng.integers(-128, 128, (6,), dtype=np.int8),
        "int16/v": rng.integers(-30000, 30000, (6,), dtype=np.int16),
        "int32/v": rng.integers(-2**31, 2**31 - 1, (2, 3), dtype=np.int32),
        "int64/v": rng.integers(-2**62, 2**62, (3,), dtype=np.int64),
        "uint8/v": rng.integers(0, 256, (2, 2, 2), dtype=np.uint8),
        "uint16/v": rng.integers(0, 2**16, (5,), dtype=np.uint16),
        "uint32/v": rng.integers(0, 2**32, (5,), dtype=np.uint32),
        "uint64/v": rng.integers(0, 2**63, (5,), dtype=np.uint64),
        "bool/v": rng.integers(0, 2, (3, 3)).astype(bool),
        "complex64/v": (f((4,)) + 1j * f((4,))).astype(np.complex64),
        "complex128/v": f((2,)) + 1j * f((2,)),
        "string/scalar": np.array(b"hello, checkpoint"),
        "string/vector": np.array([b"", b"a", b"\x00\xff binary", "ünïcødé".encode(), b"x" * 300], dtype=object),
        "string/matrix": np.array([[b"ab", b"c"], [b"", b"defgh"]], dtype=object),
    }
    return out


def write_all_dtypes(out_dir, seed: int = 0) -> str:
    """Every numeric dtype, bool, complex and strings, through ``tf.train.Checkpoint``."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    values = _values(rng)
    root = tf.Module()
    for name, value in values.items():
        group, leaf = name.split("/")
        holder = getattr(root, group, None)
        if holder is None:
            holder = tf.Module()
            setattr(root, group, holder)
        dtype = tf.string if value.dtype == object or value.dtype.kind == "S" else tf.as_dtype(value.dtype)
        setattr(holder, leaf, tf.Variable(value, dtype=dtype))
    ckpt = tf.train.Checkpoint(root=root)
    return ckpt.write(os.path.join(out_dir, "dtypes"))


def write_tf1_saver(out_dir, seed: int = 1) -> str:
    """A TF1 graph-mode ``Saver`` checkpoint with ``.meta``, a few Momentum training steps."""
    tf = _tf()
    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        x = v1.placeholder(tf.float32, [4, 6], name="x")
        with v1.variable_scope("dense"):
            w = v1.get_variable("kernel", [6, 3])
            b = v1.get_variable("bias", [3], initializer=v1.constant_initializer(0.5))
        loss = tf.reduce_sum(tf.square(tf.matmul(x, w) + b))
        step = v1.train.get_or_create_global_step()
        train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train, {x: rng.standard_normal((4, 6)).astype(np.float32)})
            return saver.save(sess, os.path.join(out_dir, "model.ckpt"), global_step=step)


def _keras_model(tf):
    inputs = tf.keras.Input((8, 8, 2))
    h = tf.keras.layers.Conv2D(4, 3, padding="same", name="conv2d_1")(inputs)
    h = tf.keras.layers.BatchNormalization(name="bn")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    outputs = tf.keras.layers.Dense(3, name="dense")(h)
    return tf.keras.Model(inputs, outputs)


def write_tf2_keras(out_dir, seed: int = 2) -> str:
    """A TF2 object-based checkpoint of a Keras model and its Adam optimizer after two steps."""
    tf = _tf()
    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    model = _keras_model(tf)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    for _ in range(2):
        x = tf.constant(rng.standard_normal((2, 8, 8, 2)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    return ckpt.save(os.path.join(out_dir, "ckpt"))


def write_tf2_module_v1_adam(out_dir, seed: int = 8) -> str:
    """A TF2 object-based checkpoint of a ``tf.Module`` trained with ``tf.compat.v1``'s Adam,
    whose slots are saved as ``<var>/.OPTIMIZER_SLOT/optimizer/{m,v}`` (as Keras 2 writes them)."""
    tf = _tf()
    rng = np.random.default_rng(seed)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.conv = tf.Module()
            self.conv.kernel = tf.Variable(rng.standard_normal((3, 3, 2, 4)).astype(np.float32), name="conv2d_1/kernel")
            self.conv.bias = tf.Variable(rng.standard_normal((4,)).astype(np.float32), name="conv2d_1/bias")

    net = Net()
    optimizer = tf.compat.v1.train.AdamOptimizer(1e-3)
    x = tf.constant(rng.standard_normal((1, 5, 5, 2)).astype(np.float32))
    for _ in range(2):
        optimizer.minimize(lambda: tf.reduce_sum(tf.nn.conv2d(x, net.conv.kernel, 1, "SAME") + net.conv.bias) ** 2,
                           var_list=[net.conv.kernel, net.conv.bias])
    return tf.train.Checkpoint(model=net, optimizer=optimizer).save(os.path.join(out_dir, "module"))


def write_savedmodel(out_dir, seed: int = 3) -> str:
    """A SavedModel of a ``tf.Module`` with a serving function."""
    tf = _tf()
    rng = np.random.default_rng(seed)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((4, 2)).astype(np.float32), name="w")
            self.b = tf.Variable(rng.standard_normal((2,)).astype(np.float32), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return tf.matmul(x, self.w) + self.b

    path = os.path.join(out_dir, "savedmodel")
    tf.saved_model.save(Net(), path)
    return path


def write_sharded(out_dir, seed: int = 4, shards: int = 3) -> str:
    """A checkpoint whose data is split over several ``.data-*`` shards (variables on several
    CPU devices, saved with a sharded ``Saver``)."""
    tf = _tf()
    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        for i in range(shards * 2):
            with tf.device(f"/cpu:{i % shards}"):
                v1.get_variable(f"layer_{i}/w", initializer=rng.standard_normal((3, i + 2)).astype(np.float32))
        saver = v1.train.Saver(sharded=True)
        config = v1.ConfigProto(device_count={"CPU": shards})
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, os.path.join(out_dir, "sharded.ckpt"), write_meta_graph=False)


def write_partitioned(out_dir, seed: int = 5) -> str:
    """Partitioned (sliced) variables: ``fixed_size_partitioner`` over rows, and a 1-D one."""
    tf = _tf()
    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.get_variable("embedding", shape=[10, 4], initializer=v1.random_normal_initializer(seed=seed),
                        partitioner=v1.fixed_size_partitioner(3))
        v1.get_variable("bias", shape=[7], initializer=v1.random_normal_initializer(seed=seed + 1),
                        partitioner=v1.fixed_size_partitioner(2))
        v1.get_variable("plain", initializer=rng.standard_normal((2, 2)).astype(np.float32))
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, os.path.join(out_dir, "partitioned.ckpt"), write_meta_graph=False)


def write_sliced_savev2(out_dir, seed: int = 10) -> str:
    """Partitioned variables written slice by slice through TF's own ``SaveV2`` op, with slice
    specs ``Saver`` never produces: full extents (``-``, stored as start 0, length -1), starts
    of 64 and more (multi-byte OrderedCode numbers), a tiling along two axes, several dtypes."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((200, 3)).astype(np.float32)
    grid = rng.integers(-2**40, 2**40, (70, 9), dtype=np.int64)
    mask = rng.integers(0, 2, (130, 2)).astype(bool)
    f64 = rng.standard_normal((5,))
    specs = [
        ("emb", "200 3 0,70:-", emb[:70]),
        ("emb", "200 3 70,100:-", emb[70:170]),
        ("emb", "200 3 170,30:0,3", emb[170:]),
        ("grid", "70 9 0,65:0,4", grid[:65, :4]),
        ("grid", "70 9 0,65:4,5", grid[:65, 4:]),
        ("grid", "70 9 65,5:-", grid[65:]),
        ("mask", "130 2 0,129:-", mask[:129]),
        ("mask", "130 2 129,1:-", mask[129:]),
        ("whole", "", f64),
    ]
    prefix = os.path.join(out_dir, "sliced")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[s[0] for s in specs], shape_and_slices=[s[1] for s in specs],
                      tensors=[tf.constant(s[2]) for s in specs])
    return prefix


def write_v1_format(out_dir) -> str:
    """A checkpoint in the old single-file V1 format (``SaverDef.V1``), which tf2pt refuses
    with a clear message; returns the file's path (its directory also has a state file)."""
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.get_variable("w", initializer=np.ones((2, 2), np.float32))
        saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, os.path.join(out_dir, "model.ckpt"), write_meta_graph=False)


def write_frozen_graph(out_dir, seed: int = 9) -> str:
    """A frozen GraphDef (``convert_variables_to_constants``) with constants of many dtypes:
    packed tensor_content, typed-value lists, splats, half, bool, strings, negative ints."""
    tf = _tf()
    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        w = v1.get_variable("dense/kernel", initializer=rng.standard_normal((4, 3)).astype(np.float32))
        b = v1.get_variable("dense/bias", initializer=rng.standard_normal((3,)).astype(np.float32))
        y = tf.identity(tf.matmul(x, w) + b, name="y")
        tf.constant(np.float32(2.5), name="scalar_f32")
        tf.constant(np.full((2, 3), 7.0, np.float32), name="splat_f32")
        tf.constant(np.array([-3, 0, 2**31 - 1, -2**31], np.int32), name="ints")
        tf.constant(np.array([-(2**40), 5], np.int64), name="int64s")
        tf.constant(rng.standard_normal(5).astype(np.float16), name="halfs")
        tf.constant(np.array([True, False, True]), name="bools")
        tf.constant([b"a", b"", b"\x00\xff"], name="strings")
        tf.constant(rng.standard_normal((2, 2)), name="doubles")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), ["y", "scalar_f32", "splat_f32", "ints", "int64s", "halfs", "bools",
                                             "strings", "doubles"])
    path = os.path.join(out_dir, "frozen.pb")
    with open(path, "wb") as fh:
        fh.write(frozen.SerializeToString())
    return path


def write_many(out_dir, count: int = 1000, seed: int = 6) -> str:
    """``count`` small variables (for timing ``inspect``)."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    root = tf.Module()
    root.vars = [tf.Variable(rng.standard_normal((rng.integers(1, 8), 4)).astype(np.float32), name=f"v{i}")
                 for i in range(count)]
    return tf.train.Checkpoint(root=root).write(os.path.join(out_dir, "many"))


def write_big(out_dir, total_bytes: int, tensors: int, seed: int = 7, shards: int = 1) -> str:
    """A checkpoint of ``tensors`` float32 tensors totalling about ``total_bytes`` (benchmarks)."""
    tf = _tf()
    v1 = tf.compat.v1
    per = max(1, total_bytes // tensors // 4)
    rows = max(1, int(per ** 0.5))
    cols = max(1, per // rows)
    graph = tf.Graph()
    with graph.as_default():
        for i in range(tensors):
            with tf.device(f"/cpu:{i % shards}"):
                v1.get_variable(f"block_{i:04d}/kernel", [rows, cols], initializer=v1.random_normal_initializer(seed=seed + i))
        saver = v1.train.Saver(sharded=shards > 1)
        config = v1.ConfigProto(device_count={"CPU": shards})
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, os.path.join(out_dir, "big.ckpt"), write_meta_graph=False)

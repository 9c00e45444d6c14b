"""The training-only rules, on names real checkpoints carry."""

import pytest

from tf2pt.read.roles import classify

CASES = [
    # NiftyNet / TF1
    ("HighRes3DNet/conv_0_bn_relu/conv_/w", "inference"),
    ("HighRes3DNet/conv_0_bn_relu/bn_/moving_mean", "inference"),
    ("HighRes3DNet/conv_0_bn_relu/bn_/moving_variance", "inference"),
    ("HighRes3DNet/res_1_0/acti_0/alpha", "inference"),
    ("HighRes3DNet/res_1_0/conv_0/w/Adam", "training"),
    ("HighRes3DNet/res_1_0/conv_0/w/Adam_1", "training"),
    ("HighRes3DNet/conv_0_bn_relu/bn_/moving_variance/ExponentialMovingAverage", "training"),
    ("HighRes3DNet/conv_0_bn_relu/bn_/HighRes3DNet/conv_0_bn_relu/bn_/moving_mean/biased", "training"),
    ("HighRes3DNet/conv_0_bn_relu/bn_/HighRes3DNet/conv_0_bn_relu/bn_/moving_mean/local_step", "training"),
    ("ApplyGradients/beta1_power", "training"),
    ("beta2_power", "training"),
    ("global_step", "training"),
    ("dense/kernel/Momentum", "training"),
    ("dense/kernel/RMSProp_1", "training"),
    ("dense/kernel/Ftrl", "training"),
    ("dense/kernel/Ftrl_1", "training"),
    ("dense/kernel/Adagrad", "training"),
    ("dense/kernel/AdagradDA_1", "training"),
    ("dense/kernel/Momentum_1", "training"),  # a second Momentum optimizer on the same variable
    ("beta1_power_1", "training"),
    ("train/beta2_power", "training"),
    # TF2 object-based
    ("model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE", "inference"),
    ("model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("optimizer/_variables/3/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE", "inference"),
    ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("keras_api/metrics/0/total/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("model/keras_api/metrics/1/count/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("optimizer/beta_1/.ATTRIBUTES/VARIABLE_VALUE", "training"),   # tf-keras 2
    ("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE", "training"),  # Keras 3
    ("opt/iter/.ATTRIBUTES/VARIABLE_VALUE", "training"),  # tf.train.Checkpoint(opt=optimizer)
    ("model/layer_with_weights-0/bias/.OPTIMIZER_SLOT/optimizer/v/.ATTRIBUTES/VARIABLE_VALUE", "training"),
    ("model/bn/moving_mean/.ATTRIBUTES/VARIABLE_VALUE", "inference"),
    ("_CHECKPOINTABLE_OBJECT_GRAPH", "training"),
    # TF 2.x canned Estimators (Keras optimizers under training/<Optimizer>/)
    ("training/Adagrad/dnn/hiddenlayer_0/kernel/accumulator", "training"),
    ("training/Ftrl/linear/linear_model/age/weights/accumulator", "training"),
    ("training/Ftrl/linear/linear_model/age/weights/linear", "training"),
    ("training/Adagrad/learning_rate", "training"),
    ("training/Ftrl/learning_rate_power", "training"),
    ("training/Adagrad/iter", "training"),
    ("training/Adam_1/dnn/logits/bias/m", "training"),
    ("dnn/hiddenlayer_0/kernel", "inference"),
    ("linear/linear_model/age/weights", "inference"),
    # names that merely look alike stay inference
    ("training/dropout_rate", "inference"),
    ("model/training/Adagrad_like/w", "inference"),
    ("adam_block/conv/w", "inference"),
    ("model/biased_layer/w", "inference"),
    ("global_step_embedding/w", "inference"),
    ("encoder/Adam_layer/w", "inference"),
    ("beta1_power_scale", "inference"),
    ("model/moving_average/w", "inference"),
]


@pytest.mark.parametrize("name,role", CASES)
def test_role_rules(name, role):
    assert classify(name)[0] == role


def test_every_rule_is_exercised_by_the_table():
    from tf2pt.read.roles import RULES

    reasons = {classify(name)[1] for name, role in CASES if role == "training"}
    for pattern, reason in RULES:
        assert any(r == reason or ("{" in reason and r.startswith(reason.split("{")[0])) for r in reasons), pattern


def test_estimator_optimizer_state_names_the_optimizer():
    assert classify("training/Ftrl/linear/linear_model/x/weights/accumulator") == ("training", "optimizer state (training/Ftrl)")


def test_recorded_roles_come_before_the_name_rules():
    """What the graph records (trainable_variables / model_variables) beats a name that looks
    like an optimizer slot."""
    assert classify("encoder/w/Adam", recorded="trainable") == (
        "inference", "trainable variable recorded in the graph (named like: optimizer slot (Adam))")
    assert classify("bn/moving_mean/ExponentialMovingAverage", recorded="model")[0] == "inference"
    assert classify("encoder/w/Adam") == ("training", "optimizer slot (Adam)")
    assert classify("dense/kernel", recorded="trainable") == ("inference", "model variable")


def test_reasons_name_the_rule():
    assert classify("x/w/Adam_1") == ("training", "optimizer slot (Adam_1)")
    assert classify("a/b/ExponentialMovingAverage")[1] == "ExponentialMovingAverage shadow"
    assert classify("s/x/biased")[1] == "zero-debias accumulator"
    assert classify("x", slot_of="conv/kernel") == ("training", "optimizer slot")
    assert classify("x", owner="metric") == ("training", "Keras metric")


def test_meta_collections_decide_before_names(tf, tmp_path):
    """A TF1 graph whose trainable variable is named like an Adam slot: the .meta's
    trainable_variables collection makes it a model variable; the real slots stay training."""
    from tf2pt.read import open_checkpoint

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        w = v1.get_variable("encoder/w/Adam", [3, 2])
        loss = tf.reduce_sum(tf.square(w))
        train = v1.train.AdamOptimizer(0.1).minimize(loss)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train)
            prefix = v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    with open_checkpoint(prefix) as ckpt:
        roles = {n: (v.role, v.role_reason) for n, v in ckpt.variables.items()}
        assert roles["encoder/w/Adam"] == (
            "inference", "trainable variable recorded in the graph (named like: optimizer slot (Adam))")
        assert roles["encoder/w/Adam/Adam"][0] == "training"
        assert roles["beta1_power"][0] == "training"
        assert any("recorded as model variables in model.ckpt.meta" in n for n in ckpt.notes)


def test_savedmodel_trainable_flags_decide_before_names(tf, tmp_path):
    """A SavedModel whose trainable variable is an attribute named like Keras' step counter."""
    from tf2pt.read import open_checkpoint

    module = tf.Module()
    module.iterations = tf.Variable(tf.ones([2]), trainable=True)
    module.counter = tf.Variable(3, trainable=False)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    with open_checkpoint(tmp_path / "sm") as ckpt:
        roles = {n: v.role for n, v in ckpt.variables.items()}
        assert roles["iterations/.ATTRIBUTES/VARIABLE_VALUE"] == "inference"
        assert roles["counter/.ATTRIBUTES/VARIABLE_VALUE"] == "inference"  # not trainable: names decide
    assert classify("iterations/.ATTRIBUTES/VARIABLE_VALUE")[0] == "training"  # what the name alone says

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
    # names that merely look alike stay inference
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


def test_reasons_name_the_rule():
    assert classify("x/w/Adam_1") == ("training", "optimizer slot (Adam_1)")
    assert classify("a/b/ExponentialMovingAverage")[1] == "ExponentialMovingAverage shadow"
    assert classify("s/x/biased")[1] == "zero-debias accumulator"
    assert classify("x", slot_of="conv/kernel") == ("training", "optimizer slot")
    assert classify("x", owner="metric") == ("training", "Keras metric")

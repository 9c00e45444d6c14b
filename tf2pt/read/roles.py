"""Classify checkpoint variables: used for inference, or left behind by training.

Rules are data: an ordered list of ``(regex, reason)``; the first that matches (``re.search``
on the full key) makes a variable training-only. Object-graph facts (an optimizer slot, a
variable owned by an optimizer or a metric) are applied before the name rules. Everything else is
``inference``. ``tests/test_roles.py`` checks the rules on a table of real names.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

INFERENCE = "inference"
TRAINING = "training"

#: (pattern, reason): training-only variables by name. ``{1}``, ``{2}`` in a reason are the
#: pattern's groups.
RULES: List[Tuple[str, str]] = [
    # TF1 optimizer slots: <var>/<Optimizer>[_N]
    # (the slot is named after the optimizer's `name`; a custom name is not recognisable by name)
    (r"/((?:Adam|AdamW|Nadam|Adamax|Momentum|RMSProp|Adagrad|AdagradDA|ProximalAdagrad|Adadelta|Ftrl|LAMB|LazyAdam)"
     r"(?:_\d+)?)$", "optimizer slot ({1})"),
    (r"(^|/)(beta1_power|beta2_power)(_\d+)?$", "optimizer {2}"),
    # TF 2.x canned Estimators: Keras optimizers under training/<Optimizer>/, their slots
    # (training/Adagrad/dense/kernel/accumulator) and hyperparameters (training/Ftrl/learning_rate)
    (r"^training/((?:Adam|AdamW|Adagrad|Adadelta|Adamax|Ftrl|Nadam|RMSprop|RMSProp|SGD|Momentum|LAMB|Lion)(?:_\d+)?)/",
     "optimizer state (training/{1})"),
    # TF2 object-based checkpoints
    (r"/\.OPTIMIZER_SLOT/", "optimizer slot (.OPTIMIZER_SLOT)"),
    (r"^optimizer/(?!_trainable_variables/)", "optimizer variable"),  # Keras 3 lists model variables there too
    (r"^(keras_api/)?metrics?/|/metrics/|^keras_api/metrics", "Keras metric"),
    (r"(^|/)(_CHECKPOINTABLE_OBJECT_GRAPH)$", "object graph"),
    (r"^save_counter(/|$)", "save counter"),
    # moving-average shadows and zero-debias state
    (r"/ExponentialMovingAverage(_\d+)?$", "ExponentialMovingAverage shadow"),
    (r"/biased$", "zero-debias accumulator"),
    (r"/local_step$", "zero-debias step"),
    # step counters
    (r"(^|/)global_step$", "step counter"),
    (r"(^|/)(iter|iterations)/\.ATTRIBUTES/VARIABLE_VALUE$", "optimizer step counter"),
]

_COMPILED = [(re.compile(p), reason) for p, reason in RULES]


def classify(name: str, *, slot_of: Optional[str] = None, owner: Optional[str] = None,
             recorded: Optional[str] = None) -> Tuple[str, str]:
    """``(role, reason)`` for a variable key. ``slot_of``: the variable an optimizer slot belongs
    to (from the object graph); ``owner``: ``"optimizer"`` or ``"metric"`` when the object graph
    says so; ``recorded``: what the file's own metadata says, ``"trainable"`` or ``"model"``
    (a ``.meta``'s or SavedModel's ``trainable_variables`` / ``model_variables`` collection, a
    SavedModel's ``SavedVariable.trainable``), which comes before any name rule."""
    if recorded in ("trainable", "model"):
        by_name = classify(name, slot_of=slot_of, owner=owner)
        if by_name[0] == INFERENCE:
            return by_name
        return INFERENCE, f"{recorded} variable recorded in the graph (named like: {by_name[1]})"
    if slot_of is not None:
        return TRAINING, "optimizer slot"
    if owner == "optimizer":
        return TRAINING, "optimizer variable"
    if owner == "metric":
        return TRAINING, "Keras metric"
    for rx, reason in _COMPILED:
        match = rx.search(name)
        if match:
            return TRAINING, reason.format(None, *match.groups())
    return INFERENCE, "model variable"

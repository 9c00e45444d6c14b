"""Test support for tf2pt and its users.

* :func:`assert_parity` -- ``tf2pt verify`` as a pytest assertion (needs TensorFlow unless given a
  ``reference=`` file).
* :func:`check_target_spec` -- a mapping target's declared torch-free ``spec`` equals its model.
* :mod:`tf2pt.testing.tf_fixtures` -- checkpoints of every kind, written by real TensorFlow.
* :mod:`tf2pt.testing.niftynet` -- NiftyNet-layout HighRes3DNet checkpoints, written by real TF.
* :mod:`tf2pt.testing.niftynet_zoo` -- NiftyNet 0.6.0's own networks run under TF 2 (shims) and
  checkpoints written from them (needs ``pip install --no-deps niftynet==0.6.0``; never imported
  by tf2pt itself).
"""

from .parity import assert_parity


def check_target_spec(mapping, target=None, checkpoint=None, **model_kwargs) -> None:
    """Assert that ``target``'s declared ``spec`` (see :class:`tf2pt.mapping.Target`) equals the
    state dict of the model it builds, for the model keyword arguments the mapping reads off
    ``checkpoint`` (a path or an open checkpoint) updated with ``model_kwargs``. Needs torch.

    >>> def test_my_spec():
    ...     check_target_spec("path/to/my_mapping.py", checkpoint="ckpt/model.ckpt-100")
    """
    from ..plan import model_kwargs_for, model_state, spec_state, state_differences
    from ..read import Checkpoint, open_checkpoint
    from ..registry import get_mapping

    m = get_mapping(mapping)
    t = m.target(target)
    assert t.spec is not None, f"target {t.name!r} of mapping {m.name!r} declares no spec"
    kwargs = dict(model_kwargs)
    if checkpoint is not None:
        if isinstance(checkpoint, Checkpoint):
            kwargs = model_kwargs_for(m, checkpoint, model_kwargs)
        else:
            with open_checkpoint(checkpoint) as ckpt:
                kwargs = model_kwargs_for(m, ckpt, model_kwargs)
    diffs = state_differences(spec_state(t, kwargs), model_state(t, kwargs))
    assert not diffs, f"target {t.name!r} of mapping {m.name!r}: spec and model differ:\n  " + "\n  ".join(diffs)


__all__ = ["assert_parity", "check_target_spec"]

"""Test support for tf2pt and its users.

* :func:`assert_parity` -- ``tf2pt verify`` as a pytest assertion (needs TensorFlow unless given a
  ``reference=`` file).
* :mod:`tf2pt.testing.tf_fixtures` -- checkpoints of every kind, written by real TensorFlow.
* :mod:`tf2pt.testing.niftynet` -- NiftyNet-layout HighRes3DNet checkpoints, written by real TF.
"""

from .parity import assert_parity

__all__ = ["assert_parity"]

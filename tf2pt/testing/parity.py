"""``assert_parity``: ``tf2pt verify`` as a pytest assertion."""

from __future__ import annotations


def assert_parity(checkpoint, mapping, target=None, **kwargs):
    """Run :func:`tf2pt.verify.verify` and raise ``AssertionError`` with its summary unless
    parity holds. Returns the report. Keyword arguments are verify's (``synthetic=(32, 32, 32)``,
    ``crop``, ``atol``, ``min_agreement``, ``reference``, ``device``, ...).

    >>> from tf2pt.testing import assert_parity
    >>> def test_my_conversion():
    ...     assert_parity("ckpt/model.ckpt-1000", "highresnet", synthetic=(32, 32, 32))
    """
    from tf2pt.verify import verify

    report = verify(checkpoint, mapping, target, **kwargs)
    if not report.passed:
        raise AssertionError("TF/PyTorch parity failed\n" + report.summary())
    return report

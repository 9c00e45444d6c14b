"""The conversion API: open, plan, check, then produce tensors (:func:`convert`) or hand the plan
to a streaming writer (:func:`prepare`, used by ``tf2pt convert``).

The mapping is resolved here, once (a name, a ``.py`` file or a :class:`~tf2pt.mapping.Mapping`
object); every later stage gets the object.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import ConversionError
from .plan import Entry, plan
from .registry import get_mapping


def prepare(path, mapping="highresnet", target: Optional[str] = None, strict: bool = True,
            check_model: bool = False, **model_kwargs):
    """Open ``path`` (or take an open :class:`~tf2pt.read.Checkpoint`) and plan the
    conversion. Returns ``(checkpoint, entries, report)``.

    With ``strict`` (the default) any problem raises :class:`~tf2pt.errors.ConversionError`
    listing all of them; otherwise problems stay in ``report.problems`` and the entries that
    could be planned are returned. ``check_model`` checks a target's declared spec against its
    model (for callers that load torch anyway). The caller closes the checkpoint.
    """
    from .read import Checkpoint, open_checkpoint

    m = get_mapping(mapping)
    t = m.target(target)
    t.check_available()
    checkpoint = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    try:
        entries, report = plan(checkpoint, m, t, model_kwargs, check_model=check_model)
        report.files = [{"path": str(p)} for p in checkpoint.files]
        if strict and report.problems:
            raise ConversionError(report.problems, path=checkpoint.path, report=report,
                                  hint="fix the mapping or the checkpoint; --no-strict converts what it can")
    except BaseException:
        checkpoint.close()
        raise
    return checkpoint, entries, report


def iter_tensors(checkpoint, entries: List[Entry]) -> Iterator[Tuple[str, Any]]:
    from .write.tensors import as_tensor

    for entry in entries:
        yield entry.key, as_tensor(entry, checkpoint)


def convert(path, mapping="highresnet", target: Optional[str] = None, strict: bool = True, **model_kwargs):
    """Convert the checkpoint at ``path`` (or an open :class:`~tf2pt.read.Checkpoint`, which
    is closed afterwards) with ``mapping``. Returns ``(state_dict, report)``.

    >>> state_dict, report = tf2pt.convert("examples/highres3dnet", mapping="highresnet")
    >>> model = tf2pt.build_model("highresnet"); model.load_state_dict(state_dict)
    """
    start = time.perf_counter()
    # the tensors are torch's, so a declared target spec is checked against the model too
    checkpoint, entries, report = prepare(path, mapping, target, strict, check_model=True, **model_kwargs)
    with checkpoint:
        state_dict: Dict[str, Any] = dict(iter_tensors(checkpoint, entries))
    report.seconds = time.perf_counter() - start
    return state_dict, report

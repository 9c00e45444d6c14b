"""The proposal as an ordinary mapping file (the format of the built-ins, docs/mappings.md).

Every string that came from the checkpoint or the model is written with :func:`repr` (or as a
raw string when it holds only plain characters), and comments are stripped of anything but
printable characters, so no name can inject code into the file.
"""

from __future__ import annotations

import os
import re
from typing import Any, List

from .._version import __version__
from .torchmodules import is_file_module, split_model_spec

_PLAIN = re.compile(r"[A-Za-z0-9_./\\:+\-\[\]()?*|^$ ]*")


def _s(text: str) -> str:
    """A Python string literal for ``text``: raw where that reads better and is safe."""
    if "\\" in text and _PLAIN.fullmatch(text) and not text.endswith("\\"):
        return f'r"{text}"'
    return repr(text)


def _c(text: Any) -> str:
    """Text safe to put in a ``#`` comment: printable, one line."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _value(v: Any) -> str:
    return repr(v)


def render(p) -> str:
    module, factory = split_model_spec(p.model)
    model_ref = p.model
    if is_file_module(module):  # the file, as the mapping file will find it (relative to itself)
        path = os.path.abspath(module)
        if p.mapping_dir:  # relative where the model sits at or below the mapping file
            rel = os.path.relpath(path, p.mapping_dir)
            path = path if rel.startswith(os.pardir) else rel
        model_ref = f"{path}:{factory}"
    args = ", ".join([_value(a) for a in p.model_args] + [f"{k}={_value(v)}" for k, v in p.model_kwargs.items()])
    keys = sum(len(x.rows) for x in p.pairs)
    fills = sum(len(x.fills) for x in p.pairs)
    out: List[str] = []
    w = out.append
    w(f'"""Mapping proposed by `tf2pt map` (tf2pt {__version__}): review it, then use or commit it.')
    w("")
    w("Every rename row was matched by layer kind, exact shape after the layout transform and order;")
    w("rows marked ambiguous are picks shape alone could not decide and order did; rows marked")
    w("'tie settled by running' were decided by comparing activations with TensorFlow's")
    w("(docs/auto-mapping.md). Check the result with `tf2pt verify CKPT --mapping THIS_FILE`.")
    w('"""')
    w("")
    w(f"# checkpoint:  {_c(p.checkpoint)} ({_c(p.checkpoint_kind)})")
    w(f"# model:       {_c(p.model)}({_c(args)})")
    w(f"# TF order:    {_c(p.tf_order)}")
    w(f"# torch order: {_c(p.torch_order)}")
    w(f"# matched:     {len(p.pairs)} TF layers -> {len(p.pairs)} modules ({keys} variables, {fills} keys filled)")
    if p.ambiguous:
        w(f"# ambiguous:   {len(p.ambiguous)} picks decided by order")
    if p.tie_check:
        w(f"# ties:        {_c(p.tie_check)}")
    for note in p.notes:
        w(f"# note:        {_c(note)}")
    w("")
    w("from __future__ import annotations")
    w("")
    imports = ["Fill", "Mapping", "Source", "Target", "rename_table"]
    ignores = []
    if "training" in p.roles:
        imports.append("TRAINING_ONLY")
        ignores.append("TRAINING_ONLY")
    if "constant" in p.roles:
        imports.append("GRAPH_CONSTANTS")
        ignores.append("GRAPH_CONSTANTS")
    io = p.graph_io
    has_verify = bool(io.get("input") and io.get("output"))
    layer_pairs = p.layer_pairs if has_verify else []
    layer_names = p.layer_names() if has_verify else []
    if has_verify or p.keras_model_file:
        imports.append("VerifySpec")
    if is_file_module(module):
        w("import os")
        w("")
    w(f"from tf2pt.mapping import {', '.join(sorted(imports))}")
    w("")
    w("# 1. the model, by MODULE:FACTORY, and the arguments it was matched with")
    w(f"MODEL = {_s(model_ref)}")
    w(f"MODEL_ARGS = {_value(list(p.model_args))}")
    w(f"MODEL_KWARGS = {_value(dict(p.model_kwargs))}")
    w("")
    w("")
    w("def build(**overrides):")
    if is_file_module(module):
        w("    from tf2pt.automap import load_factory")
        w("")
        w("    factory = load_factory(MODEL, base=os.path.dirname(os.path.abspath(__file__)))")
        w("    return factory(*MODEL_ARGS, **{**MODEL_KWARGS, **overrides})")
    else:
        head = factory.split(".")[0]
        if not (module.replace(".", "").replace("_", "").isalnum() and head.isidentifier()
                and all(part.isidentifier() for part in factory.split("."))):
            raise ValueError(f"not an importable MODULE:FACTORY: {p.model!r}")
        w(f"    from {module} import {head}")
        w("")
        w(f"    return {factory}(*MODEL_ARGS, **{{**MODEL_KWARGS, **overrides}})")
    w("")
    w("")
    w("# 2. source facts")
    w(f"SCOPE = {_s(p.scope)}")
    w("SOURCE = Source(")
    w(f"    origin={_s('proposed by tf2pt map from ' + os.path.basename(os.path.normpath(p.checkpoint)))},")
    w(f"    framework={_s(p.framework)},")
    w("    scope=SCOPE,")
    w(f"    variables={p.inference_variables},  # inference variables, every one mapped below")
    if p.in_channels:
        w(f"    meta={{'in_channels': {int(p.in_channels)}}},")
    w(")")
    w("")
    w("# 3. ignore rules")
    w(f"IGNORE = [{', '.join(ignores)}]")
    w("")
    w("# 4. rename rules: (TF name under SCOPE, torch key, layout transform), one TF layer per block")
    w("RULES = rename_table([")
    for pair in p.pairs:
        head = f"    # {_c(pair.tf.scope)} -> {_c(pair.module.path)}: {_c(_words(pair))}"
        w(head)
        mark = _mark(pair)
        for i, (tf_name, key, transform) in enumerate(pair.rows):
            name = p.rule_name(tf_name)
            suffix = name[len(p.scope):] if name.startswith(p.scope) else name
            row = f"    ({_s(re.escape(suffix))}, {_s(key)}, {_s(transform)}),"
            note = mark if i == 0 else ""
            if transform.startswith("dense_after_flatten:"):
                note = (note + "  " if note else "") + "# flatten order found by running the model"
            w(row + (f"  {note}" if note else ""))
    w("], scope=SCOPE)")
    w("")
    w("# 5. fills: model keys with no TF counterpart")
    fill_rules = _fill_rules(p)
    if not fill_rules:
        w("FILL = []")
    else:
        w("FILL = [")
        for pattern, value, reason in fill_rules:
            w(f"    Fill({_s(pattern)}, {_value(value)}, {_s(reason)}),")
        w("]")
    w("")
    if has_verify:
        w("# 6. verify facts read off the graph (check them: a heuristic picked the output)")
        w("VERIFY = VerifySpec(")
        w(f"    tf_input={_s(io['input'])},")
        w(f"    tf_output={_s(io['output'])},")
        if io.get("feeds"):
            w(f"    feeds={_value(dict(io['feeds']))},")
        w(f"    output_kind={_s(io.get('output_kind', 'logits'))},")
        if io.get("threshold") is not None:
            w(f"    threshold={_value(io['threshold'])},")
        w(f"    spatial_multiple={int(p.spatial_multiple)},")
        if io.get("size"):
            w(f"    size={_value(tuple(io['size']))},")
        if layer_pairs:
            w("    # every matched layer whose output the graph holds, for `tf2pt verify --per-layer`")
            w("    layers=[" + ", ".join(_s(n) for n in layer_names) + "],")
            w("    layer_tensors={")
            for n, q in zip(layer_names, layer_pairs):
                w(f"        {_s(n)}: {_s(q.tf.tensors['output'])},")
            w("    },")
        w(")")
    elif p.keras_model_file:
        w("# 6. verify facts: the file holds its Keras model, which `tf2pt verify` runs through Keras itself")
        w("#    (safe_mode; inputs from the model's own input specs, every output compared)")
        w("VERIFY = VerifySpec()")
    else:
        w("# 6. verify facts: none could be read off the checkpoint (no graph with one input and one")
        w("#    output); write a VerifySpec (docs/mappings.md) to use `tf2pt verify` with this file")
        w("VERIFY = None")
    w("")
    w("# 7. the mapping")
    w("MAPPING = Mapping(")
    w(f"    name={_s(_mapping_name(p))},")
    w(f"    description={_s('proposed by tf2pt map: ' + os.path.basename(os.path.normpath(p.checkpoint)) + ' -> ' + p.model)},")
    w("    source=SOURCE,")
    if layer_pairs:
        w(f"    targets=[Target(\"default\", {_s(p.model)}, build, RULES, FILL, layers={{")
        for n, q in zip(layer_names, layer_pairs):
            w(f"        {_s(n)}: {_s(q.module.path)},")
        w("    })],")
    else:
        w(f"    targets=[Target(\"default\", {_s(p.model)}, build, RULES, FILL)],")
    w("    ignore=IGNORE,")
    w("    verify=VERIFY,")
    w(")")
    return "\n".join(out) + "\n"


def _fill_rules(p) -> List[tuple]:
    """``(pattern, value, reason)``: one rule per local key name (``num_batches_tracked``) where
    every key of that name is filled alike, else one per key (an LSTM's zero ``bias_hh_l0``
    beside a GRU's mapped one)."""
    fills = [(key, value, reason) for pair in p.pairs for key, value, reason in pair.fills]
    mapped = {key.rpartition(".")[2] for pair in p.pairs for _, key, _ in pair.rows}
    by_local: dict = {}
    for key, value, reason in fills:
        by_local.setdefault(key.rpartition(".")[2], []).append((key, value, reason))
    out = []
    for local, rows in by_local.items():
        if local not in mapped and len({(repr(v), r) for _, v, r in rows}) == 1:
            out.append((r"(?:.*\.)?" + re.escape(local), rows[0][1], rows[0][2]))
        else:
            out.extend((re.escape(key), value, reason) for key, value, reason in rows)
    return out


def _words(pair) -> str:
    from .match import tf_words

    return tf_words(pair.tf)


def _mark(pair) -> str:
    if pair.ambiguous:
        return "# ambiguous: decided by order"
    if pair.tie and pair.decided_by == "running":
        others = ", ".join(f"{m} {e:.1e}" for m, e in pair.evidence.items() if m != pair.module.path)
        others = f"others: {others}" if others else "the last candidate left"
        return f"# tie settled by running: error {pair.evidence.get(pair.module.path, 0.0):.1e} ({_c(others)})"
    return ""


def _mapping_name(p) -> str:
    module, factory = split_model_spec(p.model)
    base = os.path.splitext(os.path.basename(module))[0] if module.endswith(".py") else module.split(".")[-1]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", f"{base}_{factory.split('.')[-1]}").strip("_").lower()
    return name or "proposed"

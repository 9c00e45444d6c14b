"""The TensorFlow side of settling ties: run the checkpoint's own graph on one input and fetch
the layers' output tensors. Imports TensorFlow, never torch; runs as a child process
(``python -m tf2pt.automap.tfrun REQUEST.json``) so TF and torch never share one.

Request (JSON): ``kind`` ("meta" or "frozen"), ``graph`` (the file), ``prefix`` (the bundle a
``.meta`` restores), ``input`` (tensor name), ``feeds`` ({tensor: value}), ``fetch`` (tensor
names), ``x`` (an ``.npy``, channels-last with a batch axis), ``out`` (an ``.npz``: ``t<i>`` for
each fetched tensor that exists; ``missing`` lists the others).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ..errors import Tf2ptError
from ..verify.tfside import _feed_value, _session_config, import_tf


def run(request) -> None:
    tf = import_tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        sess = v1.Session(graph=graph, config=_session_config(tf))
        try:
            if request["kind"] == "meta":
                saver = v1.train.import_meta_graph(request["graph"], clear_devices=True)
                saver.restore(sess, request["prefix"])
            else:
                graph_def = v1.GraphDef()
                with open(request["graph"], "rb") as fh:
                    graph_def.ParseFromString(fh.read())
                tf.graph_util.import_graph_def(graph_def, name="")
            inp = graph.get_tensor_by_name(request["input"])
            x = np.load(request["x"], allow_pickle=False)
            feeds = {inp: x.astype(inp.dtype.as_numpy_dtype)}
            for name, value in request.get("feeds", {}).items():
                tensor, val = _feed_value(graph, name, value)
                feeds[tensor] = val
            fetch, index, missing = [], [], []
            for i, name in enumerate(request["fetch"]):
                try:
                    fetch.append(graph.get_tensor_by_name(name))
                    index.append(i)
                except (KeyError, ValueError):
                    missing.append(name)
            values = sess.run(fetch, feeds) if fetch else []
        finally:
            sess.close()
    arrays = {f"t{i}": np.asarray(v) for i, v in zip(index, values)}
    np.savez(request["out"], missing=np.array(missing, dtype=str), **arrays)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with open(argv[0]) as fh:
            request = json.load(fh)
        run(request)
    except Tf2ptError as exc:
        print(f"tf2pt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""What verify lets a checkpoint's own graph run: pure computation, and nothing else.

A ``.meta``, frozen ``.pb`` or SavedModel is a program. ``tf2pt verify`` runs it, so before any
``Session.run`` the ops that run is to execute are checked here:

* the **execution closure**: every node the fetched output depends on (data and control inputs),
  stopping at the fed tensors, plus every function those nodes call (``PartitionedCall``,
  ``While``/``If`` bodies, ...), recursively. TensorFlow runs exactly that pruned graph, so
  checking it checks what runs. Each op must be in :data:`PURE_OPS`; anything else -- file I/O
  (``ReadFile``, ``WriteFile``, ``MatchingFiles``), ``Save*``/``Restore*``, summary writers,
  ``PyFunc``/``EagerPyFunc``, file-reading datasets, an op tf2pt does not know -- is refused by
  name (:class:`~tf2pt.errors.UnsafeGraphError`, exit 2);
* the graph's **SaverDef restore op**, which tf2pt never runs (weights are restored by
  TensorFlow's checkpoint reader and tf2pt's own assignments): if it reaches anything but the
  ops a Saver is made of, the graph was tampered with and is refused;
* I/O ops elsewhere in the graph (a training input pipeline, which real frozen graphs keep) do
  not run and are reported in a note.

``--trust-graph`` skips the checks (for graphs with custom or I/O ops the user vouches for).
This module needs no TensorFlow: it reads ``GraphDef``-like objects (``.node`` with ``.name``,
``.op``, ``.input``, ``.attr``; ``.library.function`` with ``.signature.name``, ``.node_def``).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Set, Tuple

from ..errors import UnsafeGraphError

#: ops that compute and touch nothing outside the session: math, arrays, neural-network
#: kernels, control flow, variables (read, and the assignments tf2pt makes), randomness
PURE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert Assign AssignAdd
AssignSub AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D BatchMatMul BatchMatMulV2 BatchMatMulV3
BatchNormWithGlobalNormalization BatchToSpace BatchToSpaceND BiasAdd BiasAddV1 Bitcast BroadcastArgs
BroadcastGradientArgs BroadcastTo Bucketize Cast Ceil CheckNumerics ClipByValue Complex ComplexAbs Concat
ConcatOffset ConcatV2 Conj Const ControlTrigger Conv2D Conv2DBackpropInput Conv3D Conv3DBackpropInput
Conv3DBackpropInputV2 Cos Cosh Cross Cumprod Cumsum DepthToSpace DepthwiseConv2dNative
DepthwiseConv2dNativeBackpropInput Diag DiagPart Dilation2D Div DivNoNan DynamicPartition DynamicStitch
Einsum Elu Empty EnsureShape Enter Equal Erf Erfc Exit Exp ExpandDims Expm1 ExtractImagePatches Fill
Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 FusedPadConv2D
FusedResizeAndPadConv2D Gather GatherNd GatherV2 Gelu Greater GreaterEqual Identity IdentityN If Imag
InTopK InTopKV2 Inv InvertPermutation IsFinite IsInf IsNan IsVariableInitialized L2Loss LRN LeakyRelu
LeftShift Less LessEqual LinSpace Log Log1p LogSoftmax LogicalAnd LogicalNot LogicalOr LoopCond
MatMul MatrixBandPart MatrixDiag MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixDiagV2
MatrixDiagV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3 Max MaxPool MaxPool3D MaxPoolV2
MaxPoolWithArgmax Maximum Mean Merge Min Minimum MirrorPad Mod Mul MulNoNan Multinomial Neg NextIteration
NoOp NotEqual OneHot OnesLike Pack Pad PadV2 PartitionedCall Placeholder PlaceholderV2
PlaceholderWithDefault Pow PreventGradient Prod QueryPrefetchedRecords RandomGamma RandomShuffle
RandomStandardNormal RandomUniform RandomUniformInt Range Rank ReadVariableOp Real RealDiv Reciprocal ResourceGather
ResourceGatherNd
RefEnter RefExit RefIdentity RefMerge RefNextIteration RefSwitch Relu Relu6 Reshape ResizeArea
ResizeBicubic ResizeBilinear ResizeNearestNeighbor Reverse ReverseSequence ReverseV2 RightShift Rint
Round Rsqrt ScatterNd Select SelectV2 Selu Shape ShapeN Sigmoid Sign Sin Sinh Size Slice Snapshot Softmax
Softplus Softsign SpaceToBatch SpaceToBatchND SpaceToDepth Split SplitV Sqrt Square SquaredDifference
Squeeze StatefulPartitionedCall StatelessIf StatelessRandomNormal StatelessRandomNormalV2
StatelessRandomUniform StatelessRandomUniformV2 StatelessTruncatedNormal StatelessWhile StopGradient
StridedSlice Sub Sum Switch Tan Tanh TensorArrayConcatV3 TensorArrayGatherV3 TensorArrayReadV3
TensorArrayScatterV3 TensorArraySizeV3 TensorArraySplitV3 TensorArrayV3 TensorArrayWriteV3
TensorListElementShape TensorListFromTensor TensorListGetItem TensorListLength TensorListPopBack
TensorListPushBack TensorListReserve TensorListSetItem TensorListStack Tile TopKV2 Transpose
TruncateDiv TruncateMod TruncatedNormal Unique Unpack UnsortedSegmentMax UnsortedSegmentMin
UnsortedSegmentSum VarHandleOp VarIsInitializedOp Variable VariableShape VariableV2 Where While Xdivy
Xlog1py Xlogy ZerosLike _Arg _Retval
""".split())

#: what a Saver is made of: present in every TF1 graph, never run by tf2pt
SAVER_OPS = frozenset("""
Assign AssignVariableOp Const Identity MergeV2Checkpoints NoOp Pack RestoreSlice RestoreV2 Save SaveSlices
SaveV2 ShardedFilename ShardedFilespec StringJoin VarHandleOp VariableV2 Variable Placeholder
PlaceholderWithDefault ReadVariableOp
""".split())

#: ops that reach outside the session: refused where they would run, reported elsewhere
IO_OPS = frozenset("""
ReadFile WriteFile MatchingFiles DeleteFile PyFunc PyFuncStateless EagerPyFunc Print PrintV2
Save SaveV2 SaveSlices Restore RestoreV2 RestoreSlice MergeV2Checkpoints WriteSummary WriteScalarSummary
WriteHistogramSummary WriteImageSummary WriteAudioSummary WriteGraphSummary WriteRawProtoSummary
CreateSummaryFileWriter CreateSummaryDbWriter FlushSummaryWriter CloseSummaryWriter ImportEvent
SummaryWriter TFRecordDataset TFRecordDatasetV2 FixedLengthRecordDataset FixedLengthRecordDatasetV2
TextLineDataset SqlDataset LMDBDataset SaveDataset SaveDatasetV2 LoadDataset DatasetToTFRecord
TFRecordReader TFRecordReaderV2 TextLineReader TextLineReaderV2 WholeFileReader WholeFileReaderV2
FixedLengthRecordReader FixedLengthRecordReaderV2 IdentityReader IdentityReaderV2 LMDBReader
ReaderReadV2 ReaderReadUpToV2 ExperimentalLMDBDataset ExperimentalSqlDataset
""".split())


def _node_of(tensor: str) -> str:
    """``"^a"``, ``"a:1"``, ``"a"`` -> ``"a"``."""
    return tensor.lstrip("^").split(":")[0]


def _functions_called(node) -> List[str]:
    """Names of the functions a node's attributes refer to (``f``, ``then_branch``, ``body``...)."""
    names = []
    for value in node.attr.values():
        func = getattr(value, "func", None)
        if func is not None and func.name:
            names.append(func.name)
        listed = getattr(value, "list", None)
        for f in getattr(listed, "func", ()) if listed is not None else ():
            if f.name:
                names.append(f.name)
    return names


def closure(graph_def, fetches: Iterable[str], feeds: Iterable[str]) -> Set[str]:
    """The names of the nodes running ``fetches`` (tensor or op names) executes, ``feeds``
    (tensor names) given: an iterative walk, linear in the graph's size."""
    nodes = {n.name: n for n in graph_def.node}
    fed = {f if ":" in f else f + ":0" for f in feeds}
    seen: Set[str] = set()
    todo = [_node_of(f) for f in fetches]
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        for inp in nodes[name].input:
            if inp.startswith("^"):
                todo.append(inp[1:])
                continue
            tensor = inp if ":" in inp else inp + ":0"
            if tensor not in fed:
                todo.append(_node_of(inp))
    return seen


def _reachable(library, start: Iterable[str]) -> List[str]:
    """The library's functions that ``start`` (function names) call, transitively: each once,
    depth first, in the order found. A name the library lacks is skipped (TF fails on it)."""
    order: List[str] = []
    seen: Set[str] = set()
    todo = list(start)
    while todo:
        fname = todo.pop()
        if fname in seen or fname not in library:
            continue
        seen.add(fname)
        order.append(fname)
        for node in library[fname].node_def:
            todo += _functions_called(node)
    return order


def _ops_run(graph_def, names: Set[str]) -> List[Tuple[str, str]]:
    """``(op, where)`` for every node in ``names`` and every node of every function they call,
    transitively (each function once)."""
    nodes = {n.name: n for n in graph_def.node}
    library = {f.signature.name: f for f in getattr(getattr(graph_def, "library", None), "function", ())}
    out = [(nodes[name].op, f"node {name!r}") for name in sorted(names)]
    for fname in _reachable(library, [f for name in sorted(names) for f in _functions_called(nodes[name])]):
        out += [(node.op, f"node {node.name!r} of function {fname!r}") for node in library[fname].node_def]
    return out


def check_run(graph_def, fetches: Iterable[str], feeds: Iterable[str], path: str) -> None:
    """Refuse (``UnsafeGraphError``) any op outside :data:`PURE_OPS` among those running
    ``fetches`` would execute; every offender is named."""
    bad = [(op, where) for op, where in _ops_run(graph_def, closure(graph_def, fetches, feeds)) if op not in PURE_OPS]
    if bad:
        ops = sorted({op for op, _ in bad})
        first = next(where for op, where in bad if op == ops[0])
        raise UnsafeGraphError(
            f"the graph would run {', '.join(ops)} ({first}{', ...' if len(bad) > 1 else ''}): not pure computation, "
            "so verify does not run it", path=path,
            hint="verify runs only pure computation ops from a checkpoint's graph; --trust-graph runs it anyway")


def check_saver(graph_def, restore_op: str, path: str) -> None:
    """A SaverDef's restore op must reach only Saver ops: tf2pt never runs it, but anything else
    behind it means the graph was built to run code on restore."""
    if not restore_op:
        return
    bad = sorted({op for op, _ in _ops_run(graph_def, closure(graph_def, [restore_op], ())) if op not in SAVER_OPS})
    if bad:
        raise UnsafeGraphError(f"the graph's SaverDef restore op {restore_op!r} runs {', '.join(bad)}, which no Saver "
                               "does", path=path, hint="this graph was built to run code when restored; do not use it")


def io_elsewhere(graph_def, ran: Set[str]) -> List[str]:
    """Notes on I/O ops in the graph that do not run (a training input pipeline, say); a Saver's
    own ops, in every TF1 graph, go unmentioned."""
    noted = IO_OPS - SAVER_OPS
    nodes = [(n.op, n.name) for n in graph_def.node if n.name not in ran and n.op in noted]
    for func in getattr(getattr(graph_def, "library", None), "function", ()):
        nodes += [(n.op, f"{func.signature.name}/{n.name}") for n in func.node_def if n.op in noted]
    by_op: Dict[str, int] = {}
    for op, _ in nodes:
        by_op[op] = by_op.get(op, 0) + 1
    if not by_op:
        return []
    listed = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(by_op.items()))
    return [f"the graph also holds I/O ops that verify does not run ({listed})"]


#: what TF's own SavedModel save and restore functions (``__inference__traced_save`` /
#: ``_traced_restore``, behind the SaverDef of a TF2 SavedModel) are made of
TF2_SAVER_OPS = SAVER_OPS | frozenset("""
DisableCopyOnRead StaticRegexFullMatch Select SelectV2 StatefulPartitionedCall PartitionedCall _Arg _Retval
""".split())


def check_savedmodel(meta_graph, path: str) -> List[str]:
    """Check a TF2 SavedModel's meta graph before ``tf.saved_model.load`` sees it: every op of the
    graph and of every function of its library must be pure computation (:data:`PURE_OPS`),
    except the functions behind the SaverDef's save and restore nodes (TF's own
    ``_traced_save`` / ``_traced_restore``), which may hold only :data:`TF2_SAVER_OPS`.

    What ``tf.saved_model.load`` runs, in eager mode: it rebuilds the objects of the object graph,
    restores variables through TF's checkpoint reader (Python's ``RestoreV2``, not the library's
    ``_traced_restore``), and may call functions of the library (a resource's ``_initialize``,
    a saveable's restore function); the signature then runs its function. None of the graph's
    own nodes run. So every function is checked as if it ran; the SaverDef's two are checked
    to be only a Saver's ops (a ``WriteFile`` there, or anywhere, is refused). Returns the
    names of the functions checked as TF's save/restore functions."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    saver_nodes: Set[str] = set()
    if meta_graph.HasField("saver_def"):
        sd = meta_graph.saver_def
        for tensor in (sd.save_tensor_name, sd.restore_op_name):
            if tensor:
                saver_nodes.add(_node_of(tensor))

    def reach(start: Iterable[str]) -> Set[str]:
        return set(_reachable(library, start))

    saver_funcs = reach(f for n in saver_nodes if n in nodes for f in _functions_called(nodes[n]))
    other_nodes = [n for name, n in nodes.items() if name not in saver_nodes]
    pure_funcs = reach([f for n in other_nodes for f in _functions_called(n)]
                       + [f for f in library if f not in saver_funcs])
    bad: List[Tuple[str, str]] = [(n.op, f"node {n.name!r}") for n in other_nodes if n.op not in PURE_OPS]
    for fname in sorted(pure_funcs):
        bad += [(n.op, f"node {n.name!r} of function {fname!r}") for n in library[fname].node_def
                if n.op not in PURE_OPS]
    for fname in sorted(saver_funcs - pure_funcs):
        bad += [(n.op, f"node {n.name!r} of save/restore function {fname!r}") for n in library[fname].node_def
                if n.op not in TF2_SAVER_OPS]
    for name in sorted(saver_nodes):
        if name in nodes and nodes[name].op not in TF2_SAVER_OPS:
            bad.append((nodes[name].op, f"SaverDef node {name!r}"))
    if bad:
        ops = sorted({op for op, _ in bad})
        first = next(where for op, where in bad if op == ops[0])
        raise UnsafeGraphError(
            f"the SavedModel holds {', '.join(ops)} ({first}{', ...' if len(bad) > 1 else ''}), which "
            "tf.saved_model.load or its signature could run: not pure computation, so verify does not load it",
            path=path, hint="verify loads only SavedModels of pure computation; --trust-graph loads it anyway")
    return sorted(saver_funcs - pure_funcs)

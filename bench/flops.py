"""FLOPs of a traced TensorFlow graph, counted op by op from static shapes.

Why not just TF's profiler (`tf.compat.v1.profiler` with the `float_operation`
option)? On these models it misses most of the work: it does not look inside
`While` loop bodies (every Keras GRU/LSTM step runs in one) and it counts the
elementwise ops too, so its total is neither the matmul work nor all of it.
`profiler_flops` runs it anyway, as a cross-check: on graphs without loops both
agree on the op types they share (tests/test_bench.py checks it).

What is counted (a multiply-add is 2 FLOPs, as in the profiler):
    MatMul, BatchMatMul(V2/V3)   2 * M * N * K (* broadcast batch)
    Conv2D and both backprops    2 * output elements * kh * kw * C_in
    Einsum                       2 * product of every index size when an index is
                                 contracted, else one multiply per output element
    While                        its body's count times its trip count (the length
                                 of the TensorList it unstacks: the sequence steps)
    function calls, If/Case      the called function (the larger branch)
Elementwise ops (adds, activations, softmax, normalisation) are left out: on these
models they are a few percent of the matmul work, and they are memory-bound, so
counting them would flatter the achieved rate.
"""

from __future__ import annotations

import collections
import math
import typing

MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
LOOP_OPS = ("While", "StatelessWhile")
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
BRANCH_OPS = ("If", "StatelessIf", "Case", "StatelessCase")
COUNTED_OPS = MATMUL_OPS + CONV_OPS + ("Einsum",)


class FlopCountError(ValueError):
    """An op whose FLOPs cannot be counted (an unknown dimension, an unknown loop length)."""


def count_flops(graph, group: typing.Callable | None = None) -> dict:
    """FLOPs per op type of a `tf.Graph` (e.g. `concrete_function.graph`), loops unrolled.

    Args:
        graph: a traced graph whose counted ops have fully known static shapes
            (trace with concrete tensors or fully defined `tf.TensorSpec`s).
        group: optional `op -> label` applied to the graph's top-level ops (a loop's
            body takes its loop's label), to split the count, e.g. forward/backward.

    Returns:
        {op type: FLOPs} for the types in `COUNTED_OPS` that occur; with `group`,
        {label: {op type: FLOPs}}.

    Raises:
        FlopCountError: a counted op has an unknown dimension, or a loop's trip
            count cannot be read from the graph.

    Example:
        >>> fn = tf.function(model).get_concrete_function(tf.TensorSpec([16, 94, 128]))
        >>> sum(count_flops(fn.graph).values())
    """
    groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op in _live_ops(graph):
        _count_op(op, graph, graph, 1, groups[group(op) if group else ""])
    if group is None:
        return dict(groups[""])
    return {label: dict(counts) for label, counts in groups.items() if counts}


def total_flops(graph) -> int:
    """`sum(count_flops(graph).values())`."""
    return int(sum(count_flops(graph).values()))


def profiler_flops(graph) -> dict[str, int]:
    """TF's own profiler count (`float_operation`) per op type, for cross-checking.

    It skips loop bodies and includes elementwise ops; see the module docstring.
    """
    import tensorflow as tf

    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    profile = tf.compat.v1.profiler.profile(graph, cmd="graph", options=options)
    types = {op.name: op.type for op in graph.get_operations()}
    totals: collections.Counter = collections.Counter()
    pending = list(profile.children)
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.float_ops and node.name in types:
            totals[types[node.name]] += int(node.float_ops)
    return dict(totals)


# === Walking the graph ===

def _count_graph(graph, root, repeat: int, totals: collections.Counter) -> None:
    for op in _live_ops(graph):
        _count_op(op, graph, root, repeat, totals)


def _count_op(op, graph, root, repeat: int, totals: collections.Counter) -> None:
    if op.type in COUNTED_OPS:
        totals[op.type] += repeat * _op_flops(op)
    elif op.type in LOOP_OPS:
        body = _function_graph(root, graph, op.get_attr("body").name)
        _count_graph(body, root, repeat * _trip_count(op), totals)
    elif op.type in CALL_OPS:
        _count_graph(_function_graph(root, graph, op.get_attr("f").name), root, repeat, totals)
    elif op.type in BRANCH_OPS:
        names = ([op.get_attr("then_branch").name, op.get_attr("else_branch").name]
                 if op.type.endswith("If") else [b.name for b in op.get_attr("branches")])
        branches = []
        for name in names:
            branch: collections.Counter = collections.Counter()
            _count_graph(_function_graph(root, graph, name), root, repeat, branch)
            branches.append(branch)
        totals.update(max(branches, key=lambda c: sum(c.values())))


def _live_ops(graph) -> list:
    """The ops the graph's outputs (and stateful control outputs) depend on.

    A gradient function emits every gradient of an op (e.g. a convolution's gradient
    with respect to its input) even where nothing uses it; TF prunes those before
    running the function, so they are not counted either.
    """
    outputs = list(getattr(graph, "outputs", None) or [])
    controls = list(getattr(graph, "control_outputs", None) or [])
    if not outputs and not controls:
        return graph.get_operations()
    live, pending = set(), [t.op for t in outputs] + controls
    while pending:
        op = pending.pop()
        if op in live:
            continue
        live.add(op)
        pending.extend(t.op for t in op.inputs)
        pending.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op in live]


def _function_graph(root, graph, name: str):
    """The FuncGraph of a function the graph calls, from its own library or an enclosing one's."""
    owner = graph
    while owner is not None:
        found = owner._get_function(name)  # no public API maps a name to its FuncGraph
        if found is not None:
            return found.graph
        owner = getattr(owner, "outer_graph", None)
    found = root._get_function(name)
    if found is None:
        raise FlopCountError(f"function {name!r} called in the graph is not in its function library")
    return found.graph


def _trip_count(loop) -> int:
    """Iterations of a Keras RNN loop: the length of the sequence it unstacks.

    A while_v2 loop's second input is its maximum_iterations tensor. A Keras RNN loop
    unstacks its input sequence ([steps, batch, ...], TensorListFromTensor); its
    gradient loop shares the maximum_iterations tensor but may unstack only the
    last output's gradient, so the longest sequence over every loop sharing that
    tensor is the trip count.
    """
    import tensorflow as tf

    limit = loop.inputs[1] if len(loop.inputs) > 1 else None
    known = tf.get_static_value(limit) if limit is not None else None
    if known is not None and int(known) >= 0:
        return int(known)
    related = [op for op in loop.graph.get_operations()
               if op.type in LOOP_OPS and len(op.inputs) > 1 and op.inputs[1].name == limit.name] or [loop]
    steps = [t.op.inputs[0].shape[0] for op in related for t in op.inputs
             if t.op.type == "TensorListFromTensor" and t.op.inputs[0].shape.rank]
    steps = [int(s) for s in steps if s is not None]
    if not steps:
        raise FlopCountError(f"cannot tell how many times loop {loop.name!r} runs: it unstacks no "
                             "sequence of known length (trace with fully defined shapes)")
    return max(steps)


# === FLOPs of one op ===

def _op_flops(op) -> int:
    shapes = [_static(t.shape, op) for t in op.inputs]
    if op.type == "MatMul":
        a, b = shapes
        m, k = (a[1], a[0]) if op.get_attr("transpose_a") else a
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return 2 * m * k * n
    if op.type in MATMUL_OPS:
        a, b = shapes
        adj_x, adj_y = op.get_attr("adj_x"), op.get_attr("adj_y")
        m, k = (a[-1], a[-2]) if adj_x else (a[-2], a[-1])
        n = b[-2] if adj_y else b[-1]
        batch = math.prod(_broadcast(a[:-2], b[:-2]))
        return 2 * batch * m * k * n
    if op.type == "Conv2D":
        out, filt = _static(op.outputs[0].shape, op), shapes[1]
        return 2 * math.prod(out) * filt[0] * filt[1] * filt[2]
    if op.type == "Conv2DBackpropInput":  # inputs: input_sizes, filter, out_backprop
        filt, grad = shapes[1], shapes[2]
        return 2 * math.prod(grad) * filt[0] * filt[1] * filt[2]
    if op.type == "Conv2DBackpropFilter":  # inputs: input, filter_sizes, out_backprop
        filt, grad = _static(op.outputs[0].shape, op), shapes[2]
        return 2 * math.prod(grad) * filt[0] * filt[1] * filt[2]
    if op.type == "Einsum":
        return _einsum_flops(op.get_attr("equation").decode(), shapes, op)
    raise FlopCountError(f"no FLOP rule for op type {op.type}")


def _einsum_flops(equation: str, shapes: list[list[int]], op) -> int:
    inputs, _, output = equation.replace(" ", "").partition("->")
    sizes: dict[str, int] = {}
    for spec, shape in zip(inputs.split(","), shapes):
        if "." in spec:
            raise FlopCountError(f"einsum {op.name!r} uses an ellipsis ({equation}); not supported")
        sizes.update(zip(spec, shape))
    every = math.prod(sizes.values())
    contracted = set(sizes) - set(output)
    return 2 * every if contracted and len(shapes) > 1 else every


def _static(shape, op) -> list[int]:
    dims = shape.as_list() if shape.rank is not None else None
    if dims is None or any(d is None for d in dims):
        raise FlopCountError(f"op {op.name!r} ({op.type}) has a shape with unknown dimensions "
                             f"({shape}); trace with fully defined shapes")
    return dims


def _broadcast(a: typing.Sequence[int], b: typing.Sequence[int]) -> list[int]:
    width = max(len(a), len(b))
    a, b = [1] * (width - len(a)) + list(a), [1] * (width - len(b)) + list(b)
    return [max(x, y) for x, y in zip(a, b)]

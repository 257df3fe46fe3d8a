"""Graph rewrite: replace the mask inputs of a converted graph by masks generated in the graph.

Input: the graph from :func:`export.from_keras.convert.convert_masked`, with inputs ``images`` and one
``mcd_mul_<k>`` (and ``mcd_add_<k>``) per dropout site. Output: a graph with inputs ``images``,
``seed``, ``pass_start`` and ``pass_count`` whose model output holds ``N * T`` rows, row
``n * T + t`` being image ``n`` under the masks of pass ``pass_start + t``.

Trunk caching: only the part of the network that depends on a mask is evaluated ``T`` times. Each
tensor that feeds that part from the deterministic trunk (the *frontier*: usually the input of the
first dropout layer) is tiled from ``[N, ...]`` to ``[N*T, ...]``. With ``trunk="input"`` the images
themselves are tiled: the naive T-pass graph, kept as a reference and a fallback.

Masks read inside subgraphs (``If``/``Loop`` bodies) make their control-flow node stochastic; reads
of tiled tensors inside subgraphs are renamed with the node's inputs (:mod:`export.rewrites.graph`).

Where a mask multiplies a tensor directly (the usual ``Mul(x, mask)`` of a dropout layer), the mask
``[T, ...]`` is broadcast against ``x`` viewed as ``[N, T, ...]`` (or ``[N, 1, ...]`` for a frontier
tensor), so neither a tiled copy of ``x`` nor a mask expanded over the batch is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.rewrites.builder import GraphBuilder, topological_sort
from export.rewrites.graph import Rewrite, consumed, copy_model, dependents, rename_consumed
from export.rewrites.hashing import HashOps
from export.rewrites.masks import build_mask_values
from export.rewrites.names import PASSES_1D
from scorer.contract import (
    INPUT_IMAGES,
    INPUT_PASS_COUNT,
    INPUT_PASS_START,
    INPUT_SEED,
    MASK_ADD,
    MASK_MUL,
    DropoutSite,
    mask_inputs,
)

TRUNK_MODES = ("cached", "input")


def mask_input_names(sites: list[DropoutSite]) -> list[str]:
    """Every mask input of the converted graph of ``sites``, in site order."""
    return [name for k, site in enumerate(sites) for name in mask_inputs(k, site.additive)]


def find_frontier(graph: onnx.GraphProto, masks: set[str], trunk: str) -> list[str]:
    """Tensors to tile: image-dependent tensors of the trunk read by mask-dependent nodes."""
    if trunk == "input":
        return [INPUT_IMAGES]
    image_dependent, _ = dependents(graph, {INPUT_IMAGES})
    stochastic, node_ids = dependents(graph, masks)
    frontier: list[str] = []
    for i in node_ids:
        for name in consumed(graph.node[i]):
            if name in image_dependent and name not in stochastic and name not in frontier:
                frontier.append(name)
    return frontier


@dataclass(frozen=True)
class PassTensors:
    """Tensors every site's mask is built from."""

    batch_1d: str  # int64 [1]: N
    passes_1d: str  # int64 [1]: T
    pass_index: str  # uint32 [T]: pass_start .. pass_start + T - 1
    seed_key: str  # the seed's key for the mask generator


def make_stochastic(
    masked: onnx.ModelProto, sites: list[DropoutSite], trunk: str = "cached",
    ranks: dict[str, int] | None = None,
) -> Rewrite:
    """Rewrite ``masked`` (not modified) as described in the module docstring.

    ``ranks`` gives the rank of each frontier tensor; tensors missing from it are looked up by
    ONNX shape inference. The result's only output is the ``[N*T, C]`` tensor (under the converted
    graph's output name) and the tensor :data:`~export.rewrites.names.PASSES_1D` holds ``[T]``.
    """
    if trunk not in TRUNK_MODES:
        raise ValueError(f"trunk must be one of {TRUNK_MODES}, got {trunk!r}")
    model = copy_model(masked)
    graph = model.graph
    names = mask_input_names(sites)
    frontier = find_frontier(graph, set(names), trunk)
    ranks = dict(ranks or {})
    ranks.update({k: v for k, v in _inferred_ranks(masked).items() if k not in ranks})
    _replace_interface(graph, names)

    original_nodes = list(graph.node)
    b = GraphBuilder(graph, "mcd")
    hashes = HashOps(b)
    tensors = _pass_tensors(b, hashes)
    sources = set(names) | ({INPUT_IMAGES} if trunk == "input" else set())
    stochastic_tensors, node_ids = dependents(graph, sources)
    stochastic_nodes = set(node_ids)
    fused = _broadcast_muls(graph, sites, set(frontier), stochastic_tensors)
    fused_nodes = {i for i, _, _ in fused.values()}
    rerun = [node for i, node in enumerate(original_nodes)
             if i in stochastic_nodes and i not in fused_nodes]
    needs_tile = [name for name in frontier if any(name in consumed(node) for node in rerun)]
    rewired = _tile_frontier(graph, b, needs_tile, ranks, tensors.passes_1d)
    _add_masks(b, hashes, graph, sites, fused, tensors)
    for node in rerun:
        rename_consumed(node, rewired)
    for i in sorted(fused_nodes, reverse=True):
        del graph.node[i]
    b.flush()
    topological_sort(graph)
    changes = [f"mask input {name} generated in the graph" for name in names]
    changes += [f"tiled {name} over the passes" for name in needs_tile]
    changes += [f"site {k}: mask broadcast over the passes in place" for k in sorted(fused)]
    return Rewrite(model, changes)


def _replace_interface(graph: onnx.GraphProto, mask_names: list[str]) -> None:
    """Mask inputs out, ``seed``/``pass_start``/``pass_count`` in; the output keeps its name."""
    present = {i.name for i in graph.input}
    missing = [n for n in mask_names if n not in present]
    if missing:
        raise ValueError(f"the converted graph lacks mask inputs {missing}")
    if len(graph.output) != 1:
        raise ValueError(f"expected one graph output, found {len(graph.output)}")
    output = graph.output[0].name
    kept = [i for i in graph.input if i.name not in mask_names]
    del graph.input[:]
    graph.input.extend(kept)
    for name in (INPUT_SEED, INPUT_PASS_START, INPUT_PASS_COUNT):
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, []))
    del graph.value_info[:]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))


def _pass_tensors(b: GraphBuilder, hashes: HashOps) -> PassTensors:
    batch_1d = b.op("Slice", b.op("Shape", INPUT_IMAGES), b.const([0], np.int64),
                    b.const([1], np.int64), hint="batch")
    passes_1d = b.op_to(PASSES_1D, "Reshape", INPUT_PASS_COUNT, b.const([1], np.int64))
    pass_end = b.op("Add", INPUT_PASS_START, INPUT_PASS_COUNT)
    pass_index = b.op("Cast", b.op("Range", INPUT_PASS_START, pass_end, b.const(1, np.int64)),
                      to=TensorProto.UINT32, hint="pass_index")
    return PassTensors(batch_1d, passes_1d, pass_index, hashes.seed_key(INPUT_SEED))


def _add_masks(b: GraphBuilder, hashes: HashOps, graph: onnx.GraphProto, sites: list[DropoutSite],
               fused: dict[int, tuple[int, str, bool]], tensors: PassTensors) -> None:
    """Each site's ``[T, ...]`` mask: multiplied in place (fused), or expanded to ``[N*T, ...]``
    under the mask input's name."""
    for k, site in enumerate(sites):
        key = hashes.site_key(tensors.seed_key, k)
        mul, add = build_mask_values(b, hashes, site, key, tensors.pass_index)
        if k in fused:
            i, data, untiled = fused[k]
            _add_broadcast_mul(b, graph.node[i], data, mul, untiled, tensors.passes_1d)
            continue
        expand_shape = b.op("Concat", tensors.batch_1d, tensors.passes_1d,
                            b.const(list(site.mask_shape), np.int64), axis=0)
        flat_shape = b.const([-1, *site.mask_shape], np.int64)
        for value, target in ((mul, MASK_MUL.format(k)), (add, MASK_ADD.format(k))):
            if value is not None:
                unsqueezed = b.op("Unsqueeze", value, b.const([0], np.int64))
                b.op_to(target, "Reshape", b.op("Expand", unsqueezed, expand_shape), flat_shape)


def _broadcast_muls(
    graph: onnx.GraphProto, sites: list[DropoutSite], frontier: set[str], stochastic: set[str]
) -> dict[int, tuple[int, str, bool]]:
    """Mask multiplications that can broadcast a ``[T, ...]`` mask instead of an expanded one.

    Returns ``{site k: (node index, data input, data is untiled)}`` for every
    ``Mul(data, mcd_mul_k)`` whose mask input feeds nothing else and whose site has no additive part
    (AlphaDropout), where ``data`` is a frontier tensor or a stochastic (tiled) one. Such a Mul
    becomes ``Mul(data viewed as [N, T|1, ...], mask[1, T, ...])``: no tiled copy of a frontier
    tensor and no mask expanded over the batch are materialised.
    """
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in consumed(node):
            consumers.setdefault(name, []).append(i)
    fused = {}
    for k, site in enumerate(sites):
        mask = MASK_MUL.format(k)
        users = consumers.get(mask, [])
        if site.additive or len(users) != 1:
            continue
        node = graph.node[users[0]]
        if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
            continue
        data = node.input[1] if node.input[0] == mask else node.input[0]
        if data in frontier or data in stochastic:
            fused[k] = (users[0], data, data in frontier)
    return fused


def _add_broadcast_mul(
    b: GraphBuilder, node: onnx.NodeProto, data: str, mask: str, untiled: bool, passes_1d: str
) -> None:
    """``node.output = data * mask`` with rows ``n*T + t``, mask ``[T, *mask_shape]`` broadcast."""
    rest = b.op("Slice", b.op("Shape", data), b.const([1], np.int64),
                b.const([2**62], np.int64))
    mask4 = b.op("Unsqueeze", mask, b.const([0], np.int64))
    if untiled:
        view = b.op("Unsqueeze", data, b.const([1], np.int64))
    else:
        view = b.op("Reshape", data, b.op("Concat", b.const([-1], np.int64), passes_1d, rest, axis=0))
    product = b.op("Mul", view, mask4)
    b.op_to(node.output[0], "Reshape", product, b.op("Concat", b.const([-1], np.int64), rest, axis=0))


def _tile_frontier(
    graph: onnx.GraphProto, b: GraphBuilder, frontier: list[str], ranks: dict[str, int],
    passes_1d: str,
) -> dict[str, str]:
    """Add nodes tiling each frontier tensor ``[N, ...] -> [N*T, ...]`` (row ``n*T + t``)."""
    rewired = {}
    for name in frontier:
        if name not in ranks:
            raise ValueError(f"rank of frontier tensor {name!r} is unknown")
        rank = ranks[name]
        tile_b = GraphBuilder(graph, f"{b.prefix}/tile{len(rewired)}")
        tile_b._count = 0
        unsqueezed = tile_b.op("Unsqueeze", name, b.const([1], np.int64))
        repeats = tile_b.op("Concat", b.const([1], np.int64), passes_1d,
                            b.const([1] * (rank - 1), np.int64), axis=0)
        tiled = tile_b.op("Tile", unsqueezed, repeats)
        rest = tile_b.op("Slice", tile_b.op("Shape", name), b.const([1], np.int64),
                         b.const([rank], np.int64))
        shape = tile_b.op("Concat", b.const([-1], np.int64), rest, axis=0)
        rewired[name] = tile_b.op("Reshape", tiled, shape, hint="tiled")
        b.nodes.extend(tile_b.nodes)
    return rewired


def _inferred_ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    ranks = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            ranks[info.name] = len(tensor_type.shape.dim)
    return ranks

"""Graph passes on hand-built ONNX graphs: subgraph reads, mask pruning, captured constants, Erfc,
unsupported ops and the work estimate. Expected values are computed here with numpy/scipy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.checks import cost
from export.errors import UnsupportedModelError
from export.from_keras import unsupported
from export.rewrites import captures, erfc, prune, reduce, stochastic
from export.rewrites.builder import topological_sort
from export.rewrites.masks import mask_values_np
from scorer.contract import DropoutSite


def session(model: onnx.ModelProto):
    from exports import ort_session

    return ort_session(model)


def tensor(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def model_of(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def masked_with_if(sites: int = 3) -> onnx.ModelProto:
    """``out = images * mcd_mul_0 + If(true, images * mcd_mul_1, images)``; site 2 is unread."""
    then_branch = helper.make_graph([helper.make_node("Mul", ["images", "mcd_mul_1"], ["t"])],
                                    "then", [], [tensor("t", None)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["images"], ["e"])],
                                    "else", [], [tensor("e", None)])
    nodes = [
        helper.make_node("Mul", ["images", "mcd_mul_0"], ["a"]),
        helper.make_node("If", ["cond"], ["b"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["a", "b"], ["out"]),
    ]
    inputs = [tensor("images", ["N", 4])] + [tensor(f"mcd_mul_{k}", [1, 4]) for k in range(sites)]
    cond = numpy_helper.from_array(np.array(True), "cond")
    return model_of(nodes, inputs, [tensor("out", ["N", 4])], [cond])


def test_used_sites_sees_reads_inside_subgraphs():
    assert prune.used_sites(masked_with_if(), 3) == [0, 1]


def test_keep_sites_renames_inside_subgraphs_and_fixes_the_others_to_one():
    rewrite = prune.keep_sites(masked_with_if(), 3, [1])
    graph = rewrite.model.graph
    assert [i.name for i in graph.input] == ["images", "mcd_mul_0"]
    assert rewrite.changes  # it changed something and says what
    images = np.arange(8, dtype=np.float32).reshape(2, 4)
    mask = np.array([[0.0, 2.0, 0.0, 2.0]], np.float32)
    (out,) = session(rewrite.model).run(None, {"images": images, "mcd_mul_0": mask})
    np.testing.assert_array_equal(out, images * 1.0 + images * mask)  # site 0 now multiplies by 1


def test_stochastic_rewrite_generates_a_mask_read_inside_an_if_branch():
    masked = prune.keep_sites(masked_with_if(), 3, [0, 1]).model
    sites = [DropoutSite("a", "dropout", 0.5, (4,)), DropoutSite("b", "dropout", 0.25, (4,))]
    final = stochastic.make_stochastic(masked, sites, "cached").model
    final = reduce.add_outputs(final, "linear", 4).model
    onnx.checker.check_model(final)
    images = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    feeds = {"images": images, "seed": np.array(6), "pass_start": np.array(2),
             "pass_count": np.array(5)}
    (passes,) = session(final).run(["passes"], feeds)
    m0, _ = mask_values_np(sites[0], 0, 6, np.arange(2, 7))
    m1, _ = mask_values_np(sites[1], 1, 6, np.arange(2, 7))
    want = images[:, None, :] * m0[None] + images[:, None, :] * m1[None]
    np.testing.assert_allclose(passes, want, rtol=1e-6)


def test_topological_sort_orders_producers_of_subgraph_reads_first():
    model = masked_with_if(2)
    graph = model.graph
    producer = helper.make_node("Neg", ["images"], ["negated"])
    then_branch = helper.make_graph([helper.make_node("Identity", ["negated"], ["t"])], "then", [],
                                    [tensor("t", None)])
    reader = helper.make_node("If", ["cond"], ["b2"], then_branch=then_branch,
                              else_branch=then_branch)
    graph.node.extend([reader, producer])  # reader first: wrong order
    topological_sort(graph)
    names = [n.output[0] for n in graph.node]
    assert names.index("negated") < names.index("b2")


def erfc_model(inside_if: bool) -> onnx.ModelProto:
    node = helper.make_node("Erfc", ["x"], ["y"], name="gelu/Erfc")
    if not inside_if:
        return model_of([node], [tensor("x", ["N"])], [tensor("y", ["N"])])
    branch = helper.make_graph([node], "branch", [], [tensor("y", None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)]
    return model_of(nodes, [tensor("x", ["N"])], [tensor("out", ["N"])], [cond])


@pytest.mark.parametrize("inside_if", [False, True])
def test_erfc_becomes_one_minus_erf(inside_if):
    from scipy.special import erfc as scipy_erfc

    rewrite = erfc.rewrite(erfc_model(inside_if))
    assert len(rewrite.changes) == (2 if inside_if else 1)  # both branches hold the node
    assert not unsupported.unknown_nodes(rewrite.model)
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    (y,) = session(rewrite.model).run(None, {"x": x})
    np.testing.assert_allclose(y, scipy_erfc(x.astype(np.float64)), atol=2e-7, rtol=0)
    assert y.max() == pytest.approx(2.0, abs=1e-6) and y.min() >= 0


def test_bind_turns_captured_inputs_into_constants():
    nodes = [helper.make_node("Sub", ["x", "norm/Sub/y:0"], ["y"])]
    model = model_of(nodes, [tensor("x", ["N", 3]), tensor("norm/Sub/y:0", [1, 3])],
                     [tensor("y", ["N", 3])])
    mean = np.array([[1.0, 2.0, 3.0]], np.float32)
    rewrite = captures.bind(model, {"norm/Sub/y:0": mean})
    assert [i.name for i in rewrite.model.graph.input] == ["x"] and len(rewrite.changes) == 1
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(session(rewrite.model).run(None, {"x": x})[0], x - mean)
    with pytest.raises(ValueError, match="shape"):
        captures.bind(model, {"norm/Sub/y:0": np.zeros((3,), np.float32)})


def test_unsupported_ops_are_listed_by_layer():
    nodes = [helper.make_node("Erfinv", ["x"], ["a"], name="model/quantile_1/Erfinv"),
             helper.make_node("StatefulPartitionedCall", ["a"], ["b"],
                              name="model/conv_block_1/stage_1/StatefulPartitionedCall"),
             helper.make_node("Lgamma", ["b"], ["c"], name="orphan/Lgamma")]
    model = model_of(nodes, [tensor("x", ["N"])], [tensor("c", ["N"])])
    classes = {"model": "Functional", "quantile": "Quantile", "conv_block_1": "Conv2D"}
    with pytest.raises(UnsupportedModelError) as info:
        unsupported.check(model, classes)
    message = str(info.value)
    assert "3 layers" in message
    assert "quantile (Quantile): Erfinv" in message
    assert "conv_block_1 (Conv2D): StatefulPartitionedCall" in message
    assert "node orphan/Lgamma (no Keras layer): Lgamma" in message
    unsupported.check(erfc.rewrite(erfc_model(False)).model, classes)  # standard ops pass


def test_work_estimate_counts_multiply_adds():
    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    dense = numpy_helper.from_array(np.zeros((512, 10), np.float32), "d")
    shape = numpy_helper.from_array(np.array([1, 512], np.int64), "s")
    nodes = [helper.make_node("Conv", ["images", "w"], ["conv"]),
             helper.make_node("Mul", ["conv", "mcd_mul_0"], ["masked"]),
             helper.make_node("Reshape", ["masked", "s"], ["flat"]),
             helper.make_node("MatMul", ["flat", "d"], ["out"])]
    model = model_of(nodes, [tensor("images", ["N", 3, 10, 10]), tensor("mcd_mul_0", [1, 8, 8, 8])],
                     [tensor("out", ["N", 10])], [weight, dense, shape])
    work = cost.graph_cost(model)
    conv, mul, reshape, matmul = 8 * 8 * 8 * 27, 512, 512, 10 * 512
    assert work.costs == [conv, mul, reshape, matmul] and work.unknown == 0
    assert work.share_after({"mcd_mul_0"}) == pytest.approx((mul + reshape + matmul) / work.total)


def pad_then_max_pool(pads: list[int], kernel: int, readers: int = 1) -> onnx.ModelProto:
    """``MaxPool(Pad(x, pads), kernel, stride 1)`` (NCHW), the Pad output read ``readers`` times."""
    pads_init = numpy_helper.from_array(np.array(pads, np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["padded"], name="zero_padding/Pad"),
             helper.make_node("MaxPool", ["padded"], ["pooled"], kernel_shape=[kernel, kernel])]
    outputs = [tensor("pooled", None)]
    if readers == 2:
        nodes.append(helper.make_node("Neg", ["padded"], ["negated"]))
        outputs.append(tensor("negated", None))
    return model_of(nodes, [tensor("x", ["N", 2, 5, 6])], outputs, [pads_init])


def numpy_max_pool(x: np.ndarray, pads: list[int], kernel: int) -> np.ndarray:
    widths = [(pads[i], pads[i + 4]) for i in range(4)]
    padded = np.pad(x, widths)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    return windows.max(axis=(-2, -1))


@pytest.mark.parametrize("pads, kernel", [([0, 0, 1, 1, 0, 0, 1, 1], 3), ([0, 0, 2, 0, 0, 0, 1, 3], 2)])
def test_zero_pad_before_max_pool_survives_onnx_runtime(pads, kernel):
    """ONNX Runtime folds Pad into MaxPool's -inf padding; the rewrite keeps the zeros."""
    from export.rewrites import pad_pool

    x = -np.random.default_rng(0).random((2, 2, 5, 6)).astype(np.float32)  # all negative
    want = numpy_max_pool(x, pads, kernel)
    original = pad_then_max_pool(pads, kernel)
    if kernel == 3:  # pads smaller than the kernel: the fused graph loads but is wrong
        assert not np.allclose(session(original).run(["pooled"], {"x": x})[0], want)
    rewrite = pad_pool.rewrite(original)
    assert rewrite.changes and "Pad" not in {n.op_type for n in rewrite.model.graph.node}
    assert "pads" not in {i.name for i in rewrite.model.graph.initializer}
    np.testing.assert_array_equal(session(rewrite.model).run(["pooled"], {"x": x})[0], want)


def test_pad_read_elsewhere_is_left_alone():
    from export.rewrites import pad_pool

    assert pad_pool.rewrite(pad_then_max_pool([0, 0, 1, 1, 0, 0, 1, 1], 3, readers=2)).changes == []

"""Small ONNX classifiers built with ``onnx.helper``, for the ONNX front end's edge cases.

:func:`classifier` builds ``input -> [Transpose to NHWC] -> Flatten -> Gemm -> Relu -> Dropout ->
Gemm -> [head]`` with the dropout's ratio and ``training_mode`` given as constants, graph inputs or
left out, so a test changes one thing at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 12


def classifier(shape=(None, 3, 4, 4), classes: int = 3, head: str | None = None,
               ratio: float | str | None = 0.5, training: bool | str | None = True,
               opset: int = 17, batch=None, dropouts: int = 1, mask_read: bool = False,
               elem_type: int = TensorProto.FLOAT, seed: int = 0) -> onnx.ModelProto:
    """See the module docstring. ``ratio``/``training``: a value (a constant), ``"input"`` (a graph
    input) or None (left out); ``head``: ``Softmax``, ``Sigmoid``, ``LogSoftmax`` or None."""
    rng = np.random.default_rng(seed)
    dims = [batch if batch is not None else "batch", *shape[1:]]
    pooled = any(d is None for d in shape[1:])  # NCHW of any size: pool before the classifier
    size = shape[1] if pooled else int(np.prod(shape[1:]))
    inputs = [helper.make_tensor_value_info("input", elem_type, dims)]
    weights = [
        numpy_helper.from_array(rng.normal(size=(size, HIDDEN)).astype(np.float32) * 0.5, "w1"),
        numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.normal(size=(HIDDEN, classes)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=classes).astype(np.float32) * 0.1, "b2"),
    ]
    flat = ("Flatten" if batch is None else "Reshape")
    nodes = []
    if pooled:
        nodes.append(helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="pool"))
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    elif flat == "Flatten":
        nodes.append(helper.make_node("Flatten", ["input"], ["flat"], name="flatten"))
    else:
        weights.append(numpy_helper.from_array(np.array([batch, size], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["input", "flat_shape"], ["flat"], name="flatten"))
    nodes += [helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"], name="fc1"),
              helper.make_node("Relu", ["h"], ["r"], name="relu")]
    current = "r"
    for k in range(dropouts):
        if opset < 12:  # Dropout-10: inference only, the ratio an attribute
            nodes.append(helper.make_node("Dropout", [current], [f"d{k}"], name=f"drop{k}",
                                          ratio=float(ratio or 0.5)))
            current = f"d{k}"
            continue
        args = [current, "", ""]
        if ratio == "input":
            inputs.append(helper.make_tensor_value_info("ratio", TensorProto.FLOAT, []))
            args[1] = "ratio"
        elif ratio is not None:
            weights.append(numpy_helper.from_array(np.array(ratio, np.float32), f"ratio_{k}"))
            args[1] = f"ratio_{k}"
        if training == "input":
            inputs.append(helper.make_tensor_value_info("training", TensorProto.BOOL, []))
            args[2] = "training"
        elif training is not None:
            nodes.append(helper.make_node("Constant", [], [f"mode_{k}"], name=f"mode_{k}",
                                          value=numpy_helper.from_array(np.array(training))))
            args[2] = f"mode_{k}"
        while args and not args[-1]:
            args.pop()
        outputs = [f"d{k}", f"mask{k}"] if mask_read else [f"d{k}"]
        nodes.append(helper.make_node("Dropout", args, outputs, name=f"drop{k}"))
        current = f"d{k}"
    if mask_read:
        nodes.append(helper.make_node("Cast", ["mask0"], ["mask_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [current, "mask_f"], ["dm"]))
        current = "dm"
    logits = "logits" if head is None else "z"
    nodes.append(helper.make_node("Gemm", [current, "w2", "b2"], [logits], name="fc2"))
    if head is not None:
        attrs = {"axis": -1} if head in ("Softmax", "LogSoftmax") else {}
        nodes.append(helper.make_node(head, ["z"], ["logits"], name="head", **attrs))
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], classes])
    graph = helper.make_graph(nodes, "classifier", inputs, [out], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="onnx_graphs")
    model.ir_version = 8 if opset >= 13 else 6
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path

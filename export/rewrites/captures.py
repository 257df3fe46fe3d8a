"""Graph rewrite: bind the values of captured tensors, which tf2onnx leaves as graph inputs.

A traced function captures some tensors by value instead of as variables, for instance the mean and
variance of a ``keras.layers.Normalization`` layer (every EfficientNet). tf2onnx turns them into
graph inputs that nothing would feed, and ONNX Runtime refuses to run the graph. Here each such input
becomes an initializer holding the captured value.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from export.rewrites.graph import Rewrite, copy_model


def bind(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> Rewrite:
    """Turn the graph inputs named in ``values`` into initializers with those values.

    Raises:
        ValueError: a value's shape or dtype does not fit the graph input it binds.
    """
    result = copy_model(model)
    graph = result.graph
    changes = []
    kept = []
    for info in graph.input:
        if info.name not in values:
            kept.append(info)
            continue
        value = np.asarray(values[info.name])
        _check_fits(info, value)
        graph.initializer.append(numpy_helper.from_array(value, info.name))
        changes.append(f"bound captured tensor {info.name} {list(value.shape)} as a constant")
    del graph.input[:]
    graph.input.extend(kept)
    return Rewrite(result, changes)


def _check_fits(info: onnx.ValueInfoProto, value: np.ndarray) -> None:
    tensor_type = info.type.tensor_type
    expected = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    if value.dtype != expected:
        raise ValueError(f"captured tensor {info.name!r} is {value.dtype}, the graph input is "
                         f"{np.dtype(expected)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if tensor_type.HasField("shape") and (
        len(dims) != value.ndim or any(d not in (None, v) for d, v in zip(dims, value.shape, strict=True))
    ):
        raise ValueError(f"captured tensor {info.name!r} has shape {list(value.shape)}, the graph "
                         f"input has {dims}")


__all__ = ["bind"]
